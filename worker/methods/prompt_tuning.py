"""Prompt tuning: learnable soft-prompt embeddings before the input; the smallest method; not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from ._prompt_common import PROMPT_TRAINING, VIRTUAL_TOKENS_META, load, wrap
from .base import Method, MethodError, register


@dataclass(frozen=True)
class PromptTuningParams:
    """peft PromptTuningConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    init_text: str = field(default="", metadata={
        "help": "Start the soft prompt from the embeddings of this text (e.g. 'Classify the sentiment:'); "
                "empty = random start. Uses the base model's tokenizer."})


def apply(model, params, task: str):
    """Prepend ``num_virtual_tokens`` trainable embeddings; the base stays frozen."""
    from peft import PromptTuningConfig, PromptTuningInit

    kwargs = {"num_virtual_tokens": params.num_virtual_tokens}
    if params.init_text:
        tokenizer_path = getattr(model, "name_or_path", "") or ""
        if not tokenizer_path:
            raise MethodError("prompt_tuning: init_text needs the base model's tokenizer path; "
                              "load the base from a directory or clear init_text.")
        kwargs.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=params.init_text,
                      tokenizer_name_or_path=tokenizer_path)
    return wrap("prompt_tuning", model, PromptTuningConfig, task, **kwargs)


METHOD = register(Method(
    name="prompt_tuning",
    params=PromptTuningParams,
    summary="Learn only soft-prompt tokens (<0.01% of weights); runs even on CPU; not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    apply=apply,
    load=load,
    default_training=dict(PROMPT_TRAINING),
))
