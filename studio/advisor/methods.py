"""What each fine-tuning method trains, as the memory estimator sees it.

The worker's method registry imports torch, so the advisor keeps its own light description of
each registered method name: which base weights train, how many new parameters it adds, how the
base is stored, and how many extra activations it keeps per layer.  Defaults follow the articles
(``../shared/design/SEEDS.md``) and peft's defaults where the articles are silent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from studio.advisor.architecture import ModelShape

METHODS = ("full", "freeze", "lora", "qlora", "adapter", "prompt_tuning", "prefix_tuning",
           "p_tuning", "adalora", "dora", "ia3")
LORA_FAMILY = frozenset({"lora", "qlora", "adalora", "dora"})
PROMPT_FAMILY = frozenset({"prompt_tuning", "prefix_tuning", "p_tuning"})
# Methods whose trained result folds into the base weights (no inference overhead, 001/004).
MERGEABLE = frozenset({"full", "freeze", "lora", "qlora", "adalora", "dora", "ia3"})

TARGETS = ("attention", "attention_mlp", "all_linear")
ADAPTER_REDUCTION = 16  # the registry's default bottleneck: hidden size / 16
PROMPT_TOKENS = 50  # 003: "50 learnable tokens"
PREFIX_TOKENS = 20  # peft's examples
ADALORA_INIT_FACTOR = 1.5  # peft AdaLoraConfig: init_r 12 for target_r 8


@dataclass(frozen=True)
class MethodSpec:
    """The knobs of one method that change memory."""

    method: str
    lora_r: int = 16
    target: str = "attention_mlp"
    freeze_layers: int | None = None  # top layers trained by "freeze"; default ~1/8 of the stack
    virtual_tokens: int | None = None
    bottleneck: int | None = None  # adapter width; default hidden // ADAPTER_REDUCTION

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; known: {', '.join(TARGETS)}")


def default_freeze_layers(layers: int) -> int:
    """Top layers that freeze-tuning trains by default: an eighth of the stack (003: 5–20 % of params)."""
    return max(1, math.ceil(layers / 8))


def bottleneck(shape: ModelShape, spec: MethodSpec) -> int:
    """Adapter bottleneck width (the registry's default: hidden size / 16)."""
    return spec.bottleneck or max(1, shape.hidden // ADAPTER_REDUCTION)


def trained_layers(shape: ModelShape, spec: MethodSpec) -> int:
    """Layers whose weights train (full: all, freeze: the top N, others: none)."""
    if spec.method == "full":
        return shape.layers
    if spec.method == "freeze":
        return min(shape.layers, spec.freeze_layers or default_freeze_layers(shape.layers))
    return 0


def virtual_tokens(spec: MethodSpec) -> int:
    """Soft-prompt / prefix length the method prepends to every sequence."""
    if spec.method not in PROMPT_FAMILY:
        return 0
    if spec.virtual_tokens is not None:
        return spec.virtual_tokens
    return PROMPT_TOKENS if spec.method == "prompt_tuning" else PREFIX_TOKENS


def targeted(shape: ModelShape, target: str):
    """A layer's linears that LoRA-style methods wrap (experts included)."""
    if target == "attention":
        return [l for l in shape.linears if l.kind == "attention"]
    return list(shape.linears)


def base_trainable_params(shape: ModelShape, spec: MethodSpec) -> int:
    """Base-model parameters that receive gradients (full: all; freeze: top layers + final norm + untied head)."""
    if spec.method == "full":
        return shape.total()
    if spec.method == "freeze":
        return trained_layers(shape, spec) * shape.layer_params() + shape.final_norm + shape.head
    return 0


def added_params(shape: ModelShape, spec: MethodSpec) -> int:
    """New parameters the method adds to a frozen base."""
    m, L, h = spec.method, shape.layers, shape.hidden
    if m in ("lora", "qlora", "dora", "adalora"):
        r = spec.lora_r if m != "adalora" else math.ceil(spec.lora_r * ADALORA_INIT_FACTOR)
        mods = targeted(shape, spec.target)
        per_layer = sum(r * (l.in_features + l.out_features) for l in mods)
        if m == "dora":  # a magnitude vector per wrapped module
            per_layer += sum(l.out_features for l in mods)
        if m == "adalora":  # the singular values E
            per_layer += r * len(mods)
        return L * per_layer
    if m == "ia3":  # scales on k and v outputs and on the MLP down-projection input (peft's defaults)
        return L * (2 * shape.kv_dim + shape.intermediate)
    if m == "adapter":  # after attention and after MLP: down (h→m), up (m→h), with biases
        b = bottleneck(shape, spec)
        return L * 2 * (2 * h * b + b + h)
    if m == "prompt_tuning":
        return virtual_tokens(spec) * h
    if m == "prefix_tuning":  # one key and one value vector per layer per virtual token
        return virtual_tokens(spec) * L * 2 * h
    if m == "p_tuning":  # peft's MLP prompt encoder (h→h→h→h) plus the token embeddings
        return virtual_tokens(spec) * h + 3 * h * h + 3 * h
    return 0


def trainable_params(shape: ModelShape, spec: MethodSpec) -> int:
    """All parameters with gradients and optimizer state."""
    return base_trainable_params(shape, spec) + added_params(shape, spec)


def extra_activation_elements(shape: ModelShape, spec: MethodSpec) -> int:
    """Per layer per token, activations the method keeps beyond the base layer's own."""
    m = spec.method
    if m in LORA_FAMILY:
        mods = targeted(shape, spec.target)
        r = spec.lora_r if m != "adalora" else math.ceil(spec.lora_r * ADALORA_INIT_FACTOR)
        # lora_dropout makes a copy of each wrapped module's input; lora_A's output is kept for B.
        extra = sum(l.in_features + r for l in mods)
        if m == "dora":  # DoRA keeps the combined output for the magnitude gradient
            extra += sum(l.out_features for l in mods)
        return extra
    if m == "ia3":
        return 2 * shape.kv_dim + shape.intermediate
    if m == "adapter":
        return 2 * (shape.hidden + 2 * bottleneck(shape, spec))
    return 0
