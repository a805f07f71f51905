"""AdaLoRA: LoRA whose rank budget moves to the most important weights during training; mergeable.

Needs the total number of optimizer steps (``total_step``): the recipe fills it with
``with_context(params, total_steps=max_steps)``, and must call ``after_optimizer_step`` every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import _peft_common as common
from .base import Method, MethodError, register
from .lora import LORA_TRAINING


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
    target_modules: str = field(default="attention_mlp", metadata={"help": common.TARGET_HELP, **common.TARGETS_META})
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
    modules_to_save: str = field(default="", metadata={**common.SAVE_META,
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


def apply(model, params, task: str):
    """Add SVD-shaped adapters (P·Λ·Q) whose singular values are pruned by importance."""
    from peft import AdaLoraConfig, get_peft_model

    if params.total_step <= 0:
        raise MethodError(
            "adalora: total_step is not set. The recipe fills it from the run's steps "
            "(with_context(params, total_steps=N)); or pass --set total_step=N."
        )
    check(params, None)
    config = AdaLoraConfig(
        task_type=common.peft_task_type("adalora", task),
        init_r=params.init_r,
        target_r=params.target_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=common.resolve_targets("adalora", model, params.target_modules),
        tinit=params.tinit,
        tfinal=params.tfinal,
        deltaT=params.delta_t,
        orth_reg_weight=params.orth_reg_weight,
        total_step=params.total_step,
        modules_to_save=common.modules_to_save("adalora", model, params.modules_to_save, task),
    )
    return get_peft_model(model, config)


def after_optimizer_step(model, global_step: int) -> None:
    """Update importance scores and mask ranks; peft needs the grads, so call before zero_grad."""
    model.base_model.update_and_allocate(global_step)


METHOD = register(Method(
    name="adalora",
    params=AdaLoraParams,
    summary="LoRA that moves its rank budget to the weights that matter most while training; mergeable.",
    mergeable=True,
    apply=apply,
    merge=common.merge_peft,
    default_training=dict(LORA_TRAINING),
    check=check,
    after_optimizer_step=after_optimizer_step,
))
