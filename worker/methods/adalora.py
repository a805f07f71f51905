"""AdaLoRA, the torch side: SVD-shaped adapters whose rank budget is pruned by importance every optimizer step
(spec: studio/methods/adalora.py, whose ``check`` also guards ``apply``).
"""
from __future__ import annotations

from studio.methods import MethodError
from studio.methods.adalora import check

from . import _peft_common as common
from .base import implement


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


METHOD = implement("adalora", apply=apply, merge=common.merge_peft, after_optimizer_step=after_optimizer_step)
