"""DoRA: LoRA that learns a weight's magnitude and direction separately (peft use_dora=True); mergeable."""
from __future__ import annotations

from studio.methods import lora
from studio.methods._common import LORA_TRAINING
from studio.methods.spec import Costs, MethodSpec, register


def added(shape, p) -> int:
    """LoRA's, plus a magnitude vector per wrapped module."""
    return lora.added(shape, p) + sum(l.out_features for l, _ in lora.wrapped(shape, p))


def extra_activations(shape, p) -> int:
    """LoRA's, plus the combined output DoRA keeps for the magnitude's gradient."""
    return (sum(l.in_features + r + l.out_features for l, r in lora.wrapped(shape, p))) // shape.layers


SPEC = register(MethodSpec(
    name="dora",
    params=lora.LoraParams,
    summary="LoRA with magnitude/direction decomposition (DoRA); closer to full fine-tuning; mergeable.",
    mergeable=True,
    low_rank=True,
    suggest_4bit_base=True,
    not_combinable_why="its learned magnitude vectors are not combined by peft's add_weighted_adapter",
    default_training=dict(LORA_TRAINING),
    check=lora.make_check("dora"),
    advised_params=lora.advised_params,
    costs=Costs(added=added, extra_activations=extra_activations),
))
