"""What can go wrong with an upload: whole-file errors and row-level problems.

A :class:`DatasetError` stops the intake (nothing usable, or the file itself is unsafe or
unreadable). A :class:`Problem` concerns one row: it is collected, counted and shown to the
person, and the row is left out of the canonical file (except for warning kinds, see
:data:`WARNING_KINDS`, whose rows are kept).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

EXAMPLES_PER_KIND = 5

# Kinds that flag a row for the person's attention without dropping it.
WARNING_KINDS = frozenset({"rare_label"})


@dataclass
class Found:
    """What the intake had learnt about a file when it stopped: its columns and, once detected, the
    format and mapping — so that a person can be offered the columns to map by hand."""

    columns: list[str] | None = None
    format: str | None = None
    mapping: dict[str, str] | None = None


class DatasetError(ValueError):
    """A problem with the whole file; the message names the file and says what to do.

    ``found`` is set by :func:`~studio.datasets.ingest` (see :class:`Found`)."""

    found: Found | None = None


@dataclass
class Problem:
    """One problem in one row; ``row`` is the 1-based line/row number in the user's file."""

    kind: str
    row: int
    field: str | None
    message: str

    def to_json(self) -> dict:
        """Plain-dict form for JSON output."""
        return asdict(self)


class ProblemLog:
    """Counts problems by kind and keeps the first few examples of each kind."""

    def __init__(self, per_kind: int = EXAMPLES_PER_KIND):
        self.per_kind = per_kind
        self.counts: Counter[str] = Counter()
        self.field_counts: Counter[tuple[str, str | None]] = Counter()
        self.examples: list[Problem] = []

    def add(self, problem: Problem) -> None:
        """Record ``problem``; only the first ``per_kind`` of a kind are kept as examples."""
        self.counts[problem.kind] += 1
        self.field_counts[(problem.kind, problem.field)] += 1
        if self.counts[problem.kind] <= self.per_kind:
            self.examples.append(problem)

    def extend(self, problems) -> None:
        """Record several problems."""
        for problem in problems:
            self.add(problem)

    def sorted_examples(self) -> list[Problem]:
        """Examples ordered by row, then kind."""
        return sorted(self.examples, key=lambda p: (p.row, p.kind))

    def error_kinds(self) -> dict[str, int]:
        """Counts of the kinds that drop rows (warnings excluded)."""
        return {k: n for k, n in self.counts.items() if k not in WARNING_KINDS}
