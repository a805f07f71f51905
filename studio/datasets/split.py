"""The train/eval split of a dataset version, fixed when it is registered and stored with it.

Either a fraction of the valid rows is held out — exactly ``round(ratio * n)`` rows (at least one),
chosen uniformly by ``seed`` with selection sampling, streaming in constant memory — or a separate
eval file is ingested with the train file's format and mapping. A version's folder holds
``rows.jsonl`` (the training rows) and, with a split, ``eval.jsonl``; the worker trains on the
former and evaluates on the latter. The split is part of the version: its spec enters the hash.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

ROWS_FILE = "rows.jsonl"
EVAL_FILE = "eval.jsonl"
MAX_RATIO = 0.5


@dataclass(frozen=True)
class Split:
    """How to split: ``ratio`` of the rows by ``seed``, or the rows of ``eval_file``; neither: no split."""

    ratio: float = 0.0
    seed: int = 42
    eval_file: Path | None = None
    eval_name: str | None = None  # the eval file's name as uploaded (default: its file name)

    def __post_init__(self):
        if not 0 <= self.ratio <= MAX_RATIO:
            raise DatasetError(f"eval split {self.ratio}: choose a fraction between 0 and {MAX_RATIO} "
                               "(0 keeps every row for training).")
        if self.ratio and self.eval_file is not None:
            raise DatasetError("choose either an eval split fraction or a separate eval file, not both.")
        if self.eval_file is not None and not Path(self.eval_file).is_file():
            raise DatasetError(f"{self.eval_file}: no such eval file.")

    @property
    def name(self) -> str:
        """The eval file's name as the person knows it."""
        return self.eval_name or Path(self.eval_file).name

    def spec(self, eval_hash: str = "") -> dict:
        """What is stored with the version (and hashed): {} for no split."""
        if self.ratio:
            return {"kind": "ratio", "eval_ratio": self.ratio, "seed": self.seed}
        if self.eval_file is not None:
            return {"kind": "file", "eval_file": self.name, "eval_hash": eval_hash}
        return {}


def version_hash(content_hash: str, spec: dict) -> str:
    """A version's identity: the intake's content hash, plus the split when there is one."""
    if not spec:
        return content_hash
    return hashlib.sha256(f"{content_hash}\nsplit={json.dumps(spec, sort_keys=True)}".encode()).hexdigest()


def eval_count(name: str, rows: int, ratio: float) -> int:
    """How many of ``rows`` a ``ratio`` holds out; DatasetError if that leaves no training row."""
    k = max(1, round(rows * ratio))
    if rows - k < 1:
        raise DatasetError(f"{name}: {rows} usable row(s) cannot be split into training and evaluation rows; "
                           "add rows or set the eval split to 0.")
    return k


def split_rows(src: Path, train_out: Path, eval_out: Path, rows: int, k: int, seed: int) -> None:
    """Write ``k`` of the ``rows`` lines of ``src`` to ``eval_out`` and the rest to ``train_out``.

    Selection sampling (Knuth, TAOCP vol. 2, Algorithm S): line i is held out with probability
    (still needed) / (still left), which picks exactly ``k`` lines, every k-subset equally likely,
    in one pass and constant memory; the same seed picks the same lines."""
    rng = random.Random(seed)
    needed = k
    with open(src, "rb") as f, open(train_out, "wb") as train, open(eval_out, "wb") as evals:
        for left, line in zip(range(rows, 0, -1), f):
            if needed and rng.random() * left < needed:
                evals.write(line)
                needed -= 1
            else:
                train.write(line)
