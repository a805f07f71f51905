"""IA3, the torch side: learned scaling vectors on chosen linear layers through peft's IA3Config (spec:
studio/methods/ia3.py)."""
from __future__ import annotations

from . import _arch
from . import _peft_common as common
from .base import implement


def _targets(model, spec: str) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules); MLP targets scale their input, the rest their output."""
    if spec == "auto":
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
        )

        model_type = getattr(model.config, "model_type", None)
        if model_type in TARGETS:
            return list(TARGETS[model_type]), list(FF[model_type])
        spec = "attention_mlp"
    targets = common.resolve_targets("ia3", model, spec)
    stack_name, _ = _arch.layer_stack(model)
    linears = _arch.linear_names_in_layers(model)
    mlp_paths = {_arch.in_layer_path(n, stack_name) for n in linears
                 if not _arch.is_attention(_arch.in_layer_path(n, stack_name))}
    feedforward = [t for t in targets if any(p == t or p.endswith("." + t) for p in mlp_paths)]
    return targets, feedforward


def apply(model, params, task: str):
    """Add IA3 scaling vectors (initialised to 1, so the model starts unchanged)."""
    from peft import IA3Config, get_peft_model

    targets, feedforward = _targets(model, params.target_modules)
    config = IA3Config(
        task_type=common.peft_task_type("ia3", task),
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=common.modules_to_save("ia3", model, params.modules_to_save, task),
    )
    return get_peft_model(model, config)


METHOD = implement("ia3", apply=apply, merge=common.merge_peft)
