"""Prefix tuning: learnable key/value prefixes in every layer's attention; not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from ._prompt_common import VIRTUAL_TOKENS_META, load, wrap
from .base import Method, register


@dataclass(frozen=True)
class PrefixTuningParams:
    """peft PrefixTuningConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    prefix_projection: bool = field(default=False, metadata={
        "help": "Produce the prefixes through a small MLP (more stable training, more parameters)."})
    encoder_hidden_size: int = field(default=0, metadata={
        "help": "Hidden size of that MLP; 0 = the model's hidden size.", "min": 0, "max": 16384})


def apply(model, params, task: str):
    """Add per-layer prefix keys/values fed to attention as past key values."""
    from peft import PrefixTuningConfig

    hidden = params.encoder_hidden_size or model.config.hidden_size
    return wrap("prefix_tuning", model, PrefixTuningConfig, task,
                num_virtual_tokens=params.num_virtual_tokens,
                prefix_projection=params.prefix_projection,
                encoder_hidden_size=hidden)


METHOD = register(Method(
    name="prefix_tuning",
    params=PrefixTuningParams,
    summary="Learn key/value prefixes in every attention layer; tiny; not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    apply=apply,
    load=load,
    default_training={"learning_rate": 1e-2, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
))
