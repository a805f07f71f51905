"""A reward model on TRL's RewardTrainer: a one-output head on the base learns to score the chosen answer above
the rejected one (Bradley-Terry), for ranking answers and, later, for GRPO's rewards."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives._common import PREFERENCE_DATA
from studio.objectives.spec import ObjectiveSpec, register


@dataclass(frozen=True)
class RewardParams:
    center_rewards_coefficient: float = field(default=0.0, metadata={
        "help": "Pulls the rewards toward a mean of zero, so scores from different runs compare (Eisenstein et "
                "al. use 0.01); 0: off.", "min": 0.0, "max": 1.0})


SPEC = register(ObjectiveSpec(
    name="reward",
    params=RewardParams,
    summary="Reward model: a scalar head learns to score the chosen answer above the rejected one.",
    task="seq_cls",
    formats=("preference",),
    title="a reward model (objective reward)",
    data_help=PREFERENCE_DATA,
    suggest="Train a reward model on it with objective reward",
    pairs=True,
    sequences_per_row=2,
    learning_rate_scale=0.5,  # a new head and a ranking loss: between SFT's step and DPO's; not measured yet
    curves=("accuracy", "margin", "mean_reward"),
))
