"""Full fine-tuning: every weight trains. Best accuracy, most memory; the result is a standalone model."""
from __future__ import annotations

from dataclasses import dataclass

from studio.methods.spec import Costs, MethodSpec, register


@dataclass(frozen=True)
class FullParams:
    """Full fine-tuning has no method parameters; the training options (lr, schedule) do the work."""


SPEC = register(MethodSpec(
    name="full",
    params=FullParams,
    summary="Train every weight; best accuracy, needs the most GPU memory; exports a standalone model.",
    mergeable=True,
    trains_base=True,
    # 003's lr, weight decay and clipping; a linear decay (measured better than cosine on short runs,
    # bench/quality.py); the advisor adds a warm-up and cosine to runs long enough to need them
    default_training={"learning_rate": 2e-5, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "lr_scheduler_type": "linear"},
    costs=Costs(base_trainable=lambda shape, p: shape.total(), trained_layers=lambda shape, p: shape.layers),
))
