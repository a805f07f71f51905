"""KTO (Kahneman-Tversky optimisation) on TRL's KTOTrainer: learn from unpaired thumbs up / thumbs down on single
answers, relative to a frozen reference. Preference pairs work too: each pair gives one desirable and one
undesirable answer."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives._common import PRECOMPUTE_META, beta_meta
from studio.objectives.spec import ObjectiveError, ObjectiveSpec, register


@dataclass(frozen=True)
class KTOParams:
    beta: float = field(default=0.1, metadata=beta_meta(
        "How far the policy may move from the reference: a higher beta keeps it closer.", "KTO's paper uses 0.1."))
    desirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the desirable (label true) answers' loss. KTO's paper keeps desirable_weight x desirable "
                "rows / (undesirable_weight x undesirable rows) between 1 and 4/3: raise the weight of the rarer kind.",
        "min": 0.01, "max": 100.0})
    undesirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the undesirable (label false) answers' loss; see desirable_weight.",
        "min": 0.01, "max": 100.0})
    loss_type: str = field(default="kto", metadata={
        "help": "kto (the paper's loss) or apo_zero_unpaired (anchored: push desirable answers up and undesirable "
                "ones down from the model's own likelihood).", "choices": ("kto", "apo_zero_unpaired")})
    precompute_reference: bool = field(default=False, metadata=PRECOMPUTE_META)


def check_stats(dataset_id: int, stats: dict, rows: int) -> None:
    """KTO's loss compares desirable with undesirable answers: a feedback set needs both kinds."""
    counts = stats.get("feedback")
    if counts is None:  # preference pairs: every pair is one of each
        return
    missing = [kind for kind in ("desirable", "undesirable") if not counts.get(kind)]
    if missing:
        label = "true" if missing[0] == "desirable" else "false"
        raise ObjectiveError(f"dataset {dataset_id} has no {missing[0]} answers (label {label}) in its {rows} rows: "
                             f"KTO learns from both kinds. Add rows with label {label} and register the file again.")


SPEC = register(ObjectiveSpec(
    name="kto",
    params=KTOParams,
    summary="KTO: learn from thumbs up / down on single answers (or pairs, unpaired), relative to a reference.",
    task="causal_lm",
    formats=("feedback", "preference"),
    title="KTO (objective kto)",
    data_help="feedback data (prompt, completion, label true/false) or preference pairs",
    suggest="Train it with objective kto",
    check_stats=check_stats,
    needs_reference_model=True,
    sequences_per_row=2,  # the answer and its KL sample (the answer of another row's prompt)
    learning_rate_scale=0.1,  # as DPO (not measured yet)
    curves=("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"),
))
