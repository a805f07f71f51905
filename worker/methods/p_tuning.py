"""P-tuning, the torch side: virtual tokens produced by a small prompt encoder through peft's
PromptEncoderConfig (spec: studio/methods/p_tuning.py)."""
from __future__ import annotations

from ._prompt_common import load, wrap
from .base import implement


def apply(model, params, task: str):
    """Prepend virtual tokens computed by a trainable prompt encoder; the base stays frozen."""
    from peft import PromptEncoderConfig

    return wrap("p_tuning", model, PromptEncoderConfig, task,
                num_virtual_tokens=params.num_virtual_tokens,
                encoder_reparameterization_type=params.encoder_type.upper(),
                encoder_hidden_size=params.encoder_hidden_size or model.config.hidden_size,
                encoder_num_layers=params.encoder_num_layers,
                encoder_dropout=params.encoder_dropout)


METHOD = implement("p_tuning", apply=apply, load=load)
