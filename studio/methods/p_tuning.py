"""P-tuning: virtual tokens produced by a small prompt encoder (MLP or LSTM); not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods._common import PROMPT_TRAINING, VIRTUAL_TOKENS_META
from studio.methods.spec import AdvisorChoices, Costs, MethodSpec, register

ADVISED_TOKENS = 20  # peft's examples


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


def advised_params(choices: AdvisorChoices) -> dict:
    return {"num_virtual_tokens": choices.virtual_tokens or ADVISED_TOKENS}


def added(shape, p) -> int:
    """peft's PromptEncoder: token embeddings plus an MLP (h→e→e→h) or a bi-LSTM and a 2-layer head."""
    h, n = shape.hidden, p.num_virtual_tokens
    e = p.encoder_hidden_size or h
    if p.encoder_type == "lstm":
        lstm = sum(2 * 4 * (e * (h if k == 0 else 2 * e) + e * e + 2 * e) for k in range(p.encoder_num_layers))
        return n * h + lstm + (2 * e * 2 * e + 2 * e) + (2 * e * h + h)
    return n * h + (h * e + e) + (e * e + e) + (e * h + h)


SPEC = register(MethodSpec(
    name="p_tuning",
    params=PTuningParams,
    summary="Virtual tokens from a small trainable prompt encoder (P-tuning); not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    prepends_tokens=True,
    default_training=dict(PROMPT_TRAINING, learning_rate=1e-3),
    advised_params=advised_params,
    costs=Costs(added=added, virtual_tokens=lambda shape, p: p.num_virtual_tokens),
))
