"""Prefix tuning: learnable key/value prefixes in every layer's attention; not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

import inspect

from . import _prompt_common
from ._prompt_common import VIRTUAL_TOKENS_META, wrap
from .base import Method, MethodError, register


@dataclass(frozen=True)
class PrefixTuningParams:
    """peft PrefixTuningConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    prefix_projection: bool = field(default=False, metadata={
        "help": "Produce the prefixes through a small MLP (more stable training, more parameters)."})
    encoder_hidden_size: int = field(default=0, metadata={
        "help": "Hidden size of that MLP; 0 = the model's hidden size.", "min": 0, "max": 16384})


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


METHOD = register(Method(
    name="prefix_tuning",
    params=PrefixTuningParams,
    summary="Learn key/value prefixes in every attention layer; tiny; not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    apply=apply,
    load=load,
    default_training={"learning_rate": 1e-2, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
))
