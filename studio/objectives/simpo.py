"""SimPO (simple preference optimisation) on TRL's experimental CPOTrainer with loss_type simpo: the
length-normalised log-likelihood is the reward, with a target margin gamma; no reference model. cpo_alpha > 0 adds
an SFT term on the chosen answer (CPO-SimPO)."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives._common import PAIR_CURVES, PREFERENCE_DATA, beta_meta
from studio.objectives.spec import ObjectiveSpec, register


@dataclass(frozen=True)
class SimPOParams:
    beta: float = field(default=2.0, metadata=beta_meta(
        "Scale of the length-normalised reward.", "The SimPO paper uses 2.0 to 2.5."))
    gamma: float = field(default=1.0, metadata={
        "help": "Target reward margin between the chosen and the rejected answer (the paper keeps gamma / beta "
                "near 0.5).", "min": 0.0, "max": 50.0})
    cpo_alpha: float = field(default=0.0, metadata={
        "help": "Weight of an SFT (negative log-likelihood) term on the chosen answer: 0 is plain SimPO, 1 is "
                "CPO-SimPO.", "min": 0.0, "max": 10.0})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "The probability that a pair's preference is flipped (noisy labels); 0: trust every pair.",
        "min": 0.0, "max": 0.49})


SPEC = register(ObjectiveSpec(
    name="simpo",
    params=SimPOParams,
    summary="SimPO: length-normalised likelihood as the reward, with a target margin; no reference model.",
    task="causal_lm",
    formats=("preference",),
    title="SimPO (objective simpo)",
    data_help=PREFERENCE_DATA,
    suggest="Train it with objective simpo",
    pairs=True,
    sequences_per_row=2,
    takes_prepended_tokens=False,  # TRL's experimental CPOTrainer compares logits and labels of equal length
    learning_rate_scale=0.05,  # the paper: 5e-7 to 1e-6 full, against SFT's 2e-5; not measured yet
    curves=PAIR_CURVES,
))
