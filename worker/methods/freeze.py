"""Freeze-tuning: only the top N blocks (all of them, or their attention or MLP) and the head train."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.advisor.methods import default_freeze_layers

from . import _arch, _plain
from ._peft_common import config_num_layers, split_list
from .base import Method, MethodError, check_task, register

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


def _too_many(n: int, have: int) -> MethodError:
    return MethodError(
        f"freeze: num_trainable_layers={n} but the model has {have} layers. "
        f"Set --set num_trainable_layers={have} or lower (or use the full method)."
    )


def check(params, model_config: dict | None) -> None:
    """Refuse freezing more layers than the config declares."""
    have = config_num_layers(model_config)
    if have is not None and params.num_trainable_layers > have:
        raise _too_many(params.num_trainable_layers, have)


def _wanted(child_name: str, spec: str) -> bool:
    """Does the block child ``child_name`` belong to the requested part?"""
    if spec == "all":
        return True
    is_norm = "norm" in child_name.lower()  # Llama's post_attention_layernorm says "attention" but is a norm
    is_attn = _arch.is_attention(child_name) and not is_norm
    if spec == "attention":
        return is_attn
    if spec == "mlp":
        return not is_attn and not is_norm
    return child_name in split_list(spec)


def _check_parts(spec: str, block) -> None:
    if spec in PART_PRESETS:
        return
    children = [n for n, _ in block.named_children()]
    missing = [w for w in split_list(spec) if w not in children]
    if missing or not split_list(spec):
        raise MethodError(
            f"freeze: trainable_modules names {', '.join(missing) or '(nothing)'} which a block does not have. "
            f"Use all, attention, mlp or a comma list of: {', '.join(children)}."
        )


def apply(model, params, task: str):
    """Freeze everything, then unfreeze the top blocks' chosen parts and what follows the blocks."""
    check_task("freeze", task)
    stack_name, blocks = _arch.layer_stack(model)
    layers = params.num_trainable_layers or default_freeze_layers(len(blocks))
    if layers > len(blocks):
        raise _too_many(layers, len(blocks))
    _check_parts(params.trainable_modules, blocks[0])
    for p in model.parameters():
        p.requires_grad_(False)
    for block in list(blocks)[-layers:]:
        for child_name, child in block.named_children():
            if _wanted(child_name, params.trainable_modules):
                child.requires_grad_(True)
    if params.train_head_side or task == "seq_cls":
        _unfreeze_after_blocks(model, stack_name)
        if task == "seq_cls" or params.train_tied_head or not _head_is_tied(model):
            _plain.train_head(model)
    _plain.remember(model, "freeze", params, task)
    return model


def _head_is_tied(model) -> bool:
    """Is the output head the input embedding matrix itself (tie_word_embeddings)?"""
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embeddings is not None and head.weight is embeddings.weight


def _unfreeze_after_blocks(model, stack_name: str) -> None:
    """Parameters registered after the block stack (final norm, pooler, head) train.

    Registration order puts embeddings before the blocks and the norm/head after, in Llama, BERT
    and GPT-2 alike, so this needs no per-architecture table.
    """
    seen_stack = False
    prefix = stack_name + "."
    for name, p in model.named_parameters():
        if name.startswith(prefix):
            seen_stack = True
        elif seen_stack:
            p.requires_grad_(True)


METHOD = register(Method(
    name="freeze",
    params=FreezeParams,
    summary="Train only the top N blocks and the head; 5-20% of weights; simple classification on one GPU.",
    mergeable=True,
    apply=apply,
    save=_plain.save_model,
    load=_plain.load_model,
    merge=_plain.merge_identity,
    # 003's lr, weight decay and clipping; a linear decay (measured better than cosine on short runs,
    # bench/quality.py); the advisor adds a warm-up and cosine to runs long enough to need them
    default_training={"learning_rate": 5e-5, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "lr_scheduler_type": "linear"},
    check=check,
))
