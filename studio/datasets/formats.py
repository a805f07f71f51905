"""The dataset formats, their fields and column aliases, and format detection.

Detection looks at the column names only, trying the formats in :data:`DETECTION_ORDER`; the first
whose required fields all have a column wins. A column matches a field by its whole name (any case,
``Question``) or, failing that, by one of its words (``Correct Answer`` -> output). A person can override
both the format and the mapping (canonical field -> their column).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .benchmark_rows import choice_columns, letter_columns
from .errors import DatasetError


@dataclass(frozen=True)
class Field:
    """A canonical field and the column names accepted for it, most preferred first."""

    name: str
    aliases: tuple[str, ...]
    required: bool = True


PROMPT_ALIASES = ("instruction", "prompt", "question", "query")
TEXT_ALIASES = ("text", "content", "sentence")
SYSTEM = Field("system", ("system", "system_prompt"), required=False)

FIELDS: dict[str, tuple[Field, ...]] = {
    "instruction": (
        Field("instruction", PROMPT_ALIASES),
        Field("input", ("input", "context"), required=False),
        Field("output", ("output", "completion", "response", "answer")),
        SYSTEM,
    ),
    "chat": (Field("messages", ("messages", "conversations", "conversation")), SYSTEM),
    "text": (Field("text", TEXT_ALIASES),),
    "classification": (Field("text", TEXT_ALIASES), Field("label", ("label", "labels", "class", "category"))),
    # pairs for DPO, ORPO, SimPO and reward models; without a prompt, chosen and rejected are conversations
    "preference": (Field("prompt", ("prompt", "instruction", "question", "query"), required=False),
                   Field("chosen", ("chosen",)), Field("rejected", ("rejected",))),
    # unpaired thumbs up / down for KTO: the label is true (desirable) or false
    "feedback": (Field("prompt", PROMPT_ALIASES), Field("completion", ("completion", "response", "output", "answer")),
                 Field("label", ("label", "labels", "desirable", "kto_label", "thumbs_up"))),
    # benchmarks (studio/datasets/benchmark_rows.py): choices are one column of lists or one column per letter
    "multiple_choice": (Field("question", ("question", "prompt", "query", "instruction", "input", "stem")),
                        Field("choices", ("choices", "options")),
                        Field("answer", ("answer", "label", "target", "correct", "gold", "answer_key"))),
    # question + worked answer with an extractable final answer (#### N, \boxed{}, the last number)
    "qa": (Field("question", PROMPT_ALIASES), Field("answer", ("answer", "solution", "output", "response"))),
}
FORMATS: tuple[str, ...] = ("instruction", "chat", "text", "classification", "preference", "feedback",
                            "multiple_choice", "qa")
# feedback before instruction: prompt + completion would otherwise be read as an instruction pair, its label lost;
# multiple_choice before both (its answer column would read as an output); qa is told from instruction by the
# answers themselves (benchmark_rows.looks_like_qa), never by the column names alone
DETECTION_ORDER = ("preference", "multiple_choice", "feedback", "chat", "instruction", "classification", "text")
_ALL_ALIASES = frozenset(a for fields in FIELDS.values() for f in fields for a in f.aliases)


def is_field_name(key: str) -> bool:
    """True if ``key`` is a column name some format accepts."""
    return key.strip().lower() in _ALL_ALIASES


def accepted_names() -> str:
    """Human description of the accepted column names per format."""
    parts = []
    for fmt in FORMATS:
        fields = []
        for f in FIELDS[fmt]:
            names = "|".join(f.aliases)
            fields.append(names if f.required else f"[{names}]")
        parts.append(f"{fmt}: {' + '.join(fields)}")
    return "; ".join(parts)


def words(column: str) -> list[str]:
    """A column name's words, lowercase: 'Correct Answer' / 'correct_answer' / 'correctAnswer' -> correct, answer."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column.strip())
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def _column_for(field: Field, columns: list[str], used: set[str]) -> str | None:
    """The column for ``field``: a whole-name match first (any case), then a column that has an alias as
    one of its words (the shortest such name: 'Correct Answer' before 'Incorrect Answer 1')."""
    free = [c for c in columns if c not in used]
    for alias in field.aliases:
        for column in free:
            if column.strip().lower() == alias or "_".join(words(column)) == alias:
                return column
    for alias in field.aliases:
        by_word = [c for c in free if alias in words(c)]
        if by_word:
            return min(by_word, key=lambda c: (len(words(c)), free.index(c)))
    return None


def match_columns(fmt: str, columns: list[str]) -> dict[str, str]:
    """Map the fields of ``fmt`` to ``columns`` by alias; fields without a column are left out."""
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for field in FIELDS[fmt]:
        column = _column_for(field, columns, used)
        if column is None and fmt == "multiple_choice" and field.name == "choices":
            lettered = letter_columns([c for c in columns if c not in used])  # MMLU-style A, B, C, D columns
            column = ",".join(lettered) or None
        if column is not None:
            mapping[field.name] = column
            used.update(choice_columns(column) if field.name == "choices" else [column])
    return mapping


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["instruction=question", "output=answer"]`` -> ``{"instruction": "question", ...}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise DatasetError(f"--map {pair!r}: expected FIELD=COLUMN, e.g. --map instruction=question; "
                               f"fields per format: {_fields_per_format()}.")
        if field.strip() in out:
            raise DatasetError(f"--map names the field {field.strip()!r} twice; give one column per field.")
        out[field.strip()] = column.strip()
    return out


def _missing(fmt: str, mapping: dict[str, str]) -> list[Field]:
    return [f for f in FIELDS[fmt] if f.required and f.name not in mapping]


def detect(name: str, columns: list[str], fmt: str = "auto",
           mapping: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Return ``(format, mapping)`` for a file with ``columns``; raise DatasetError if none fits."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(f"{name}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if mapping:
        return _check_mapping(name, columns, fmt, dict(mapping))
    candidates = DETECTION_ORDER if fmt == "auto" else (fmt,)
    for candidate in candidates:
        found = match_columns(candidate, columns)
        if not _missing(candidate, found):
            return candidate, found
    raise DatasetError(_unrecognised(name, columns, None if fmt == "auto" else fmt))


def _check_mapping(name, columns, fmt, mapping) -> tuple[str, dict[str, str]]:
    named = [c for field, value in mapping.items() for c in (choice_columns(value) if field == "choices" else [value])]
    absent = [c for c in named if c not in columns]
    if absent:
        raise DatasetError(
            f"{name}: the mapping names column(s) {', '.join(map(repr, absent))} that the file does "
            f"not have; columns found: {_list(columns)}."
        )
    if fmt == "auto":
        fmt = next((f for f in DETECTION_ORDER if _fits(f, mapping)), "")
        if not fmt:
            raise DatasetError(
                f"{name}: the mapping fields {', '.join(sorted(mapping))} do not make up any format; "
                f"expected fields per format: {_fields_per_format()}."
            )
    unknown = sorted(set(mapping) - {f.name for f in FIELDS[fmt]})
    missing = _missing(fmt, mapping)
    if unknown or missing:
        raise DatasetError(
            f"{name}: a {fmt} mapping needs the fields {_fields_per_format(fmt)}"
            + (f"; unknown field(s): {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(f.name for f in missing)}" if missing else "") + "."
        )
    return fmt, mapping


def _fits(fmt: str, mapping: dict[str, str]) -> bool:
    names = {f.name for f in FIELDS[fmt]}
    return set(mapping) <= names and not _missing(fmt, mapping)


def _fields_per_format(only: str | None = None) -> str:
    fmts = (only,) if only else FORMATS
    return "; ".join(
        f"{fmt}: " + ", ".join(f.name if f.required else f"[{f.name}]" for f in FIELDS[fmt]) for fmt in fmts
    )


def _list(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns) if columns else "(none)"


SUGGESTED = 3  # columns offered for a missing field
# Words that suggest a field without being safe to map on their own (a suggestion, never an automatic match).
HINTS = {
    "instruction": ("ask", "problem", "task", "user", "human", "request", "prompt", "question", "q"),
    "output": ("reply", "target", "solution", "gold", "correct", "result", "assistant", "bot", "gpt", "a", "reference"),
    "text": ("body", "review", "document", "passage", "article", "message", "tweet", "comment"),
    "label": ("sentiment", "target", "tag", "y", "gold", "rating"),
    "messages": ("dialog", "dialogue", "chat", "turns", "history"),
    "prompt": ("question", "instruction", "query", "input"),
    "chosen": ("preferred", "better", "winner", "good"),
    "rejected": ("dispreferred", "worse", "loser", "bad"),
    "completion": ("reply", "response", "answer", "output", "assistant"),
    "choices": ("option", "options", "alternatives", "candidates"),
    "answer": ("correct", "key", "gold", "solution", "target"),
}


def likely_columns(field: Field, columns: list[str], used: set[str]) -> list[str]:
    """The few columns most likely to hold ``field``: names closest to its aliases, then the rest in order."""
    free = [c for c in columns if c not in used]

    hints = set(HINTS.get(field.name, ()))

    def closeness(column: str) -> float:
        names = words(column) or [column.strip().lower()]
        if hints & set(names):
            return 2.0
        return max(difflib.SequenceMatcher(None, w, alias).ratio() for w in names for alias in field.aliases)
    return sorted(free, key=lambda c: -closeness(c))[:SUGGESTED]


def _unrecognised(name: str, columns: list[str], fmt: str | None) -> str:
    """Short: the format closest to the columns, the roles found, the missing ones, and for each the few
    columns most likely to fill it, as a --map to copy. Never a dump of every column name."""
    candidates = (fmt,) if fmt else DETECTION_ORDER
    matched = {f: match_columns(f, columns) for f in candidates}
    # the closest format: most fields found, fewest required ones missing (ties: detection order)
    best = max(candidates, key=lambda f: (len(matched[f]) - len(_missing(f, matched[f])), -candidates.index(f)))
    found = matched[best]
    missing = _missing(best, found)
    target = f"the {fmt} format" if fmt else "any known format"
    shown = _list(columns) if len(columns) <= 8 else f"{len(columns)} columns"
    if not found and not fmt:  # nothing recognised: what each format accepts
        return (f"{name}: the columns do not match {target}. Columns found: {shown}. Accepted column names — "
                f"{accepted_names()}. Rename the columns in the file or map them (--map FIELD=COLUMN).")
    have = ", ".join(f"{k} ← {v!r}" for k, v in found.items()) or "no field"
    lead = f"For {fmt}" if fmt else f"Closest is {best}"
    lines = [f"{name}: the columns do not match {target} (columns found: {shown}). {lead}: "
             f"found {have}; missing {', '.join(f.name for f in missing)}."]
    used = set(found.values())
    for field in missing:
        likely = likely_columns(field, columns, used)
        if likely:
            lines.append(f"For {field.name}, the likeliest columns are {', '.join(map(repr, likely))}: "
                         f"e.g. --map {field.name}=\"{likely[0]}\".")
    lines.append(f"Accepted names for {best}: {_accepted_for(best)}; other formats: "
                 f"{', '.join(f for f in FORMATS if f != best)}.")
    return " ".join(lines)


def _accepted_for(fmt: str) -> str:
    return " + ".join("|".join(f.aliases) if f.required else f"[{'|'.join(f.aliases)}]" for f in FIELDS[fmt])
