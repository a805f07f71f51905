"""The studio's own bottleneck adapter (Houlsby-style): after the attention and/or the MLP output of every
block, ``up(dropout(act(down(h))))`` is added to the hidden state. Not mergeable: the nonlinearity cannot
fold into the base weights. The modules and their hooks are ``worker/methods/adapter.py``."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods.spec import Costs, MethodSpec, register


@dataclass(frozen=True)
class AdapterParams:
    """Size and placement of the bottleneck adapters."""

    bottleneck_size: int = field(default=0, metadata={
        "help": "Width of the bottleneck; 0 = hidden size / reduction.", "min": 0, "max": 8192})
    reduction: int = field(default=16, metadata={
        "help": "Hidden size divided by this gives the bottleneck width (when bottleneck_size is 0).",
        "min": 1, "max": 1024})
    nonlinearity: str = field(default="relu", metadata={
        "help": "Activation between the down- and up-projection.", "choices": ["relu", "gelu", "silu", "tanh"]})
    placement: str = field(default="both", metadata={
        "help": "Where adapters go in each block: after attention (attn), after the MLP (mlp), or both.",
        "choices": ["attn", "mlp", "both"]})
    dropout: float = field(default=0.0, metadata={
        "help": "Dropout inside the adapter.", "min": 0.0, "max": 0.9})


def bottleneck(params, hidden: int) -> int:
    """The bottleneck width for a model ``hidden`` wide."""
    return params.bottleneck_size or max(1, hidden // params.reduction)


def per_block(params) -> int:
    """Adapters in each block."""
    return 2 if params.placement == "both" else 1


def added(shape, p) -> int:
    """down (h→b) and up (b→h), with biases, per adapter."""
    h, b = shape.hidden, bottleneck(p, shape.hidden)
    return shape.layers * per_block(p) * (2 * h * b + b + h)


def extra_activations(shape, p) -> int:
    """Each adapter keeps its input, the bottleneck before and after the nonlinearity."""
    return per_block(p) * (shape.hidden + 2 * bottleneck(p, shape.hidden))


SPEC = register(MethodSpec(
    name="adapter",
    params=AdapterParams,
    summary="Small bottleneck modules after attention and MLP in every block; base frozen; not mergeable.",
    mergeable=False,
    suggest_4bit_base=True,
    default_training={"learning_rate": 1e-3, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
    costs=Costs(added=added, extra_activations=extra_activations),
))
