"""DoRA: LoRA that learns a weight's magnitude and direction separately (peft use_dora=True); mergeable."""
from __future__ import annotations

from . import _peft_common as common
from .base import Method, register
from .lora import LORA_TRAINING, LoraParams, make_check, save, wrap


def apply(model, params, task: str):
    """LoRA with weight decomposition: a magnitude vector per target plus the low-rank direction."""
    return wrap("dora", model, params, task, use_dora=True)


METHOD = register(Method(
    name="dora",
    params=LoraParams,
    summary="LoRA with magnitude/direction decomposition (DoRA); closer to full fine-tuning; mergeable.",
    mergeable=True,
    apply=apply,
    save=save,
    merge=common.merge_peft,
    default_training=dict(LORA_TRAINING),
    check=make_check("dora"),
))
