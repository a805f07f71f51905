"""Dataset statistics gathered one row at a time in bounded memory.

Character lengths are counted in buckets (exact below 1024, then about 1% wide), so percentiles
are exact for short rows and within ~1% for long ones, and memory depends on the longest row, not
on the number of rows. Labels are counted exactly (their number is capped by the intake).
"""
from __future__ import annotations

from collections import Counter

EXACT_BELOW = 1024


def _bucket(n: int) -> int:
    if n < EXACT_BELOW:
        return n
    shift = n.bit_length() - 8
    return (n >> shift) << shift


class Stats:
    """Accumulates row count, character lengths, turns and labels."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.rows = 0
        self.total_chars = 0
        self.min_chars: int | None = None
        self.max_chars = 0
        self.lengths: Counter[int] = Counter()
        self.turns: Counter[int] = Counter()
        self.with_system = 0
        self.labels: Counter[str] = Counter()
        self.label_first_row: dict[str, int] = {}

    def add(self, row: int, chars: int, turns: int = 0, system: bool = False, label: str | None = None) -> None:
        """Count one valid row."""
        self.rows += 1
        self.total_chars += chars
        self.min_chars = chars if self.min_chars is None else min(self.min_chars, chars)
        self.max_chars = max(self.max_chars, chars)
        self.lengths[_bucket(chars)] += 1
        if turns:
            self.turns[turns] += 1
        self.with_system += system
        if label is not None:
            self.labels[label] += 1
            self.label_first_row.setdefault(label, row)

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile of the (bucketed) character lengths."""
        target, seen = q * self.rows, 0
        for length in sorted(self.lengths):
            seen += self.lengths[length]
            if seen >= target:
                return length
        return self.max_chars

    def to_json(self) -> dict:
        """The stats as a plain dict."""
        out: dict = {"rows": self.rows, "chars": {
            "min": self.min_chars or 0, "mean": round(self.total_chars / self.rows, 1) if self.rows else 0.0,
            "p50": self.percentile(0.5), "p95": self.percentile(0.95), "max": self.max_chars,
        }}
        if self.fmt in ("instruction", "chat"):
            n = sum(self.turns.values())
            out["turns"] = {
                "min": min(self.turns, default=0), "max": max(self.turns, default=0),
                "mean": round(sum(k * v for k, v in self.turns.items()) / n, 2) if n else 0.0,
            }
            out["with_system"] = self.with_system
        if self.fmt == "classification":
            out["labels"] = dict(self.labels.most_common())
            out["num_labels"] = len(self.labels)
        if self.fmt == "feedback":  # KTO: how many answers are desirable (label true) and undesirable
            out["feedback"] = {"desirable": self.labels["true"], "undesirable": self.labels["false"]}
        return out
