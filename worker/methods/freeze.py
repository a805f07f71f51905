"""Freeze-tuning, the torch side: freeze everything, then unfreeze the top blocks' chosen parts and what follows
the blocks (spec: studio/methods/freeze.py)."""
from __future__ import annotations

from studio.methods import MethodError, check_task
from studio.methods._common import split_list
from studio.methods.freeze import PART_PRESETS, default_freeze_layers, too_many

from . import _arch, _plain
from .base import implement


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
        raise too_many(layers, len(blocks))
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


METHOD = implement("freeze", apply=apply, save=_plain.save_model, load=_plain.load_model, merge=_plain.merge_identity)
