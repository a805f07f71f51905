"""GRPO's rewards on the worker: the job's ``reward`` setting (parsed by studio/objectives/rewards.py, where the
string rewards live) as TRL ``reward_funcs``, a reward model version loaded to score completions, and the few
sampled completions per logging step written to the database (``grpo_samples``) for the Jobs tab.

Every reward function TRL calls is a :class:`RewardFunc` named after its reward (its curve is
``rewards/NAME/mean``); each notes what it scored in a shared :class:`Recorder`, so the samples carry the value
of every reward for the same completions without reading TRL's internals."""
from __future__ import annotations

import math

from transformers import TrainerCallback

from studio.objectives import rewards as builtin
from studio.objectives.rewards import Reward
from worker.context import JobContext

SAMPLES_PER_LOG = 4  # completions stored per logging step: one prompt's group (its spread is what GRPO learns from)
REGEX_TIMEOUT_S = 0.05  # a pattern that backtracks for longer on a completion scores it 0


def completion_text(completion) -> str:
    """A completion as text: TRL passes a conversational one as a list of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return completion or ""


def prompt_text(prompt) -> str:
    """A prompt as the person wrote it: the last user turn of a conversation, or the text."""
    if isinstance(prompt, list):
        users = [m.get("content") or "" for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else completion_text(prompt)
    return prompt or ""


class Recorder:
    """The latest generation batch the rewards scored: prompts, completions, references and each reward's
    values. The first reward function starts a new batch; :meth:`take` hands out a batch's rows once."""

    def __init__(self, names: list[str]):
        self.names = names
        self.batch: dict = {}
        self.generation = 0
        self.taken = 0

    def note(self, name: str, prompts, completions: list[str], references, values: list[float]) -> None:
        if name == self.names[0]:
            self.generation += 1
            self.batch = {"prompts": [prompt_text(p) for p in prompts], "completions": list(completions),
                          "references": [str(r) for r in references] if references else [""] * len(completions),
                          "rewards": {}}
        self.batch.setdefault("rewards", {})[name] = [float(v) for v in values]

    def take(self, limit: int) -> list[dict]:
        """Up to ``limit`` rows of the first prompt's group of the newest batch not taken yet ([] if none)."""
        if self.generation == self.taken or len(self.batch.get("rewards", {})) != len(self.names):
            return []
        self.taken = self.generation
        b = self.batch
        first = b["prompts"][0] if b["prompts"] else None
        rows = [i for i, p in enumerate(b["prompts"]) if p == first][:limit]
        return [{"prompt": b["prompts"][i], "completion": b["completions"][i], "reference": b["references"][i],
                 "rewards": {n: b["rewards"][n][i] for n in self.names}} for i in rows]


class RewardFunc:
    """One reward as TRL calls it: (prompts, completions, completion_ids, the data set's columns) -> floats."""

    def __init__(self, reward: Reward, score, recorder: Recorder):
        self.__name__ = reward.name  # TRL names the reward's curves after it
        self.score = score
        self.recorder = recorder

    def __call__(self, prompts, completions, completion_ids=None, answer=None, **_):
        texts = [completion_text(c) for c in completions]
        references = answer or [""] * len(texts)
        values = [float(v) for v in self.score(prompts, texts, completion_ids or [[]] * len(texts), references)]
        self.recorder.note(self.__name__, prompts, texts, references, values)
        return values


def _regex(pattern: str):
    import regex  # transformers' own dependency; unlike re, a search can be given a time limit

    compiled = regex.compile(pattern)

    def found(text: str) -> float:
        try:
            return 1.0 if compiled.search(text, timeout=REGEX_TIMEOUT_S) else 0.0
        except TimeoutError:
            return 0.0
    return lambda prompts, texts, ids, refs: [found(t) for t in texts]


def scorer(reward: Reward, *, cuda: bool):
    """The scoring function of one reward: (prompts, completion texts, completion token ids, references)."""
    kind, arg = reward.name, reward.arg
    if kind == "numeric_match":
        return lambda prompts, texts, ids, refs: [builtin.numeric_match(t, r) for t, r in zip(texts, refs)]
    if kind == "exact_match":
        return lambda prompts, texts, ids, refs: [builtin.exact_match(t, r) for t, r in zip(texts, refs)]
    if kind == "regex":
        return _regex(arg)
    if kind == "format":
        return lambda prompts, texts, ids, refs: [builtin.answer_format(t, arg) for t in texts]
    if kind == "length":
        return lambda prompts, texts, ids, refs: [builtin.length_penalty(len(i), arg) for i in ids]
    return RewardModel(arg, cuda=cuda)


class RewardModel:
    """A reward model version trained here (objective reward: a one-output head), scoring prompt + completion
    as it was trained: the conversation through its tokenizer's chat template. Loaded once, frozen, in eval mode."""

    BATCH = 8

    def __init__(self, version_id: int, *, cuda: bool):
        from worker.evaluation_job import load_version

        self.model, self.tokenizer, self.version = load_version(version_id)
        self.model.eval().requires_grad_(False)
        if cuda:
            self.model.to("cuda")
        self.max_length = (self.version.config or {}).get("max_seq_length") or 1024

    def _text(self, prompt, completion: str) -> str:
        if isinstance(prompt, list) and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}],
                                                      tokenize=False)
        return prompt_text(prompt) + "\n\n" + completion

    def __call__(self, prompts, texts, ids, refs) -> list[float]:
        import torch

        out: list[float] = []
        pairs = [self._text(p, t) for p, t in zip(prompts, texts)]
        device = next(self.model.parameters()).device
        for start in range(0, len(pairs), self.BATCH):
            batch = self.tokenizer(pairs[start:start + self.BATCH], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length, add_special_tokens=False)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            out.extend(logits[:, 0].float().tolist())
        return out


def build(chosen: list[Reward], *, cuda: bool) -> tuple[list[RewardFunc], Recorder]:
    """TRL's reward functions for the job's rewards (in order; their weights are the config's reward_weights)
    and the recorder they share."""
    recorder = Recorder([r.name for r in chosen])
    return [RewardFunc(r, scorer(r, cuda=cuda), recorder) for r in chosen], recorder


class SamplesCallback(TrainerCallback):
    """At every training log, a few completions of the newest generation batch with their reference and the value
    of each reward, written fenced to ``grpo_samples`` (a superseded attempt writes nothing)."""

    def __init__(self, ctx: JobContext, recorder: Recorder, weights: dict[str, float], per_log: int = SAMPLES_PER_LOG):
        self.ctx, self.recorder, self.weights, self.per_log = ctx, recorder, weights, per_log

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        rows = self.recorder.take(self.per_log)
        if rows:
            self.write(state.global_step, rows)

    def write(self, step: int, rows: list[dict]) -> None:
        from models_db import session_scope
        from models_db import jobs as jobq
        from models_db.schema import GrpoSample

        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        samples = [GrpoSample(job_id=self.ctx.job.id, attempt=self.ctx.claim.attempt, step=step, prompt=r["prompt"],
                              completion=r["completion"], reference=r["reference"],
                              rewards={n: finite(v) for n, v in r["rewards"].items()},
                              reward=finite(sum(self.weights[n] * v for n, v in r["rewards"].items())))
                   for r in rows]
        try:
            with session_scope() as db:
                jobq.report(db, self.ctx.claim)  # the fence: only the current attempt writes
                db.add_all(samples)
        except jobq.StaleFence:
            self.ctx.writer.stale.set()  # the next step's check stops the job
