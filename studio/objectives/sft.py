"""Supervised fine-tuning: learn to write the answers of instruction, chat or plain-text data (the task called
causal_lm before objectives existed)."""
from __future__ import annotations

from dataclasses import dataclass

from studio.objectives.spec import ObjectiveSpec, register


@dataclass(frozen=True)
class SFTParams:
    """SFT has no settings of its own: the method's and the training settings do the work."""


SPEC = register(ObjectiveSpec(
    name="sft",
    params=SFTParams,
    summary="Supervised fine-tuning: learn to write the answers in the data (loss on the responses only).",
    task="causal_lm",
    formats=("instruction", "chat", "text"),
    title="causal-LM training (objective sft, task causal_lm)",
    data_help="instruction, chat or text",
    suggest="Train a causal LM on it with objective sft",
    packable=True,  # padding-free packing of examples (worker/data.py)
))
