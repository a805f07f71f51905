"""DoRA, the torch side: LoRA with use_dora=True, a magnitude vector per target beside the low-rank direction
(spec: studio/methods/dora.py)."""
from __future__ import annotations

from . import _peft_common as common
from .base import implement
from .lora import save, wrap


def apply(model, params, task: str):
    """LoRA with weight decomposition: a magnitude vector per target plus the low-rank direction."""
    return wrap("dora", model, params, task, use_dora=True)


METHOD = implement("dora", apply=apply, save=save, merge=common.merge_peft)
