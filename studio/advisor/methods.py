"""What each fine-tuning method trains, as the memory estimator sees it.

The worker's method registry builds models with torch, so the advisor keeps its own light description of
each registered method: which base weights train, how many new parameters it adds, how the base is
stored, and how many extra activations it keeps per layer.  :class:`MethodSpec` carries the options that
change those numbers (:func:`studio.advisor.jobcost.spec_from_params` fills it from a registry params
dict).  Defaults follow the articles (``../shared/design/SEEDS.md``) and peft where the articles are silent.
The counts equal peft's on the meta device for Llama-style models (``tests/studio/test_train_tab.py``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from studio.advisor.architecture import Linear, ModelShape

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
# peft's IA3 defaults per model_type (peft.utils.constants, under the names architecture.py gives the
# modules); the MLP ones scale their input, the others their output. Other families: every linear.
_KV_DOWN, _QV_DOWN = ("k_proj", "v_proj", "down_proj"), ("q_proj", "v_proj", "down_proj")
IA3_AUTO = {"llama": _KV_DOWN, "mistral": _KV_DOWN, "mixtral": _KV_DOWN, "gemma": _QV_DOWN, "gemma2": _QV_DOWN,
            "gemma3_text": _QV_DOWN, "qwen2": _QV_DOWN, "qwen3": _QV_DOWN, "phi": ("q_proj", "v_proj", "fc2"),
            "gpt2": ("c_attn", "mlp.c_proj"), "gpt_neox": ("query_key_value", "dense_4h_to_h"),
            "bert": ("key", "value", "output.dense"), "roberta": ("key", "value", "output.dense")}
HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier"})
EMBED_NAMES = frozenset({"embed_tokens", "wte", "word_embeddings", "embed_in"})
FINAL_NORM_NAMES = frozenset({"norm", "ln_f", "final_layernorm", "final_layer_norm"})


@dataclass(frozen=True)
class MethodSpec:
    """The options of one method that change its parameter count or memory.

    ``target`` is a preset (:data:`TARGETS`) or a comma list of module names, as in the registry.
    ``lora_r`` is LoRA's rank (AdaLoRA's target rank; ``init_r`` its starting rank).
    """

    method: str
    lora_r: int = 16
    target: str = "attention_mlp"
    init_r: int | None = None
    rank_pattern: tuple[tuple[str, int], ...] = ()  # regex → rank, matched against "layers.{i}.{module}"
    layers: tuple[int, ...] | None = None  # layers_to_transform (None: all)
    modules_to_save: tuple[str, ...] = ()  # modules trained in full beside the adapters (copied by peft)
    bias: str = "none"  # none | all | lora_only
    freeze_layers: int | None = None  # top layers trained by "freeze"; default ~1/8 of the stack
    freeze_parts: str = "all"  # all | attention | mlp | comma list of block children
    freeze_head: bool = True  # freeze also trains the final norm and the head
    freeze_tied_head: bool = False  # ... and a head tied to the input embeddings (= the embedding matrix)
    virtual_tokens: int | None = None
    prefix_projection: bool = False
    encoder_hidden: int | None = None  # prefix/P-tuning encoder width (None: hidden size)
    encoder_type: str = "mlp"  # P-tuning: mlp | lstm
    encoder_layers: int = 2  # P-tuning LSTM layers
    bottleneck: int | None = None  # adapter width; default hidden // reduction
    reduction: int = ADAPTER_REDUCTION
    adapter_placement: str = "both"  # attn | mlp | both
    ia3_target: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.target not in TARGETS and not split_names(self.target):
            raise ValueError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)} or module names")


def split_names(text: str) -> list[str]:
    """'q_proj, v_proj' -> ['q_proj', 'v_proj']."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def default_freeze_layers(layers: int) -> int:
    """Top layers that freeze-tuning trains by default: a quarter of the stack, at least one.

    Measured on the demo model (bench/quality.py): the top quarter without the tied head beat the top 2 of
    30 blocks with it; 003's 5–20 % of parameters holds for the blocks alone on most bases.
    """
    return max(1, layers // 4)


def bottleneck(shape: ModelShape, spec: MethodSpec) -> int:
    """Adapter bottleneck width (the registry's default: hidden size / 16)."""
    return spec.bottleneck or max(1, shape.hidden // spec.reduction)


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


def _named(linears, wanted: str) -> list[Linear]:
    """peft-style suffix match; a longer path (self_attn.q_proj) names the module it ends with."""
    hits = [l for l in linears if l.name == wanted or l.name.endswith("." + wanted)]
    return hits or [l for l in linears if wanted.endswith("." + l.name)]


def targeted(shape: ModelShape, target: str) -> list[Linear]:
    """A layer's linears that LoRA-style methods wrap (experts included)."""
    if target == "attention":
        return [l for l in shape.linears if l.kind == "attention"]
    if target in TARGETS:
        return list(shape.linears)
    chosen = {id(l) for w in split_names(target) for l in _named(shape.linears, w)}
    return [l for l in shape.linears if id(l) in chosen]


def _rank(spec: MethodSpec) -> int:
    if spec.method == "adalora":
        return spec.init_r or math.ceil(spec.lora_r * ADALORA_INIT_FACTOR)
    return spec.lora_r


def _lora_layers(shape: ModelShape, spec: MethodSpec) -> list[int]:
    return [i for i in (spec.layers if spec.layers is not None else range(shape.layers)) if 0 <= i < shape.layers]


def lora_ranks(shape: ModelShape, spec: MethodSpec) -> list[tuple[Linear, int]]:
    """(module, rank) for every wrapped module in the model; rank_pattern as peft matches it."""
    out = []
    for i in _lora_layers(shape, spec):
        for l in targeted(shape, spec.target):
            r = _rank(spec)
            for pattern, pr in spec.rank_pattern:
                if re.match(rf"(.*\.)?({pattern})$", f"layers.{i}.{l.name}"):
                    r = pr
                    break
            out.append((l, r))
    return out


def ia3_modules(shape: ModelShape, spec: MethodSpec) -> list[Linear]:
    """A layer's linears IA3 scales ("auto": peft's choice for the family, else every linear)."""
    if spec.ia3_target == "auto":
        names = IA3_AUTO.get(shape.family)
        return targeted(shape, ",".join(names)) if names else list(shape.linears)
    return targeted(shape, spec.ia3_target)


def adapters_per_layer(spec: MethodSpec) -> int:
    return 2 if spec.adapter_placement == "both" else 1


def _saved_module_params(shape: ModelShape, name: str) -> int:
    """Parameters of a module peft copies for ``modules_to_save`` (0 when the name is unknown here)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in HEAD_NAMES or leaf in EMBED_NAMES:
        return shape.vocab * shape.hidden
    if leaf in FINAL_NORM_NAMES:
        return shape.final_norm
    return shape.layers * sum(l.params for l in _named(shape.linears, name))


def freeze_layer_params(shape: ModelShape, spec: MethodSpec) -> int:
    """Parameters of one trained block under ``freeze_parts`` (custom lists are sized by their words)."""
    attention = sum(l.params for l in shape.linears if l.kind == "attention")
    mlp = sum(l.params for l in shape.linears if l.kind == "mlp") + shape.extra_per_layer
    parts = spec.freeze_parts
    if parts == "all":
        return shape.layer_params()
    if parts == "attention":  # the attention sub-module only, never a norm (post_attention_layernorm)
        return attention
    if parts == "mlp":
        return mlp
    total = 0
    for name in split_names(parts):
        low = name.lower()
        if "norm" in low:
            total += shape.hidden
        elif "attn" in low or "attention" in low:
            total += attention
        else:
            total += mlp
    return total


def base_trainable_params(shape: ModelShape, spec: MethodSpec) -> int:
    """Base-model parameters that receive gradients (full: all; freeze: top layers + final norm + head).

    A tied head is the input embedding matrix: it trains only when ``freeze_tied_head`` asks for it.
    """
    if spec.method == "full":
        return shape.total()
    if spec.method == "freeze":
        tied = shape.tied and not shape.encoder
        head = (shape.vocab * shape.hidden if spec.freeze_tied_head else 0) if tied else shape.head
        side = shape.final_norm + head if spec.freeze_head else 0
        return trained_layers(shape, spec) * freeze_layer_params(shape, spec) + side
    return 0


def _p_tuning_params(shape: ModelShape, spec: MethodSpec) -> int:
    """peft's PromptEncoder: token embeddings plus an MLP (h→e→e→h) or a bi-LSTM and a 2-layer head."""
    h, n = shape.hidden, virtual_tokens(spec)
    e = spec.encoder_hidden or h
    if spec.encoder_type == "lstm":
        lstm = sum(2 * 4 * (e * (h if k == 0 else 2 * e) + e * e + 2 * e) for k in range(spec.encoder_layers))
        return n * h + lstm + (2 * e * 2 * e + 2 * e) + (2 * e * h + h)
    return n * h + (h * e + e) + (e * e + e) + (e * h + h)


def _prefix_params(shape: ModelShape, spec: MethodSpec) -> int:
    """peft's PrefixEncoder: one key and one value vector per layer per virtual token, sized to the KV
    heads (peft sizes prefixes by num_key_value_heads), optionally produced by a 2-layer MLP."""
    n, L, td = virtual_tokens(spec), shape.layers, shape.kv_dim
    if not spec.prefix_projection:
        return n * L * 2 * td
    e = spec.encoder_hidden or shape.hidden
    return n * td + (td * e + e) + (e * L * 2 * td + L * 2 * td)


def added_params(shape: ModelShape, spec: MethodSpec) -> int:
    """New trainable parameters the method adds to a frozen base (modules_to_save copies included)."""
    m, L, h = spec.method, shape.layers, shape.hidden
    saved = sum(_saved_module_params(shape, n) for n in spec.modules_to_save)
    if m in LORA_FAMILY:
        ranked = lora_ranks(shape, spec)
        n = sum(r * (l.in_features + l.out_features) for l, r in ranked)
        if m == "dora":  # a magnitude vector per wrapped module
            n += sum(l.out_features for l, _ in ranked)
        if m == "adalora":  # the singular values E
            n += sum(r for _, r in ranked)
        return n + saved + _bias_params(shape, spec)
    if m == "ia3":  # feed-forward modules scale their input, the others their output
        return L * sum(l.in_features if l.kind == "mlp" else l.out_features for l in ia3_modules(shape, spec)) + saved
    if m == "adapter":  # down (h→b), up (b→h), with biases
        b = bottleneck(shape, spec)
        return L * adapters_per_layer(spec) * (2 * h * b + b + h)
    if m == "prompt_tuning":
        return virtual_tokens(spec) * h
    if m == "prefix_tuning":
        return _prefix_params(shape, spec)
    if m == "p_tuning":
        return _p_tuning_params(shape, spec)
    return 0


def _bias_params(shape: ModelShape, spec: MethodSpec) -> int:
    """LoRA's ``bias``: all linear biases in the blocks, or those of the wrapped modules."""
    if spec.bias == "all":
        return shape.layers * sum(l.out_features for l in shape.linears if l.bias)
    if spec.bias == "lora_only":
        return sum(l.out_features for l, _ in lora_ranks(shape, spec) if l.bias)
    return 0


def frozen_added_params(shape: ModelShape, spec: MethodSpec) -> int:
    """Parameters a method adds without training them (AdaLoRA's per-module ``ranknum``)."""
    return len(lora_ranks(shape, spec)) if spec.method == "adalora" else 0


def trainable_params(shape: ModelShape, spec: MethodSpec) -> int:
    """All parameters with gradients and optimizer state."""
    return base_trainable_params(shape, spec) + added_params(shape, spec)


def extra_activation_elements(shape: ModelShape, spec: MethodSpec) -> int:
    """Per layer per token, activations the method keeps beyond the base layer's own."""
    m = spec.method
    if m in LORA_FAMILY:
        ranked = lora_ranks(shape, spec)  # every wrapped module of every layer: averaged over the layers
        # lora_dropout makes a copy of each wrapped module's input; lora_A's output is kept for B.
        extra = sum(l.in_features + r for l, r in ranked)
        if m == "dora":  # DoRA keeps the combined output for the magnitude gradient
            extra += sum(l.out_features for l, _ in ranked)
        return extra // shape.layers
    if m == "ia3":
        return sum(l.in_features if l.kind == "mlp" else l.out_features for l in ia3_modules(shape, spec))
    if m == "adapter":
        return adapters_per_layer(spec) * (shape.hidden + 2 * bottleneck(shape, spec))
    return 0
