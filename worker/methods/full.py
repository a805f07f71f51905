"""Full fine-tuning: every weight trains. Best accuracy, most memory; the result is a standalone model."""
from __future__ import annotations

from dataclasses import dataclass

from . import _plain
from .base import Method, check_task, register


@dataclass(frozen=True)
class FullParams:
    """Full fine-tuning has no method parameters; the training options (lr, schedule) do the work."""


def apply(model, params, task: str):
    """Unfreeze everything (a base loaded for inference may carry frozen weights)."""
    check_task("full", task)
    for p in model.parameters():
        p.requires_grad_(True)
    _plain.remember(model, "full", params, task)
    return model


METHOD = register(Method(
    name="full",
    params=FullParams,
    summary="Train every weight; best accuracy, needs the most GPU memory; exports a standalone model.",
    mergeable=True,
    apply=apply,
    save=_plain.save_model,
    load=_plain.load_model,
    merge=_plain.merge_identity,
    # 003's lr, weight decay and clipping; a linear decay (measured better than cosine on short runs,
    # bench/quality.py); the advisor adds a warm-up and cosine to runs long enough to need them
    default_training={"learning_rate": 2e-5, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "lr_scheduler_type": "linear"},
))
