"""OFT: orthogonal fine-tuning. Each chosen linear layer's input is rotated by a block-diagonal orthogonal
matrix (Cayley-parameterised skew-symmetric blocks) before the frozen weight, so the angles between the
weight's neurons are kept (peft OFTConfig); mergeable: the rotation folds into the weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods import _costs
from studio.methods._common import (
    SAVE_META, TARGET_HELP, TARGETS_META, config_num_layers, parse_layers,
)
from studio.methods.spec import Costs, MethodSpec, register


@dataclass(frozen=True)
class OftParams:
    """peft OFTConfig options the studio exposes (OFT is sized by its block size; peft derives the block count)."""

    oft_block_size: int = field(default=32, metadata={
        "help": "Size of each orthogonal block: a layer's input is rotated in blocks this wide, with "
                "size·(size-1)/2 trainable numbers per block. Larger: more capacity and parameters. It should "
                "divide the layers' widths (32 divides most: 576, 2048, 4096...); peft moves it to the nearest "
                "divisor otherwise.", "min": 2, "max": 4096})
    target_modules: str = field(default="all_linear", metadata={
        "help": TARGET_HELP + " Default all_linear, as LoRA's.", **TARGETS_META})
    module_dropout: float = field(default=0.0, metadata={
        "help": "Probability of replacing a whole block by the identity during training (OFT's dropout).",
        "min": 0.0, "max": 0.9})
    use_cayley_neumann: bool = field(default=True, metadata={
        "help": "Approximate the Cayley transform by a Neumann series (faster; slightly less orthogonal). Off: "
                "the exact transform, with a matrix inverse per block per step."})
    coft: bool = field(default=False, metadata={
        "help": "Constrained OFT: keep each rotation within eps of the identity (steadier, less freedom)."})
    eps: float = field(default=6e-5, metadata={
        "help": "How far constrained OFT (coft) may rotate; ignored otherwise.", "min": 0.0, "max": 1.0})
    block_share: bool = field(default=False, metadata={
        "help": "One rotation block shared by all blocks of a layer (far fewer parameters, less capacity)."})
    bias: str = field(default="none", metadata={
        "help": "Which biases train: none, all, or oft_only.", "choices": ["none", "all", "oft_only"]})
    modules_to_save: str = field(default="", metadata={**SAVE_META,
        "help": "Comma list of modules trained in full beside OFT, e.g. lm_head. The classification head is "
                "added automatically."})
    layers_to_transform: str = field(default="", metadata={
        "help": "Comma list of layer indices that get OFT, e.g. 0,1. Empty: every layer."})


def check(params, model_config: dict | None) -> None:
    """The layer list names layers the model has."""
    parse_layers("oft", params.layers_to_transform, config_num_layers(model_config))


def block_size(size: int, in_features: int) -> int:
    """The block size peft uses on a layer ``in_features`` wide: ``size`` when it divides the width, else the
    nearest divisor (the lower one on a tie), the width itself when ``size`` exceeds it (OFTLayer.update_layer)."""
    if in_features % size == 0 and size <= in_features:
        return size
    if size >= in_features:
        return in_features
    higher = size
    while higher <= in_features and in_features % higher != 0:
        higher += 1
    lower = size
    while lower > 1 and in_features % lower != 0:
        lower -= 1
    return lower if size - lower <= higher - size else higher


def wrapped(shape, p) -> list:
    """(linear, block size) of every module OFT wraps."""
    return [(l, block_size(p.oft_block_size, l.in_features))
            for l, _ in _costs.wrapped(shape, "oft", p.target_modules, 0, "", p.layers_to_transform)]


def added(shape, p) -> int:
    """Per wrapped module: in/b blocks (one when shared) of b·(b-1)/2 skew-symmetric entries; plus
    modules_to_save copies and trained biases."""
    modules = wrapped(shape, p)
    blocks = sum((1 if p.block_share else l.in_features // b) * (b * (b - 1) // 2) for l, b in modules)
    return blocks + _costs.saved_modules(shape, p.modules_to_save) + _costs.trained_biases(shape, p.bias, modules)


def extra_activations(shape, p) -> int:
    """Each wrapped module keeps its input (cast to the rotation's dtype) for the rotation's gradient; the
    frozen weight after it needs no copy (averaged over the layers)."""
    return sum(l.in_features for l, _ in wrapped(shape, p)) // shape.layers


SPEC = register(MethodSpec(
    name="oft",
    params=OftParams,
    summary="Orthogonal fine-tuning: learned block rotations of each layer's input (OFT); mergeable.",
    mergeable=True,
    suggest_4bit_base=True,
    # LoRA's measured schedule (a linear decay from the first step); its learning rate is measured the same
    # way (bench/quality.py, docs/adding-a-method.md)
    default_training={"learning_rate": 2e-4, "warmup_ratio": 0.0, "lr_scheduler_type": "linear"},
    check=check,
    costs=Costs(added=added, extra_activations=extra_activations),
))
