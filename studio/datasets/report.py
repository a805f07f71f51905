"""The intake report and the human sentences built from it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import WARNING_KINDS, Problem, ProblemLog

# kind -> (noun phrase after a count, predicate after "all N rows"); {f} is the column name.
KIND_TEXT = {
    "bad_json": ("bad JSON", "are not valid JSON"),
    "not_object": ("not an object", "are not JSON objects"),
    "missing_field": ("missing {f}", "have no {f}"),
    "empty_field": ("empty {f}", "have an empty {f}"),
    "wrong_type": ("wrong type in {f}", "have the wrong type in {f}"),
    "unknown_role": ("unknown role", "have a message with an unknown role"),
    "missing_content": ("missing content", "have a message without content"),
    "turn_order": ("turns out of order", "have turns out of order"),
    "ragged_row": ("ragged row", "have the wrong number of fields"),
    "bad_text": ("invalid text", "contain invalid text"),
    "too_large": ("too large", "are longer than one row may be"),
    "too_deep": ("nested too deeply", "are nested too deeply"),
    "duplicate": ("duplicate", "are duplicates"),
    "inconsistent_label": ("inconsistent label", "have inconsistent labels"),
    "rare_label": ("rare label", "have a rare label"),
    "too_long": ("longer than max_seq_length", "are longer than max_seq_length for the chosen model"),
    "identical_pair": ("identical pair", "have the same chosen and rejected answer"),
    "pair_mismatch": ("pair with two prompts", "give chosen and rejected different prompts"),
    "bad_choice": ("empty or non-text choice", "have an empty or non-text choice"),
    "too_few_choices": ("fewer than two choices", "have fewer than two choices"),
    "duplicate_choices": ("duplicate choices", "have duplicate choices"),
    "answer_out_of_range": ("answer index out of range", "have an answer index out of range"),
    "answer_letter": ("answer matching no choice", "have an answer that matches no choice"),
    "no_final_answer": ("no extractable final answer", "have no extractable final answer"),
}
_BY_FIELD = {"missing_field", "empty_field", "wrong_type"}
_LINE_KINDS = {"bad_json", "ragged_row"}
_INDEX = re.compile(r"\[\d+\]")


def problem_groups(log_or_problems: ProblemLog) -> list[tuple[str, str | None, int, list[int]]]:
    """Group problems by kind (and by column for field kinds): (kind, field, count, example rows)."""
    groups: dict[tuple[str, str | None], list] = {}
    for (kind, fld), n in log_or_problems.field_counts.items():
        key = (kind, _INDEX.sub("", fld) if kind in _BY_FIELD and fld else None)
        groups.setdefault(key, [0, []])[0] += n
    for p in log_or_problems.sorted_examples():
        key = (p.kind, _INDEX.sub("", p.field) if p.kind in _BY_FIELD and p.field else None)
        groups[key][1].append(p.row)
    ordered = sorted(groups.items(), key=lambda g: (g[1][1][:1] or [0], g[0][0]))  # by first example row
    return [(k, f, n, rows) for (k, f), (n, rows) in ordered]


def _rows_text(kind: str, n: int, rows: list[int]) -> str:
    more = ", …" if n > len(rows[:5]) else ""
    lines = [getattr(r, "line", None) for r in rows[:5]]
    if rows and None not in lines:  # CSV: data rows, and the lines they start on ("rows 4, 9 (lines 5, 11)")
        if n == 1:
            return f"row {int(rows[0])}, line {lines[0]}"
        return f"rows {', '.join(str(int(r)) for r in rows[:5])}{more} (lines {', '.join(map(str, lines))}{more})"
    word = "line" if kind in _LINE_KINDS else "row"
    shown = ", ".join(map(str, rows[:5])) + more
    return f"{word}{'s' if n > 1 else ''} {shown}"


def group_text(kind: str, fld: str | None, n: int, rows: list[int]) -> str:
    """"2 empty output (rows 4, 9)"."""
    noun = KIND_TEXT.get(kind, (kind.replace("_", " "), ""))[0].format(f=fld or "field")
    return f"{n} {noun} ({_rows_text(kind, n, rows)})"


def no_valid_rows_message(name: str, total: int, log: ProblemLog) -> str:
    """Why a file has zero usable rows, e.g. 'all 20 rows have an empty output'."""
    groups = [g for g in problem_groups(log) if g[0] not in WARNING_KINDS]
    for kind, fld, n, rows in groups:
        if n >= total and kind in KIND_TEXT:
            what = KIND_TEXT[kind][1].format(f=fld or "field")
            return (f"{name} has no usable rows: all {total} rows {what} "
                    f"({_rows_text(kind, n, rows)}). Fix the file and upload it again.")
    parts = ", ".join(group_text(*g) for g in groups)
    return f"{name} has no usable rows out of {total}: {parts}. Fix the file and upload it again."


@dataclass
class IntakeReport:
    """What the intake found: format, mapping, counts, problems, preview, stats and hash."""

    original_name: str
    file_type: str
    format: str
    mapping: dict[str, str]
    total_rows: int
    valid_rows: int
    problem_counts: dict[str, int]
    problems: list[Problem]
    preview: list[dict]
    stats: dict
    content_hash: str
    canonical_path: Path
    problem_groups: list[tuple[str, str | None, int, list[int]]] = field(default_factory=list)
    source_digest: str = ""  # SHA-256 of the uploaded (decompressed) bytes: versions of one upload share it
    columns: list[str] = field(default_factory=list)  # the file's columns, for mapping by hand
    too_long_lengths: list[int] = field(default_factory=list)  # token lengths of the rows left out as too long

    def to_json(self) -> dict:
        """A JSON-serialisable dict of the whole report."""
        return {
            "original_name": self.original_name, "file_type": self.file_type, "format": self.format,
            "mapping": dict(self.mapping), "total_rows": self.total_rows, "valid_rows": self.valid_rows,
            "problem_counts": dict(self.problem_counts), "problems": [p.to_json() for p in self.problems],
            "preview": list(self.preview), "stats": self.stats, "content_hash": self.content_hash,
            "canonical_path": str(self.canonical_path), "source_digest": self.source_digest,
            "columns": list(self.columns), "summary": self.summary(),
        }

    def summary(self) -> str:
        """Human text: '812 rows, 3 bad: 2 empty output (rows 4, 9), 1 bad JSON (line 17)'."""
        bad = self.total_rows - self.valid_rows
        errors = [group_text(*g) for g in self.problem_groups if g[0] not in WARNING_KINDS]
        warnings = [group_text(*g) for g in self.problem_groups if g[0] in WARNING_KINDS]
        text = f"{self.total_rows} rows"
        text += f", {bad} bad: " + ", ".join(errors) if bad else ", all valid"
        if warnings:
            text += "; warnings: " + ", ".join(warnings)
        return text
