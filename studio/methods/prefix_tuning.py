"""Prefix tuning: learnable key/value prefixes in every layer's attention; not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods._common import VIRTUAL_TOKENS_META
from studio.methods.spec import AdvisorChoices, Costs, MethodSpec, register

ADVISED_TOKENS = 20  # peft's examples


@dataclass(frozen=True)
class PrefixTuningParams:
    """peft PrefixTuningConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    prefix_projection: bool = field(default=False, metadata={
        "help": "Produce the prefixes through a small MLP (more stable training, more parameters)."})
    encoder_hidden_size: int = field(default=0, metadata={
        "help": "Hidden size of that MLP; 0 = the model's hidden size.", "min": 0, "max": 16384})


def advised_params(choices: AdvisorChoices) -> dict:
    return {"num_virtual_tokens": choices.virtual_tokens or ADVISED_TOKENS}


def added(shape, p) -> int:
    """peft's PrefixEncoder: one key and one value vector per layer per virtual token, sized to the KV heads
    (peft sizes prefixes by num_key_value_heads), optionally produced by a 2-layer MLP."""
    n, layers, kv = p.num_virtual_tokens, shape.layers, shape.kv_dim
    if not p.prefix_projection:
        return n * layers * 2 * kv
    e = p.encoder_hidden_size or shape.hidden
    return n * kv + (kv * e + e) + (e * layers * 2 * kv + layers * 2 * kv)


SPEC = register(MethodSpec(
    name="prefix_tuning",
    params=PrefixTuningParams,
    summary="Learn key/value prefixes in every attention layer; tiny; not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    prefix_in_cache=True,  # peft 0.21's classifier path reads a pooled output that decoders do not return
    default_training={"learning_rate": 1e-2, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
    advised_params=advised_params,
    costs=Costs(added=added, virtual_tokens=lambda shape, p: p.num_virtual_tokens),
))
