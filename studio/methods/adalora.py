"""AdaLoRA: LoRA whose rank budget moves to the most important weights during training; mergeable.

Needs the total number of optimizer steps (``total_step``): the recipe fills it with
``with_context(params, total_steps=max_steps)``, and calls the worker's ``after_optimizer_step`` every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from studio.methods import _costs
from studio.methods._common import LORA_TRAINING, SAVE_META, TARGET_HELP, TARGETS_META
from studio.methods.spec import AdvisorChoices, Costs, MethodError, MethodSpec, register

INIT_FACTOR = 1.5  # peft AdaLoraConfig's defaults: init_r 12 for target_r 8


@dataclass(frozen=True)
class AdaLoraParams:
    """peft AdaLoraConfig options."""

    init_r: int = field(default=12, metadata={
        "help": "Starting rank of every update before the budget is pruned.", "min": 1, "max": 1024})
    target_r: int = field(default=8, metadata={
        "help": "Average rank left after pruning (the final budget).", "min": 1, "max": 1024})
    lora_alpha: int = field(default=32, metadata={"help": "Update scale, as in LoRA.", "min": 1, "max": 4096})
    lora_dropout: float = field(default=0.05, metadata={
        "help": "Dropout on the adapter input.", "min": 0.0, "max": 0.9})
    target_modules: str = field(default="attention_mlp", metadata={"help": TARGET_HELP, **TARGETS_META})
    tinit: int = field(default=0, metadata={
        "help": "Warm-up steps at full rank before pruning starts.", "min": 0})
    tfinal: int = field(default=0, metadata={
        "help": "Final steps trained at the settled ranks.", "min": 0})
    delta_t: int = field(default=1, metadata={
        "help": "Reallocate the rank budget every this many steps.", "min": 1})
    orth_reg_weight: float = field(default=0.5, metadata={
        "help": "Weight of the orthogonality penalty added to the loss.", "min": 0.0, "max": 10.0})
    total_step: int = field(default=0, metadata={
        "help": "Total optimizer steps of the run; 0 = taken from the training settings.",
        "min": 0, "context": "total_steps"})
    modules_to_save: str = field(default="", metadata={**SAVE_META,
        "help": "Comma list of modules trained in full beside the adapters. The classification head "
                "is added automatically."})


def check(params, model_config: dict | None) -> None:
    """Ranks and the pruning schedule must fit together."""
    if params.target_r > params.init_r:
        raise MethodError(
            f"adalora: target_r ({params.target_r}) must be <= init_r ({params.init_r}). "
            f"Set --set target_r={params.init_r} or lower."
        )
    if params.total_step and params.tinit + params.tfinal >= params.total_step:
        raise MethodError(
            f"adalora: tinit + tfinal ({params.tinit + params.tfinal}) must be < total_step "
            f"({params.total_step}). Lower tinit/tfinal or train for more steps."
        )


def advised_params(choices: AdvisorChoices) -> dict:
    """The advisor's rank is the budget left after pruning; training starts 1.5 times wider."""
    r = choices.rank
    return {"target_r": r, "init_r": math.ceil(INIT_FACTOR * r), "lora_alpha": 2 * r,
            "target_modules": choices.target}


def wrapped(shape, p) -> list:
    """(linear, rank) of every wrapped module, at the starting rank (what memory holds)."""
    return _costs.wrapped(shape, "adalora", p.target_modules, p.init_r)


def adapter_elements(shape, p) -> int:
    """P and Q (r·(in + out)) and the singular values E (r) of every wrapped module."""
    return sum(r * (l.in_features + l.out_features) + r for l, r in wrapped(shape, p))


def added(shape, p) -> int:
    """The adapter's elements plus modules_to_save copies."""
    return adapter_elements(shape, p) + _costs.saved_modules(shape, p.modules_to_save)


def frozen_added(shape, p) -> int:
    """peft's per-module ``ranknum``, a parameter that never trains."""
    return len(wrapped(shape, p))


# peft's RankAllocator keeps, for every lora_A/B/E element, its importance and two moving averages (fp32), and
# builds one more temporary of that size as it updates them after each optimizer step.
ALLOCATOR_COPIES = 3 + 1


def state_bytes(shape, p) -> int:
    """The rank allocator's importance scores beside the adapter (modules_to_save copies are not scored)."""
    return adapter_elements(shape, p) * 4 * ALLOCATOR_COPIES


def extra_activations(shape, p) -> int:
    """As LoRA: the dropout copy of each wrapped input and the rank-wide intermediate."""
    return sum(l.in_features + r for l, r in wrapped(shape, p)) // shape.layers


SPEC = register(MethodSpec(
    name="adalora",
    params=AdaLoraParams,
    summary="LoRA that moves its rank budget to the weights that matter most while training; mergeable.",
    mergeable=True,
    low_rank=True,
    single_adapter=True,  # peft: one trainable AdaLoRA adapter per model
    suggest_4bit_base=True,
    not_combinable_why="peft's AdaLoRA does not support add_weighted_adapter",
    default_training=dict(LORA_TRAINING),
    check=check,
    advised_params=advised_params,
    costs=Costs(added=added, frozen_added=frozen_added, extra_activations=extra_activations,
                state_bytes=state_bytes),
))
