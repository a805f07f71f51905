"""Prompt tuning, the torch side: trainable soft-prompt embeddings before the input through peft's
PromptTuningConfig (spec: studio/methods/prompt_tuning.py)."""
from __future__ import annotations

from studio.methods import MethodError

from ._prompt_common import load, wrap
from .base import implement


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


METHOD = implement("prompt_tuning", apply=apply, load=load)
