"""Row by row: check one record against the chosen format and build its canonical form.

Canonical rows (what the worker trains on):
instruction, chat -> ``{"messages": [{"role", "content"}, ...]}``; text -> ``{"text"}``;
classification -> ``{"text", "label"}`` (label always a string); preference ->
``{"prompt", "chosen", "rejected"}``; feedback -> ``{"prompt", "completion", "label"}`` (label true/false);
multiple_choice and qa -> see studio/datasets/benchmark_rows.py. The
prompt is text (one user turn) or the conversation so far (messages ending with the user's turn); chosen,
rejected and completion are the reply's text. Problems name the user's own column.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .benchmark_rows import BenchmarkRows
from .errors import Problem
from .messages import check_order, describe, parse_items, to_messages

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


class Normalizer(BenchmarkRows):
    """Validates and converts records of one format under one mapping (the benchmark formats' checks are
    in studio/datasets/benchmark_rows.py)."""

    def __init__(self, fmt: str, mapping: dict[str, str], typed: bool, row_word: str):
        self.fmt, self.mapping, self.typed, self.row_word = fmt, mapping, typed, row_word
        self._convert = {
            "instruction": self._instruction, "chat": self._chat, "text": self._plain,
            "classification": self._classification, "preference": self._preference, "feedback": self._feedback,
            "multiple_choice": self._multiple_choice, "qa": self._qa,
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

    # -- preference pairs and feedback: a prompt and replies --------------------------------------------
    def _preference(self, row: int, record: dict, out: Row) -> None:
        prompt = self._prompt(row, record, out)
        chosen, rejected = self._reply(row, record, "chosen", out), self._reply(row, record, "rejected", out)
        if out.problems:
            return
        prompt = self._settle_prompt(row, prompt, [("chosen", chosen[0]), ("rejected", rejected[0])], out)
        if out.problems:
            return
        if chosen[1].strip() == rejected[1].strip():
            column = self.mapping["rejected"]
            out.problems.append(Problem("identical_pair", row, column, f"{self._where(row)}: {self.mapping['chosen']} "
                                        f"and {column} are the same answer; a pair must differ (fix one, or drop "
                                        "the row)"))
            return
        out.canonical = {"prompt": prompt, "chosen": chosen[1], "rejected": rejected[1]}
        out.chars = _chars(prompt) + len(chosen[1]) + len(rejected[1])

    def _feedback(self, row: int, record: dict, out: Row) -> None:
        prompt = self._prompt(row, record, out)
        completion = self._reply(row, record, "completion", out)
        label = self._desirable(row, record, out)
        if out.problems:
            return
        prompt = self._settle_prompt(row, prompt, [("completion", completion[0])], out)
        if not out.problems:
            out.canonical = {"prompt": prompt, "completion": completion[1], "label": label}
            out.chars = _chars(prompt) + len(completion[1])

    def _value(self, record: dict, column: str):
        """A cell; from an untyped reader (CSV) a cell holding a JSON list of messages is read as one."""
        value = record.get(column)
        if isinstance(value, str) and not self.typed and value.strip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def _messages(self, row: int, column: str, value: list, out: Row) -> list[dict] | None:
        if not value:
            out.problems.append(Problem("empty_field", row, column, f"{self._where(row)}: {column} is an empty list"))
            return None
        messages, problem = parse_items(value, column, row, self._where(row))
        if problem:
            out.problems.append(problem)
        return messages

    def _text_or_messages(self, row: int, column: str, value, out: Row) -> tuple[str | None, list[dict] | None]:
        """A prompt or reply cell: (its text, None), (None, its chat messages), or (None, None) with the problem
        recorded (empty text, neither text nor a list, or messages that do not parse)."""
        where = self._where(row)
        if isinstance(value, str):
            if not value.strip():
                out.problems.append(Problem("empty_field", row, column, f"{where}: {column} is empty"))
                return None, None
            return value, None
        if not isinstance(value, list):
            out.problems.append(Problem("wrong_type", row, column, f"{where}: {column} is {describe(value)}, expected "
                                        "text or a list of chat messages"))
            return None, None
        return None, self._messages(row, column, value, out)

    def _prompt(self, row: int, record: dict, out: Row) -> list[dict] | None:
        """The prompt as messages ending with the user's turn; None when the row gives none (the replies'
        conversations may hold it)."""
        column = self.mapping.get("prompt")
        value = self._value(record, column) if column else None
        where = self._where(row)
        if value is None:
            return None
        text, messages = self._text_or_messages(row, column, value, out)
        if text is not None:
            return [{"role": "user", "content": text}]
        if messages is None:
            return None
        if messages[-1]["role"] != "user":
            out.problems.append(Problem("turn_order", row, f"{column}[{len(messages) - 1}]", f"{where}: the last "
                                        f"message of {column} is {messages[-1]['role']!r}; a prompt ends with the "
                                        "user's turn"))
            return None
        problem = check_order([m["role"] for m in messages] + ["assistant"], column, row, where)
        if problem:
            out.problems.append(problem)
            return None
        return messages

    def _reply(self, row: int, record: dict, name: str, out: Row) -> tuple[list[dict], str] | None:
        """(the conversation before the reply, the reply's text): the reply as text, as a lone assistant message,
        or as a whole conversation that ends with it."""
        column = self.mapping[name]
        value = self._value(record, column)
        where = self._where(row)
        if value is None:
            out.problems.append(Problem("missing_field", row, column, f"{where}: {column} is missing"))
            return None
        text, messages = self._text_or_messages(row, column, value, out)
        if text is not None:
            return [], text
        if messages is None:
            return None
        if len(messages) == 1 and messages[0]["role"] == "assistant":
            return [], messages[0]["content"]
        problem = check_order([m["role"] for m in messages], column, row, where)
        if problem:
            out.problems.append(problem)
            return None
        return messages[:-1], messages[-1]["content"]

    def _settle_prompt(self, row: int, prompt: list[dict] | None, contexts: list[tuple[str, list[dict]]],
                       out: Row) -> str | list[dict] | None:
        """The row's one prompt: the prompt column, or the conversation the replies begin with (they must
        agree). Text when it is one user turn, else the messages."""
        where = self._where(row)
        given = [(self.mapping[name], context) for name, context in contexts if context]
        for column, context in given[1:]:
            if context != given[0][1]:
                out.problems.append(Problem("pair_mismatch", row, column, f"{where}: {given[0][0]} and {column} hold "
                                            "different conversations before their last reply; a pair shares the "
                                            "prompt and differs only in the reply"))
                return None
        if given and prompt is not None and prompt != given[0][1]:
            column = self.mapping["prompt"]
            out.problems.append(Problem("pair_mismatch", row, column, f"{where}: {column} is not the conversation "
                                        f"{given[0][0]} begins with; give the prompt once (in {column}, or as the "
                                        "start of the conversations)"))
            return None
        prompt = given[0][1] if given else prompt
        if prompt is None:
            column = self.mapping.get("prompt")
            replies = " and ".join(self.mapping[name] for name, _ in contexts)
            fill = f"fill {column}, or give " if column else "add a prompt column, or give "
            out.problems.append(Problem("missing_field", row, column, f"{where}: no prompt: {fill}{replies} as chat "
                                        "message lists that start with the user's turn"))
            return None
        return prompt[0]["content"] if len(prompt) == 1 and prompt[0]["role"] == "user" else prompt

    def _desirable(self, row: int, record: dict, out: Row) -> bool | None:
        """A feedback label: true (desirable) or false; JSON booleans, or the words true/false."""
        column = self.mapping["label"]
        value = record.get(column)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        where = self._where(row)
        if value is None:
            out.problems.append(Problem("missing_field", row, column, f"{where}: {column} is missing"))
        else:
            what = repr(value) if isinstance(value, str) else describe(value)
            out.problems.append(Problem("wrong_type", row, column, f"{where}: {column} is {what}, expected "
                                        "true or false (is the completion desirable?). If this is not KTO feedback, "
                                        "register the file with another --format."))
        return None


def _chars(prompt: str | list[dict]) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
