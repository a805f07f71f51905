"""Fields and wording several objective specs share."""
from __future__ import annotations

PREFERENCE_DATA = "preference data (prompt, chosen, rejected; chosen/rejected may be chat message lists)"
PAIR_CURVES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

PRECOMPUTE_META = {
    "help": "Compute the reference's log-probabilities once, before the first step (one pass over the data), "
            "instead of at every step: fewer forward passes over several epochs. With a method that is not a peft "
            "adapter (full, freeze, adapter) this is always done, so no second copy of the model is kept.",
}


def beta_meta(help_: str, default_note: str = "") -> dict:
    """A β field's metadata: its help (plus a note on the default) and a range that keeps the loss finite."""
    return {"help": help_ + (f" {default_note}" if default_note else ""), "min": 0.001, "max": 50.0}
