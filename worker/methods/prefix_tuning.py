"""Prefix tuning, the torch side: key/value prefixes fed to every layer's attention through peft's
PrefixTuningConfig (spec: studio/methods/prefix_tuning.py)."""
from __future__ import annotations

import inspect

from studio.methods import MethodError

from . import _prompt_common
from ._prompt_common import wrap
from .base import implement


def apply(model, params, task: str):
    """Add per-layer prefix keys/values fed to attention as past key values."""
    from peft import PrefixTuningConfig

    hidden = params.encoder_hidden_size or model.config.hidden_size
    return accept_prefixes(wrap("prefix_tuning", model, PrefixTuningConfig, task,
                                num_virtual_tokens=params.num_virtual_tokens,
                                prefix_projection=params.prefix_projection,
                                encoder_hidden_size=hidden))


def load(base_model, saved_dir, *, trainable: bool = False):
    """Reload the prefixes (see ``accept_prefixes``)."""
    return accept_prefixes(_prompt_common.load(base_model, saved_dir, trainable=trainable))


def accept_prefixes(peft_model):
    """Let a classifier's encoder take the prefixes peft hands it as ``past_key_values``.

    peft feeds a classifier's prefixes to its backbone (e.g. ``bert``) only if the backbone's forward
    names a ``past_key_values`` parameter; transformers 5.25 renamed it ``cache`` (still accepting the old
    name until 5.40), so peft refuses with "Model does not support past key values". The backbone gets a
    forward that names the old parameter and passes it on as ``cache``. A backbone with neither cannot
    take prefixes at all: refused here, before the job is queued (the submit-time count applies the method).
    """
    if peft_model.peft_config[peft_model.active_adapter].task_type != "SEQ_CLS":
        return peft_model  # a causal LM takes its prefixes through its own generation path
    if "past_key_values" in inspect.signature(peft_model.base_model.forward).parameters:
        return peft_model  # peft passes them to the whole model, which accepts them
    backbone = peft_model.base_model.get_submodule(peft_model.transformer_backbone_name)
    names = inspect.signature(backbone.forward).parameters
    if "past_key_values" in names:
        return peft_model
    if "cache" not in names:
        raise MethodError(
            f"prefix_tuning: {type(backbone).__name__} takes no key/value cache, so it cannot receive prefixes. "
            "Use prompt_tuning, p_tuning or lora for this classifier.")
    forward = backbone.forward

    def forward_with_past_key_values(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    backbone.forward = forward_with_past_key_values
    return peft_model


METHOD = implement("prefix_tuning", apply=apply, load=load)
