"""Row by row: check one record against the chosen format and build its canonical form.

Canonical rows (what the worker trains on):
instruction, chat -> ``{"messages": [{"role", "content"}, ...]}``; text -> ``{"text"}``;
classification -> ``{"text", "label"}`` (label always a string); preference ->
``{"prompt", "chosen", "rejected"}``. Problems name the user's own column.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import Problem
from .messages import describe, to_messages

_INT = re.compile(r"-?\d+")


@dataclass
class Row:
    """The outcome for one record: its canonical form plus what the stats need, or problems."""

    canonical: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    chars: int = 0
    turns: int = 0
    system: bool = False
    label_type: str = ""


class Normalizer:
    """Validates and converts records of one format under one mapping."""

    def __init__(self, fmt: str, mapping: dict[str, str], typed: bool, row_word: str):
        self.fmt, self.mapping, self.typed, self.row_word = fmt, mapping, typed, row_word
        self._convert = {
            "instruction": self._instruction, "chat": self._chat, "text": self._plain,
            "classification": self._classification, "preference": self._preference,
        }[fmt]

    def __call__(self, row: int, record: object) -> Row:
        """Return the :class:`Row` for ``record`` found at 1-based position ``row``."""
        out = Row()
        if not isinstance(record, dict):
            out.problems.append(Problem("not_object", row, None,
                                        f"{self.row_word} {row} is {describe(record)}, expected an object with named fields"))
            return out
        self._convert(row, record, out)
        if out.problems:
            out.canonical = None
        return out

    # -- field helpers -------------------------------------------------------------------------
    def _where(self, row: int) -> str:
        return f"{self.row_word} {row}"

    def _text(self, row: int, record: dict, name: str, out: Row, required: bool = True) -> str | None:
        column = self.mapping.get(name)
        if column is None:
            return None
        value = record.get(column)
        if value is None:
            if required:
                out.problems.append(Problem("missing_field", row, column, f"{self._where(row)}: {column} is missing"))
            return None
        if not isinstance(value, str):
            out.problems.append(Problem("wrong_type", row, column,
                                        f"{self._where(row)}: {column} is {describe(value)}, expected text"))
            return None
        if not value or value.isspace():
            if required:
                out.problems.append(Problem("empty_field", row, column, f"{self._where(row)}: {column} is empty"))
            return None
        return value

    # -- formats -------------------------------------------------------------------------------
    def _instruction(self, row: int, record: dict, out: Row) -> None:
        instruction = self._text(row, record, "instruction", out)
        extra = self._text(row, record, "input", out, required=False)
        output = self._text(row, record, "output", out)
        system = self._text(row, record, "system", out, required=False)
        if out.problems:
            return
        user = instruction + ("\n\n" + extra if extra else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        self._finish_chat(messages, system, out)

    def _chat(self, row: int, record: dict, out: Row) -> None:
        column = self.mapping["messages"]
        value = record.get(column)
        system = self._text(row, record, "system", out, required=False)
        if value is None:
            out.problems.append(Problem("missing_field", row, column, f"{self._where(row)}: {column} is missing"))
            return
        if isinstance(value, str) and not self.typed and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if not isinstance(value, list):
            out.problems.append(Problem("wrong_type", row, column,
                                        f"{self._where(row)}: {column} is {describe(value)}, expected a list of messages"))
            return
        if not value:
            out.problems.append(Problem("empty_field", row, column, f"{self._where(row)}: {column} is an empty list"))
            return
        messages, problem = to_messages(value, column, row, self._where(row))
        if problem:
            out.problems.append(problem)
            return
        if not out.problems:
            self._finish_chat(messages, system if messages[0]["role"] != "system" else None, out)

    @staticmethod
    def _finish_chat(messages: list[dict], system: str | None, out: Row) -> None:
        if system:
            messages.insert(0, {"role": "system", "content": system})
        out.canonical = {"messages": messages}
        out.chars = sum(len(m["content"]) for m in messages)
        out.system = messages[0]["role"] == "system"
        out.turns = len(messages) - out.system

    def _plain(self, row: int, record: dict, out: Row) -> None:
        text = self._text(row, record, "text", out)
        if text is not None:
            out.canonical, out.chars = {"text": text}, len(text)

    def _classification(self, row: int, record: dict, out: Row) -> None:
        text = self._text(row, record, "text", out)
        label = self._label(row, record, out)
        if text is not None and label is not None:
            out.canonical, out.chars = {"text": text, "label": label}, len(text)

    def _label(self, row: int, record: dict, out: Row) -> str | None:
        column = self.mapping["label"]
        value = record.get(column)
        where = self._where(row)
        if value is None:
            out.problems.append(Problem("missing_field", row, column, f"{where}: {column} is missing"))
        elif isinstance(value, bool):
            out.label_type = "bool"
            return "true" if value else "false"
        elif isinstance(value, int) or isinstance(value, float) and value.is_integer():
            out.label_type = "int"
            return str(int(value))
        elif isinstance(value, str) and value.strip():
            label = value.strip()
            out.label_type = "int" if not self.typed and _INT.fullmatch(label) else "str"
            return label
        elif isinstance(value, str):
            out.problems.append(Problem("empty_field", row, column, f"{where}: {column} is empty"))
        else:
            hint = "; multi-label classification is not supported" if isinstance(value, list) else ""
            out.problems.append(Problem("wrong_type", row, column,
                                        f"{where}: {column} is {describe(value)}, expected text or a whole number{hint}"))
        return None

    def _preference(self, row: int, record: dict, out: Row) -> None:
        values = [self._text(row, record, name, out) for name in ("prompt", "chosen", "rejected")]
        if not out.problems:
            out.canonical = dict(zip(("prompt", "chosen", "rejected"), values))
            out.chars = sum(len(v) for v in values)
