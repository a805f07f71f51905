"""The tree's first question: what the weights learn from. The data the person has decides the objective
(article 003 names RLHF, a reward model then policy optimisation, as the step after SFT; SEEDS.md):

- demonstrations (instruction, chat, text) -> SFT, the first step;
- labelled texts -> a classifier head;
- preference pairs -> DPO from the newest SFT version of the base (it is the start and the reference);
  without an SFT version yet -> ORPO, which learns the answers and the preference in one run, with no reference;
- thumbs up / down (unpaired feedback) -> KTO;
- prompts with a verifiable reference answer -> GRPO rewarded by numeric_match; with a reward model trained
  here -> GRPO rewarded by it as well;
- a benchmark (multiple choice) trains nothing: it measures.

Each answer is a :class:`studio.advisor.rules.Step`, so the path shows why the objective was chosen before the
method's questions. Torch-free, like the rest of the advisor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio import objectives
from studio.advisor.rules import Step

DEMONSTRATIONS = ("instruction", "chat", "text")


@dataclass(frozen=True)
class ObjectiveChoice:
    """The objective the data calls for, the settings it starts with, the version it continues (None: the
    base), and the steps that decided it (shown first on the advice's path)."""

    name: str | None
    params: dict = field(default_factory=dict)
    from_version: int | None = None
    steps: tuple[Step, ...] = ()
    note: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "params": self.params, "from_version": self.from_version, "note": self.note}


def _step(node: str, question: str, answer: str, detail: str, rule: str, source: str = "studio") -> Step:
    return Step(node, question, answer, detail, rule, source, None)


def choose(data_format: str | None, *, task: str = "instruction", sft_version: int | None = None,
           reward_model: int | None = None) -> ObjectiveChoice:
    """The objective for data of ``data_format`` (None: no data set picked, so the person's task kind decides:
    classification or SFT). ``sft_version``: the newest SFT version of the base, the start of a preference
    objective; ``reward_model``: the newest reward-model version of the base, a reward for GRPO."""
    ask = "What does the data teach: answers to imitate, preferences, ratings, or answers to check?"
    if data_format is None:
        name = "classification" if task == "classification" else "sft"
        return ObjectiveChoice(name, steps=(_step(
            "objective", ask, name, "no data set picked: the task kind decides",
            "demonstrations train by supervised fine-tuning first (003: SFT, then RLHF)", "003"),))
    if data_format in DEMONSTRATIONS:
        return ObjectiveChoice("sft", steps=(_step(
            "objective", ask, "sft", f"{data_format} data: demonstrations to imitate",
            "003: supervised fine-tuning on demonstrations is the first step; preferences and rewards come after",
            "003"),))
    if data_format == "classification":
        return ObjectiveChoice("classification", steps=(_step(
            "objective", ask, "classification", "labelled texts: a classifier head learns the labels",
            "003 row 2: classification trains a head on the base"),))
    if data_format == "preference":
        first = _step("objective", ask, "preference", "chosen and rejected answers to the same prompts",
                      "003: after SFT, the model learns which answer people prefer (RLHF's step; DPO without a "
                      "separate reward model)", "003")
        if sft_version is not None:
            return ObjectiveChoice("dpo", from_version=sft_version, steps=(first, _step(
                "objective_start", "Is there an SFT version of this base to start from?", "yes",
                f"version #{sft_version} (the newest SFT version of this base)",
                "DPO moves a trained policy towards the chosen answers relative to a frozen reference: the SFT "
                "version is both the start and the reference")))
        return ObjectiveChoice("orpo", steps=(first, _step(
            "objective_start", "Is there an SFT version of this base to start from?", "no",
            "no SFT version of this base yet",
            "ORPO learns the chosen answers and the preference in one run from the base, with no reference "
            "model; DPO from the base would start from a policy that has not learned the answers yet")),
            note="With an SFT version of this base, DPO from it is the usual next step.")
    if data_format == "feedback":
        return ObjectiveChoice("kto", from_version=sft_version, steps=(_step(
            "objective", ask, "feedback", "single answers rated good or bad (thumbs up / down), not pairs",
            "KTO learns from unpaired ratings; DPO needs two answers to the same prompt"),))
    if data_format == "qa":
        reward = f"numeric_match,reward_model={reward_model}" if reward_model is not None else "numeric_match"
        detail = "questions with reference answers a program can check (the final number)"
        why = (f"GRPO samples several answers per question and rewards the ones whose final number matches"
               f"{f'; reward model version #{reward_model} of this base scores them too' if reward_model else ''}")
        return ObjectiveChoice(
            "grpo", params={"reward": reward}, from_version=sft_version,
            steps=(_step("objective", ask, "verifiable answers", detail, why, "003"),),
            note="Its worked answers can also train SFT first (--objective sft); GRPO then starts from that version.")
    if data_format == "multiple_choice":
        return ObjectiveChoice(None, steps=(_step(
            "objective", ask, "nothing to train", "multiple-choice questions: a benchmark",
            "a benchmark measures versions (studio versions evaluate); it is not training data"),),
            note="Pin it as a benchmark of the base instead (studio models pin-benchmark).")
    fits = objectives.default_for(data_format)
    name = fits.name if fits else None
    return ObjectiveChoice(name, steps=(_step("objective", ask, name or "none", f"{data_format} data",
                                              "the first objective that trains on this format"),))


__all__ = ["DEMONSTRATIONS", "ObjectiveChoice", "choose"]
