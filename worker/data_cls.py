"""Tokenisation for sequence classification, on the worker: ``{"text", "label"}`` rows -> token ids
and class indices, split into train and eval with every class on both sides where the data allows.

Rows are the canonical JSONL written by dataset intake, whose labels are always strings."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from worker.data import DataReport, stored_eval
from worker.errors import UserFacingError

_WHOLE_NUMBER = re.compile(r"-?\d+")


def label_names(values) -> list[str]:
    """The classes in a stable order: by value when every label is a whole number ("2" before "10"),
    alphabetically otherwise. The same label set always gives the same class indices."""
    names = {str(v) for v in values}
    if all(_WHOLE_NUMBER.fullmatch(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


@dataclass
class ClsReport(DataReport):
    labels: list[str] = field(default_factory=list)
    train_counts: dict[str, int] = field(default_factory=dict)
    eval_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.train_counts.items())
        return f"{super().summary()}; {len(self.labels)} classes (train: {counts})"


def tokenize_fn(tokenizer, max_len: int, label2id: dict[str, int]):
    """Batched map function: text -> ids (truncated to max_len, counted), label -> class index."""
    def fn(batch: dict) -> dict:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_len)
        if enc.encodings:  # fast tokenizers keep what truncation cut off
            truncated = [bool(e.overflowing) for e in enc.encodings]
        else:
            truncated = [len(ids) >= max_len for ids in enc["input_ids"]]
        return {**enc, "labels": [label2id[str(v)] for v in batch["label"]], "truncated": truncated}
    return fn


def build_cls(path: Path, tokenizer, *, max_len: int, eval_split: float, seed: int, cache_dir: Path,
              key: str) -> tuple:
    """Load and tokenise (cached under ``key``) and pick the eval rows. Returns (train, eval or None, ClsReport).

    Which eval rows: a split stored with the dataset version wins (its ``eval.jsonl``); otherwise
    ``eval_split`` of the rows are held out here by ``seed``, stratified so that each class keeps its share."""
    import datasets

    def load(file: Path):
        raw = datasets.load_dataset("json", data_files=str(file), split="train", cache_dir=str(cache_dir / "raw"))
        if "text" not in raw.column_names or "label" not in raw.column_names:
            raise UserFacingError(f"{file.name} has the columns {', '.join(raw.column_names)}; sequence "
                                  "classification needs 'text' and 'label'. Register a classification data set.")
        return raw

    def tokenise(raw, name: str):
        tok = raw.map(tokenize_fn(tokenizer, max_len, label2id), batched=True, batch_size=1000,
                      remove_columns=raw.column_names, cache_file_name=str(cache_dir / f"cls-{name}.arrow"),
                      desc="tokenising")
        # ClassLabel lets a split keep each class's share on both sides (stratified)
        return tok.remove_columns("truncated").cast_column("labels", classes), sum(tok["truncated"])

    raw, eval_file = load(path), stored_eval(path)
    raw_eval = load(eval_file) if eval_file else None
    labels = label_names(set(raw.unique("label")) | set(raw_eval.unique("label") if raw_eval else ()))
    if len(labels) < 2:
        raise UserFacingError(f"{path.name} has {len(labels)} class(es) ({', '.join(labels)}): a classifier needs "
                              "at least two. Add examples of the other classes.")
    label2id, classes = {name: i for i, name in enumerate(labels)}, datasets.ClassLabel(names=labels)
    train, truncated = tokenise(raw, key)
    evals, source = None, ""
    if raw_eval is not None:
        evals, eval_truncated = tokenise(raw_eval, f"{key}-eval")
        truncated, source = truncated + eval_truncated, "the data set's stored split"
    elif eval_split > 0 and len(train) >= 4:
        try:
            parts = train.train_test_split(test_size=eval_split, seed=seed, stratify_by_column="labels")
            source = f"eval_split {eval_split} of the rows by label, seed {seed}"
        except ValueError:  # too few rows for one of each class in the eval split: split at random
            parts = train.train_test_split(test_size=eval_split, seed=seed)
            source = f"eval_split {eval_split} of the rows, seed {seed}"
        train, evals = parts["train"], parts["test"]
    n_eval = len(evals) if evals is not None else 0
    report = ClsReport(len(train) + n_eval, len(train), n_eval, truncated, 0, max_len, source, labels=labels,
                       train_counts=_counts(train, labels), eval_counts=_counts(evals, labels) if n_eval else {})
    return train, evals if n_eval else None, report


def _counts(ds, labels: list[str]) -> dict[str, int]:
    counts = Counter(ds["labels"])
    return {name: counts.get(i, 0) for i, name in enumerate(labels)}
