"""Prompt tuning: learnable soft-prompt embeddings before the input; the smallest method; not mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods._common import PROMPT_TRAINING, VIRTUAL_TOKENS_META
from studio.methods.spec import AdvisorChoices, Costs, MethodSpec, register

ADVISED_TOKENS = 50  # 003: "50 learnable tokens"


@dataclass(frozen=True)
class PromptTuningParams:
    """peft PromptTuningConfig options."""

    num_virtual_tokens: int = field(default=20, metadata=dict(VIRTUAL_TOKENS_META))
    init_text: str = field(default="", metadata={
        "help": "Start the soft prompt from the embeddings of this text (e.g. 'Classify the sentiment:'); "
                "empty = random start. Uses the base model's tokenizer."})


def advised_params(choices: AdvisorChoices) -> dict:
    return {"num_virtual_tokens": choices.virtual_tokens or ADVISED_TOKENS}


SPEC = register(MethodSpec(
    name="prompt_tuning",
    params=PromptTuningParams,
    summary="Learn only soft-prompt tokens (<0.01% of weights); runs even on CPU; not mergeable.",
    mergeable=False,
    packable=False,  # virtual tokens per row: packed examples would share them
    prepends_tokens=True,
    tiny_optimizer_state=True,
    default_training=dict(PROMPT_TRAINING),
    advised_params=advised_params,
    costs=Costs(added=lambda shape, p: p.num_virtual_tokens * shape.hidden,
                virtual_tokens=lambda shape, p: p.num_virtual_tokens),
))
