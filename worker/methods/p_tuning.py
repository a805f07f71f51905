"""P-tuning: virtual tokens produced by a small prompt encoder (MLP or LSTM); not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from ._prompt_common import PROMPT_TRAINING, VIRTUAL_TOKENS_META, load, wrap
from .base import Method, register


@dataclass(frozen=True)
class PTuningParams:
    """peft PromptEncoderConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    encoder_type: str = field(default="mlp", metadata={
        "help": "Prompt encoder: mlp or lstm.", "choices": ["mlp", "lstm"]})
    encoder_hidden_size: int = field(default=0, metadata={
        "help": "Hidden size of the prompt encoder; 0 = the model's hidden size.", "min": 0, "max": 16384})
    encoder_num_layers: int = field(default=2, metadata={
        "help": "Layers in the prompt encoder (LSTM only).", "min": 1, "max": 8})
    encoder_dropout: float = field(default=0.0, metadata={
        "help": "Dropout inside the prompt encoder.", "min": 0.0, "max": 0.9})


def apply(model, params, task: str):
    """Prepend virtual tokens computed by a trainable prompt encoder; the base stays frozen."""
    from peft import PromptEncoderConfig

    return wrap("p_tuning", model, PromptEncoderConfig, task,
                num_virtual_tokens=params.num_virtual_tokens,
                encoder_reparameterization_type=params.encoder_type.upper(),
                encoder_hidden_size=params.encoder_hidden_size or model.config.hidden_size,
                encoder_num_layers=params.encoder_num_layers,
                encoder_dropout=params.encoder_dropout)


METHOD = register(Method(
    name="p_tuning",
    params=PTuningParams,
    summary="Virtual tokens from a small trainable prompt encoder (P-tuning); not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    apply=apply,
    load=load,
    default_training=dict(PROMPT_TRAINING, learning_rate=1e-3),
))
