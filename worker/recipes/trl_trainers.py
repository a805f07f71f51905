"""The one adapter between the studio's objectives and TRL: for each preference objective and GRPO, which TRL
trainer and config run it and how its spec's params become that config's fields. TRL 1.16 keeps DPO, KTO, GRPO,
RLOO and reward models in its stable API and ORPO/CPO (SimPO is CPO's ``simpo`` loss) in ``trl.experimental``; only
this file knows where each lives. Everything else (the model, the method, the data, callbacks, checkpoints) is the studio's.

trl is imported inside functions: importing the recipes table stays light."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class TrlRun:
    """How one objective runs on TRL.

    ``classes()`` imports and returns (trainer class, config class). ``settings(params)`` are the config's fields
    from the objective's parsed params. ``unpaired``: the trainer reads rated single answers (KTO), so preference
    pairs are split into a desirable and an undesirable one. ``drops_over_length``: the trainer drops records
    longer than max_length instead of truncating them (TRL's RewardTrainer filters them out)."""

    classes: Callable[[], tuple[type, type]]
    settings: Callable[[Any], dict]
    unpaired: bool = False
    drops_over_length: bool = False


def _dpo():
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def _kto():
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig


def _orpo():
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOTrainer, ORPOConfig


def _cpo():
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    return CPOTrainer, CPOConfig


def _reward():
    from trl import RewardConfig, RewardTrainer

    return RewardTrainer, RewardConfig


def _grpo():
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def _rloo():
    from trl import RLOOConfig, RLOOTrainer

    return RLOOTrainer, RLOOConfig


def _sampling(p) -> dict:
    """GRPO's and RLOO's shared fields: the groups sampled and the rewards' weights (worker/rewards.py)."""
    from studio.objectives.rewards import parse

    return {"num_generations": p.num_generations, "max_completion_length": p.max_completion_length, "beta": p.beta,
            "temperature": p.temperature,
            "reward_weights": [r.weight for r in parse(p.reward, p.max_completion_length)]}


RUNS: dict[str, TrlRun] = {
    "dpo": TrlRun(_dpo, lambda p: {"beta": p.beta, "loss_type": [p.loss_type], "label_smoothing": p.label_smoothing,
                                   "precompute_ref_log_probs": p.precompute_reference}),
    "kto": TrlRun(_kto, lambda p: {"beta": p.beta, "loss_type": p.loss_type, "desirable_weight": p.desirable_weight,
                                   "undesirable_weight": p.undesirable_weight,
                                   "precompute_ref_log_probs": p.precompute_reference}, unpaired=True),
    "orpo": TrlRun(_orpo, lambda p: {"beta": p.beta}),
    "simpo": TrlRun(_cpo, lambda p: {"loss_type": "simpo", "beta": p.beta, "simpo_gamma": p.gamma,
                                     "cpo_alpha": p.cpo_alpha, "label_smoothing": p.label_smoothing}),
    "reward": TrlRun(_reward, lambda p: {"center_rewards_coefficient": p.center_rewards_coefficient or None},
                     drops_over_length=True),
    "grpo": TrlRun(_grpo, lambda p: {**_sampling(p), "loss_type": p.loss_type}),
    "rloo": TrlRun(_rloo, _sampling),
}


def run_for(objective: str) -> TrlRun:
    """The TRL run of ``objective``; a UserFacingError when this worker has none."""
    from worker.errors import UserFacingError

    try:
        return RUNS[objective]
    except KeyError:
        raise UserFacingError(f"{objective}: this worker cannot train it on TRL (worker/recipes/trl_trainers.py)") from None


def uses_reference_adapter(model) -> bool:
    """Whether TRL keeps the reference as a frozen copy of the model's peft adapter ("ref"): a peft model passed
    to DPO/KTO without a reference model. Any other model gets its reference precomputed before training."""
    return hasattr(model, "peft_config")


def drop_reference_adapter(model) -> None:
    """Remove TRL's "ref" adapter so that the version (and its export) hold only the trained one."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")


def trainable_in_float32(model) -> None:
    """On a quantized base TRL casts the trained adapter weights to bfloat16 (the QLoRA recipe, with bf16
    autocast on a GPU). Without autocast (the studio trains in fp32 on CPU) they would meet fp32 activations:
    keep them in fp32 there."""
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
