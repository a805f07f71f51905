"""ORPO (odds-ratio preference optimisation) on TRL's experimental ORPOTrainer: SFT on the chosen answer plus an
odds-ratio penalty on the rejected one, in one stage and without a reference model, so it can start from a base
that has had no SFT."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives._common import PAIR_CURVES, PREFERENCE_DATA, beta_meta
from studio.objectives.spec import ObjectiveSpec, register


@dataclass(frozen=True)
class ORPOParams:
    beta: float = field(default=0.1, metadata=beta_meta(
        "lambda: the weight of the odds-ratio term beside the SFT loss on the chosen answer.",
        "The ORPO paper uses 0.1."))


SPEC = register(ObjectiveSpec(
    name="orpo",
    params=ORPOParams,
    summary="ORPO: SFT on the chosen answer plus an odds-ratio penalty on the rejected one; no reference model.",
    task="causal_lm",
    formats=("preference",),
    title="ORPO (objective orpo)",
    data_help=PREFERENCE_DATA,
    suggest="Train it with objective orpo",
    pairs=True,
    sequences_per_row=2,
    takes_prepended_tokens=False,  # TRL's experimental ORPOTrainer compares logits and labels of equal length
    learning_rate_scale=0.4,  # it replaces SFT (the paper: 8e-6 full against SFT's 2e-5); not measured yet
    curves=(*PAIR_CURVES, "log_odds_ratio", "nll_loss"),
))
