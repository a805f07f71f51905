"""LoRA: low-rank updates B·A on chosen linear layers, base frozen; mergeable (peft LoraConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods import _costs
from studio.methods._common import (
    LORA_TRAINING, SAVE_META, TARGET_HELP, TARGETS_META, config_num_layers, parse_int_map, parse_layers,
)
from studio.methods.spec import AdvisorChoices, Costs, MethodSpec, register

INIT_CHOICES = ("true", "gaussian", "pissa", "olora")


@dataclass(frozen=True)
class LoraParams:
    """peft LoraConfig options the studio exposes (names are the CLI --set keys)."""

    r: int = field(default=16, metadata={
        "help": "Rank of the update. <=8 for narrow style/domain tweaks, 16-64 for general tasks, "
                ">=64 approaches full fine-tuning.", "min": 1, "max": 1024})
    lora_alpha: int = field(default=32, metadata={
        "help": "Scale of the update (alpha/r). About 2*r; raise it if updates vanish.", "min": 1, "max": 4096})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "Dropout on the LoRA input. 0 by default: on runs of a few epochs it only slows learning "
                "(measured); 0.05-0.1 fights overfitting when training many epochs on small data.",
        "min": 0.0, "max": 0.9})
    target_modules: str = field(default="all_linear", metadata={
        "help": TARGET_HELP + " Default all_linear: more capacity for the same rank (article 001, the "
                "QLoRA paper; measured better than attention only).", **TARGETS_META})
    bias: str = field(default="none", metadata={
        "help": "Which biases train: none, all, or lora_only.", "choices": ["none", "all", "lora_only"]})
    use_rslora: bool = field(default=False, metadata={
        "help": "Rank-stabilised LoRA: scale by alpha/sqrt(r), steadier at high ranks."})
    init_lora_weights: str = field(default="true", metadata={
        "help": "Initialisation: true (B=0, standard), gaussian, pissa (principal singular vectors, "
                "converges faster), olora (orthonormal). PiSSA/OLoRA are saved as plain LoRA.",
        "choices": list(INIT_CHOICES)})
    rank_pattern: str = field(default="", metadata={
        "help": "Per-module ranks as regex=int pairs, e.g. q_proj=16,up_proj=8,down_proj=4 (article 001's "
                "layer-wise ranks). Empty: r everywhere."})
    alpha_pattern: str = field(default="", metadata={
        "help": "Per-module alphas as regex=int pairs, e.g. down_proj=8. Empty: lora_alpha everywhere."})
    modules_to_save: str = field(default="", metadata={**SAVE_META,
        "help": "Comma list of modules trained in full beside LoRA (the hybrid of article 002), "
                "e.g. lm_head. The classification head is added automatically."})
    layers_to_transform: str = field(default="", metadata={
        "help": "Comma list of layer indices that get LoRA, e.g. 0,1. Empty: every layer."})


def make_check(name: str):
    """Torch-free validation of the string-encoded options, with errors naming method ``name``."""
    def check(params, model_config: dict | None) -> None:
        parse_int_map(name, "rank_pattern", params.rank_pattern)
        parse_int_map(name, "alpha_pattern", params.alpha_pattern)
        parse_layers(name, params.layers_to_transform, config_num_layers(model_config))
    return check


def advised_params(choices: AdvisorChoices) -> dict:
    """Article 001's rank, alpha = 2·r, the advisor's target layers; dropout stays the method's default."""
    return {"r": choices.rank, "lora_alpha": 2 * choices.rank, "target_modules": choices.target}


def wrapped(shape, p) -> list:
    """(linear, rank) of every module LoRA wraps."""
    return _costs.wrapped(shape, "lora", p.target_modules, p.r, p.rank_pattern, p.layers_to_transform)


def added(shape, p) -> int:
    """A and B per wrapped module: r·(in + out); plus modules_to_save copies and trained biases."""
    modules = wrapped(shape, p)
    return (sum(r * (l.in_features + l.out_features) for l, r in modules) + _costs.saved_modules(shape, p.modules_to_save)
            + _costs.trained_biases(shape, p.bias, modules))


def extra_activations(shape, p) -> int:
    """lora_dropout copies each wrapped module's input and lora_A's output is kept for B (averaged over layers)."""
    return sum(l.in_features + r for l, r in wrapped(shape, p)) // shape.layers


COSTS = Costs(added=added, extra_activations=extra_activations)

SPEC = register(MethodSpec(
    name="lora",
    params=LoraParams,
    summary="Low-rank adapters on chosen linear layers; 0.1-1% of weights train; mergeable.",
    mergeable=True,
    low_rank=True,
    suggest_4bit_base=True,
    combinable=True,
    default_training=dict(LORA_TRAINING),
    check=make_check("lora"),
    advised_params=advised_params,
    costs=COSTS,
))
