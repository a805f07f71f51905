"""Preference pairs and feedback for TRL's trainers, on the worker: canonical rows (studio/datasets/normalize.py)
as TRL's conversational records, the stored train/eval split, and what will not fit in max_length, counted here
so that nothing is cut or dropped without the job log saying so.

TRL tokenises the records itself; these are plain ``datasets.Dataset`` objects: ``prompt``, ``chosen``/``rejected``
for pairs, ``prompt``/``completion``/``label`` for unpaired feedback. With a chat template (as SFT used) they are
conversational: the prompt as messages, each reply one assistant message; without one, plain text."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from studio.datasets.messages import as_messages
from worker.data import stored_eval


@dataclass
class PairsReport:
    rows: int  # rows of the data set (pairs, or rated answers)
    train_rows: int  # records handed to the trainer (an unpaired pair gives two)
    eval_rows: int
    over_length: int  # records longer than max_seq_length tokens
    max_seq_length: int
    eval_source: str = ""
    over_length_fate: str = "truncated"  # what the trainer does with them: truncated or dropped

    def summary(self) -> str:
        parts = [f"{self.rows} rows: {self.train_rows} train, {self.eval_rows} eval records"
                 + (f" ({self.eval_source})" if self.eval_source else "")]
        if self.over_length:
            parts.append(f"{self.over_length} longer than max_seq_length {self.max_seq_length} tokens will be "
                         f"{self.over_length_fate} (raise max_seq_length to keep them whole)")
        return "; ".join(parts)


def records(row: dict, *, unpaired: bool, conversational: bool = True) -> list[dict]:
    """One canonical row as TRL's records: a pair as one record (or, ``unpaired``, as a desirable and an
    undesirable answer to the same prompt, for KTO); a feedback row as one."""
    if conversational:
        prompt = as_messages(row["prompt"])

        def _reply(text: str) -> list[dict]:
            return [{"role": "assistant", "content": text}]
    else:  # no chat template: the conversation as text, each reply as it is
        prompt = "\n\n".join(m["content"] for m in as_messages(row["prompt"])) + "\n\n"

        def _reply(text: str) -> str:
            return text
    if "completion" in row:
        return [{"prompt": prompt, "completion": _reply(row["completion"]), "label": bool(row["label"])}]
    if unpaired:
        return [{"prompt": prompt, "completion": _reply(row["chosen"]), "label": True},
                {"prompt": prompt, "completion": _reply(row["rejected"]), "label": False}]
    return [{"prompt": prompt, "chosen": _reply(row["chosen"]), "rejected": _reply(row["rejected"])}]


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _longest(record: dict, tokenizer) -> int:
    """Token length of the record's longest sequence (the prompt with its longer reply), as TRL renders it."""
    replies = [record[k] for k in ("chosen", "rejected", "completion") if k in record]
    if isinstance(record["prompt"], str):
        texts = [record["prompt"] + reply for reply in replies]
    else:
        texts = [tokenizer.apply_chat_template(record["prompt"] + reply, tokenize=False) for reply in replies]
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def build_pairs(path: Path, tokenizer, *, unpaired: bool, max_len: int, eval_split: float, seed: int,
                over_length_fate: str = "truncated"):
    """The trainer's train and eval records and a :class:`PairsReport`. A split stored with the data set
    version wins (its ``eval.jsonl``); otherwise ``eval_split`` of the rows are held out by ``seed``, a pair's
    two halves on the same side when ``unpaired``."""
    import datasets

    rows = _read(Path(path))
    eval_file = stored_eval(Path(path))
    held, source = (_read(eval_file), "the data set's stored split") if eval_file else ([], "")
    if eval_file is None and eval_split > 0 and len(rows) >= 4:
        parts = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(test_size=eval_split,
                                                                                           seed=seed)
        held = [rows[i] for i in parts["test"]["i"]]
        rows, source = [rows[i] for i in parts["train"]["i"]], f"eval_split {eval_split} of the rows, seed {seed}"
    conversational = bool(tokenizer.chat_template)
    train = [r for row in rows for r in records(row, unpaired=unpaired, conversational=conversational)]
    evals = [r for row in held for r in records(row, unpaired=unpaired, conversational=conversational)]
    over = sum(_longest(r, tokenizer) > max_len for r in train + evals)
    report = PairsReport(len(rows) + len(held), len(train), len(evals), over, max_len, source, over_length_fate)
    return (datasets.Dataset.from_list(train), datasets.Dataset.from_list(evals) if evals else None, report)
