"""LoRA, the torch side: low-rank updates B·A on chosen linear layers through peft's LoraConfig; DoRA and QLoRA
build on it (spec: studio/methods/lora.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from studio.methods._common import parse_int_map, parse_layers

from . import _peft_common as common
from .base import implement, save_pretrained_only


def _init_value(text: str):
    return True if text == "true" else text


def lora_config(name: str, model, params, task: str, **extra):
    """Build the peft LoraConfig for ``model``; ``extra`` lets DoRA set use_dora."""
    from peft import LoraConfig

    from . import _arch

    num_layers = len(_arch.layer_stack(model)[1])
    return LoraConfig(
        task_type=common.peft_task_type(name, task),
        r=params.r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=common.resolve_targets(name, model, params.target_modules),
        bias=params.bias,
        use_rslora=params.use_rslora,
        init_lora_weights=_init_value(params.init_lora_weights),
        rank_pattern=parse_int_map(name, "rank_pattern", params.rank_pattern),
        alpha_pattern=parse_int_map(name, "alpha_pattern", params.alpha_pattern),
        modules_to_save=common.modules_to_save(name, model, params.modules_to_save, task),
        layers_to_transform=parse_layers(name, params.layers_to_transform, num_layers),
        **extra,
    )


def wrap(name: str, model, params, task: str, **extra):
    """get_peft_model with the studio's LoRA config; remembers PiSSA/OLoRA's initial adapter."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    peft_model = get_peft_model(model, lora_config(name, model, params, task, **extra))
    if params.init_lora_weights in ("pissa", "olora"):
        # These inits rewrite the base weights; to save a plain LoRA that loads onto the untouched
        # base, peft needs the adapter as it was right after initialisation.
        initial = get_peft_model_state_dict(peft_model)
        peft_model.studio_initial_adapter = {k: v.detach().clone() for k, v in initial.items()}
    return peft_model


def apply(model, params, task: str):
    """Freeze the base and add LoRA adapters (plus the head for seq_cls)."""
    return wrap("lora", model, params, task)


def save(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """save_pretrained as safetensors; PiSSA/OLoRA are converted to a LoRA for the original base."""
    initial = getattr(model, "studio_initial_adapter", None)
    if initial is None:
        save_pretrained_only(model, out_dir, state_dict=state_dict)
        return
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        init_dir = Path(tmp) / "initial"
        init_dir.mkdir()
        save_file(initial, str(init_dir / "adapter_model.safetensors"))
        save_pretrained_only(model, out_dir, state_dict=state_dict,
                             path_initial_model_for_weight_conversion=str(init_dir))


METHOD = implement("lora", apply=apply, save=save, merge=common.merge_peft)
