"""Shared torch-side pieces of the soft-prompt methods (prompt, prefix and P-tuning): none can be merged."""
from __future__ import annotations

from pathlib import Path

from . import _arch
from . import _peft_common as common


def wrap(name: str, model, config_cls, task: str, **kwargs):
    """get_peft_model with a prompt-learning config; seq_cls also trains the classification head."""
    from peft import get_peft_model

    config = config_cls(task_type=common.peft_task_type(name, task), **kwargs)
    if task == "seq_cls":  # peft adds classifier/score itself; name the actual head to be sure
        config.modules_to_save = _arch.head_names(model)
    return get_peft_model(model, config)


def load(base_model, saved_dir, *, trainable: bool = False):
    """Reload a soft-prompt adapter; peft refuses ``is_trainable`` for these, so rebuild and fill instead."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    from .base import _default_load

    if not trainable:
        return _default_load(base_model, saved_dir)
    config = PeftConfig.from_pretrained(str(saved_dir))
    config.inference_mode = False
    model = get_peft_model(base_model, config)
    weights = load_file(str(Path(saved_dir) / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    model.train()
    return model
