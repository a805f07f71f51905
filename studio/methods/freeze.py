"""Freeze-tuning: only the top N blocks (all of them, or their attention or MLP) and the head train."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods._common import config_num_layers, split_list
from studio.methods.spec import AdvisorChoices, Costs, MethodError, MethodSpec, register

PART_PRESETS = ("all", "attention", "mlp")


@dataclass(frozen=True)
class FreezeParams:
    """How much of the top of the network trains."""

    # a quarter of the blocks and no tied head: measured against the top 2 blocks + the tied head on the demo
    # model (bench/quality.py, docs/benchmarks.md), the quarter learns more per step and each step is cheaper
    num_trainable_layers: int = field(default=0, metadata={
        "help": "How many of the top transformer blocks train; the rest stay frozen. 0: a quarter of the "
                "model's blocks (at least one).", "min": 0, "max": 1024})
    trainable_modules: str = field(default="all", metadata={"modules": PART_PRESETS,
        "help": "Which parts of those blocks train: all, attention, mlp, or a comma list of sub-module "
                "names such as self_attn,post_attention_layernorm."})
    train_head_side: bool = field(default=True, metadata={
        "help": "Also train what sits after the blocks: final norm and the head (always on for classification)."})
    train_tied_head: bool = field(default=False, metadata={
        "help": "Where the head shares its weights with the input embeddings (tied, as in SmolLM2 or Llama 3.2), "
                "train it too. That trains the whole embedding matrix (a fifth of the demo model): slower, and "
                "measured no better on short runs. Off: the tied head stays as it is."})


def default_freeze_layers(layers: int) -> int:
    """Top layers that freeze-tuning trains by default: a quarter of the stack, at least one.

    Measured on the demo model (bench/quality.py): the top quarter without the tied head beat the top 2 of
    30 blocks with it; 003's 5–20 % of parameters holds for the blocks alone on most bases.
    """
    return max(1, layers // 4)


def too_many(n: int, have: int) -> MethodError:
    return MethodError(
        f"freeze: num_trainable_layers={n} but the model has {have} layers. "
        f"Set --set num_trainable_layers={have} or lower (or use the full method)."
    )


def check(params, model_config: dict | None) -> None:
    """Refuse freezing more layers than the config declares."""
    have = config_num_layers(model_config)
    if have is not None and params.num_trainable_layers > have:
        raise too_many(params.num_trainable_layers, have)


def advised_params(choices: AdvisorChoices) -> dict:
    return {"num_trainable_layers": choices.trainable_layers or default_freeze_layers(choices.layers)}


def trained_layers(shape, p) -> int:
    """The top blocks that train."""
    return min(shape.layers, p.num_trainable_layers or default_freeze_layers(shape.layers))


def block_params(shape, parts: str) -> int:
    """Parameters of one trained block under ``trainable_modules`` (custom lists are sized by their words)."""
    attention = sum(l.params for l in shape.linears if l.kind == "attention")
    mlp = sum(l.params for l in shape.linears if l.kind == "mlp") + shape.extra_per_layer
    if parts == "all":
        return shape.layer_params()
    if parts == "attention":  # the attention sub-module only, never a norm (post_attention_layernorm)
        return attention
    if parts == "mlp":
        return mlp
    total = 0
    for name in split_list(parts):
        low = name.lower()
        if "norm" in low:
            total += shape.hidden
        elif "attn" in low or "attention" in low:
            total += attention
        else:
            total += mlp
    return total


def base_trainable(shape, p) -> int:
    """The top blocks, plus the final norm and the head when ``train_head_side``; a tied head is the input
    embedding matrix, which trains only when ``train_tied_head`` asks for it."""
    tied = shape.tied and not shape.encoder
    head = (shape.vocab * shape.hidden if p.train_tied_head else 0) if tied else shape.head
    side = shape.final_norm + head if p.train_head_side else 0
    return trained_layers(shape, p) * block_params(shape, p.trainable_modules) + side


SPEC = register(MethodSpec(
    name="freeze",
    params=FreezeParams,
    summary="Train only the top N blocks and the head; 5-20% of weights; simple classification on one GPU.",
    mergeable=True,
    trains_base=True,
    # 003's lr, weight decay and clipping; a linear decay (measured better than cosine on short runs,
    # bench/quality.py); the advisor adds a warm-up and cosine to runs long enough to need them
    default_training={"learning_rate": 5e-5, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "lr_scheduler_type": "linear"},
    check=check,
    advised_params=advised_params,
    costs=Costs(base_trainable=base_trainable, trained_layers=trained_layers),
))
