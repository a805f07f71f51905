"""Preference pairs as a measure, on the worker: how often a model scores the chosen answer above the rejected
one. A policy (any causal LM: a base, an SFT or a DPO version) scores an answer by its log-likelihood given the
prompt, rendered as training renders it (worker/data_pairs.py: the chat template when the tokenizer has one); a
reward model (objective ``reward``: a one-output classifier head) by its score of prompt and answer. The same
figure for the base, the SFT parent and the DPO child says whether preference training moved the model the
people's way, and by how much, beyond noise (a binomial standard error over the pairs)."""
from __future__ import annotations

import math
from pathlib import Path

from worker.data import stored_eval
from worker.data_pairs import _read, records

MAX_EXAMPLES = 200  # per-pair results kept with the evaluation (the figures cover every pair)


def _texts(record: dict, tokenizer, side: str) -> tuple[str, str]:
    """(the prompt as the model sees it before the answer, the prompt with the answer)."""
    if isinstance(record["prompt"], str):
        return record["prompt"], record["prompt"] + record[side]
    prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    return prompt, tokenizer.apply_chat_template(record["prompt"] + record[side], tokenize=False)


def _answer_logprob(model, tokenizer, prompt: str, full: str, max_len: int) -> float:
    """Summed log-probability of the answer's tokens (those after the prompt), the sequence cut at ``max_len``."""
    import torch

    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_len]
    start = min(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), ids.shape[1] - 1)
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device)).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:].to(logp.device)
    return float(logp[start - 1:].gather(-1, targets[start - 1:, None]).sum()) if start > 0 else \
        float(logp.gather(-1, targets[:, None]).sum())


def _reward(model, tokenizer, full: str, max_len: int) -> float:
    import torch

    batch = tokenizer(full, add_special_tokens=False, return_tensors="pt", truncation=True, max_length=max_len)
    with torch.no_grad():
        return float(model(**{k: v.to(model.device) for k, v in batch.items()}).logits[0, 0])


def score(model, tokenizer, path: Path, *, max_len: int, reward_model: bool, say=print) -> tuple[dict, list, str, int]:
    """Score the data set's stored eval pairs (all its rows when it has none). Returns (figures, per-pair
    examples, split, rows): ``pair_accuracy`` with its stderr and ``pair_margin`` (chosen minus rejected, in
    log-likelihood or reward units)."""
    eval_file = stored_eval(Path(path))
    rows, split = (_read(eval_file), "eval") if eval_file else (_read(Path(path)), "train")
    conversational = bool(tokenizer.chat_template)
    model.eval()
    wins, margins, examples = 0, [], []
    for i, row in enumerate(rows):
        record = records(row, unpaired=False, conversational=conversational)[0]
        scores = {}
        for side in ("chosen", "rejected"):
            prompt, full = _texts(record, tokenizer, side)
            scores[side] = _reward(model, tokenizer, full, max_len) if reward_model else \
                _answer_logprob(model, tokenizer, prompt, full, max_len)
        margin = scores["chosen"] - scores["rejected"]
        wins += margin > 0
        margins.append(margin)
        if len(examples) < MAX_EXAMPLES:  # listed like a benchmark's questions (the Versions tab filters them)
            prompt = row["prompt"] if isinstance(row.get("prompt"), str) else str(row.get("prompt") or "")
            examples.append({"row": i + 1, "question": prompt[:300], "target": str(row["chosen"])[:300],
                             "answer": f"chosen {scores['chosen']:.3f} vs rejected {scores['rejected']:.3f}",
                             "chosen": round(scores["chosen"], 4), "rejected": round(scores["rejected"], 4),
                             "correct": margin > 0})
        if (i + 1) % 50 == 0:
            say(f"scored {i + 1}/{len(rows)} pairs")
    n = max(len(rows), 1)
    accuracy = wins / n
    figures = {"pair_accuracy": accuracy, "pair_accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / n),
               "pair_margin": sum(margins) / n}
    return figures, examples, split, len(rows)
