"""Direct preference optimisation (DPO) and its loss variants, on TRL's DPOTrainer: raise the likelihood of the
chosen answer over the rejected one, relative to a frozen reference (by default the model training starts from:
the base, or the version it continues)."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives._common import PAIR_CURVES, PRECOMPUTE_META, PREFERENCE_DATA, beta_meta
from studio.objectives.spec import ObjectiveSpec, register

# TRL 1.16's DPOConfig.loss_type values, one per training run (TRL's weighted mixes are not exposed).
LOSSES = ("sigmoid", "ipo", "robust", "hinge", "apo_zero", "apo_down", "exo_pair", "nca_pair", "bco_pair",
          "sppo_hard", "aot", "aot_unpaired", "discopop", "sigmoid_norm")


@dataclass(frozen=True)
class DPOParams:
    beta: float = field(default=0.1, metadata=beta_meta(
        "How far the policy may move from the reference: a higher beta keeps it closer. For ipo it is the "
        "regulariser tau.", "0.1 is the DPO paper's usual value."))
    loss_type: str = field(default="sigmoid", metadata={
        "help": "The preference loss: sigmoid (DPO), ipo (IPO), robust (cDPO, for noisy labels: set "
                "label_smoothing), hinge (SLiC), apo_zero / apo_down (anchored: chosen answers better / worse than "
                "the model's own), exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, discopop, "
                "sigmoid_norm (length-normalised).",
        "choices": LOSSES})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "For robust and exo_pair: the probability that a pair's preference is flipped (robust: below 0.5, "
                "0.1 is typical; exo_pair: 1e-3).", "min": 0.0, "max": 0.49})
    precompute_reference: bool = field(default=False, metadata=PRECOMPUTE_META)


SPEC = register(ObjectiveSpec(
    name="dpo",
    params=DPOParams,
    summary="DPO: prefer the chosen answer over the rejected one, relative to a frozen reference (the start).",
    task="causal_lm",
    formats=("preference",),
    title="DPO (objective dpo)",
    data_help=PREFERENCE_DATA,
    suggest="Train it with objective dpo (or orpo, simpo, kto, reward)",
    needs_reference_model=True,
    pairs=True,
    sequences_per_row=2,
    # Not measured yet (bench/quality.py has no preference task): the step a preference loss wants on top of a
    # trained policy is about a tenth of SFT's (DPO's papers: 5e-7 full, 5e-6 LoRA, against SFT's 2e-5 / 2e-4).
    learning_rate_scale=0.1,
    curves=PAIR_CURVES,
))
