"""Benchmark files people have: multiple-choice sets and question/answer sets, row by row.

``multiple_choice``: a question, its choices (a list, or one column per letter as in MMLU-style CSVs:
``A, B, C, D``) and the answer as a 0-based index, a letter, or the choice's own text. Canonical:
``{"question", "choices", "answer": index, "messages"}``.

``qa``: a question and a worked answer whose final answer can be extracted (:func:`final_answer`: the
number after ``####`` as in GSM8K, a ``\\boxed{…}``, else the last number). Canonical: ``{"question",
"solution", "answer": the final answer, "messages"}``.

Both keep ``messages`` (the question as the user's turn, the right answer as the assistant's), so the same
file trains like instruction data and is measured by its loss as well as by the benchmark.
"""
from __future__ import annotations

import json
import re

from .errors import Problem
from .messages import describe

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER = re.compile(r"^\(?([A-Za-z])[).:]?$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_HASHES = re.compile(r"####\s*(.+)")
# sampled answers with one of these markers make an instruction-shaped file a qa set (detection by content)
QA_MARKERS = ("####", "\\boxed{")


def normalise_answer(text: str) -> str:
    """A final answer as compared: no thousands separators, dollar signs, surrounding space or final period;
    a number without its trailing ``.0``/zeros (``1,000.50`` -> ``1000.5``)."""
    value = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if re.fullmatch(r"-?\d+\.\d+", value):
        value = value.rstrip("0").rstrip(".")
    return value


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (nested braces kept)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_answer(text: str) -> str | None:
    """The final answer of a worked solution (or of a model's reply): after ``####`` (GSM8K), inside the last
    ``\\boxed{}``, else the last number in the text; normalised (:func:`normalise_answer`). None: none found."""
    if not isinstance(text, str):
        return None
    found = _HASHES.search(text)
    if found:
        numbers = _NUMBER.findall(found.group(1))
        value = numbers[0] if numbers else found.group(1).strip().splitlines()[0]
        return normalise_answer(value) or None
    boxed = _boxed(text)
    if boxed is not None and boxed.strip():
        return normalise_answer(boxed)
    numbers = _NUMBER.findall(text)
    return normalise_answer(numbers[-1]) if numbers else None


def looks_like_qa(answers: list) -> bool:
    """Whether sampled answers all carry an explicit final-answer marker (``####`` or ``\\boxed{``): then an
    instruction-shaped file (question + answer) is detected as a qa set."""
    texts = [a for a in answers if isinstance(a, str) and a.strip()]
    return bool(texts) and all(any(m in a for m in QA_MARKERS) for a in texts)


def letter_columns(columns: list[str]) -> list[str]:
    """Columns that each hold one choice, named by consecutive letters from A (``A``, ``B``…, or ``option A``,
    ``choice_b``…): at least two; [] when the file has none."""
    by_letter: dict[str, str] = {}
    for column in columns:
        parts = [w for w in re.split(r"[^a-z0-9]+", column.strip().lower()) if w]
        if len(parts) == 1 and len(parts[0]) == 1 or len(parts) == 2 and parts[0] in ("option", "choice") \
                and len(parts[1]) == 1:
            letter = parts[-1].upper()
            if letter in LETTERS:
                by_letter.setdefault(letter, column)
    out = []
    for letter in LETTERS:
        if letter not in by_letter:
            break
        out.append(by_letter[letter])
    return out if len(out) >= 2 else []


def choice_columns(value: str) -> list[str]:
    """The columns a ``choices`` mapping names: one column of lists, or several joined by commas."""
    return [c.strip() for c in value.split(",") if c.strip()]


class BenchmarkRows:
    """The two benchmark formats' row checks, mixed into studio.datasets.normalize.Normalizer (which gives
    ``mapping``, ``typed``, ``_where``, ``_text`` and ``_value``)."""

    def _multiple_choice(self, row: int, record: dict, out) -> None:
        question = self._text(row, record, "question", out)
        choices = self._choices(row, record, out)
        if choices is None or question is None:
            return
        answer = self._answer_index(row, record, choices, out)
        if answer is None:
            return
        out.canonical = {"question": question, "choices": choices, "answer": answer,
                         "messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": choices[answer]}]}
        out.chars = len(question) + sum(map(len, choices))

    def _choices(self, row: int, record: dict, out) -> list[str] | None:
        columns = choice_columns(self.mapping["choices"])
        where = self._where(row)
        if len(columns) > 1:  # one column per letter; an empty cell means this row has fewer choices
            values = [record.get(c) for c in columns]
            while values and (values[-1] is None or isinstance(values[-1], str) and not values[-1].strip()):
                values.pop()
            column = ", ".join(columns)
        else:
            column = columns[0]
            values = self._value(record, column)
            if values is None:
                out.problems.append(Problem("missing_field", row, column, f"{where}: {column} is missing"))
                return None
            if not isinstance(values, list):
                out.problems.append(Problem("wrong_type", row, column, f"{where}: {column} is {describe(values)}, "
                                            "expected a list of choices (a JSON list)"))
                return None
        choices = []
        for i, value in enumerate(values):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = json.dumps(value)
            if not isinstance(value, str) or not value.strip():
                what = "empty" if isinstance(value, str) or value is None else describe(value)
                out.problems.append(Problem("bad_choice", row, column, f"{where}: choice {LETTERS[i] if i < 26 else i}"
                                            f" of {column} is {what}, expected text"))
                return None
            choices.append(value.strip())
        if len(choices) < 2:
            out.problems.append(Problem("too_few_choices", row, column, f"{where}: {column} has {len(choices)} "
                                        "choice(s); a multiple-choice question needs at least two"))
            return None
        seen: dict[str, int] = {}
        for i, choice in enumerate(choices):
            if choice.casefold() in seen:
                first = seen[choice.casefold()]
                out.problems.append(Problem("duplicate_choices", row, column, f"{where}: choices {LETTERS[first]} and "
                                            f"{LETTERS[i]} of {column} are the same ({choice!r}); each choice must "
                                            "differ"))
                return None
            seen[choice.casefold()] = i
        return choices

    def _answer_index(self, row: int, record: dict, choices: list[str], out) -> int | None:
        """The answer as an index into ``choices``: a 0-based index, a letter, or a choice's own text."""
        column = self.mapping["answer"]
        value = record.get(column)
        where, n = self._where(row), len(choices)
        if isinstance(value, str) and not self.typed and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)  # a CSV cell
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is None:
            out.problems.append(Problem("missing_field", row, column, f"{where}: {column} is missing"))
        elif isinstance(value, bool) or not isinstance(value, (int, str)):
            out.problems.append(Problem("wrong_type", row, column, f"{where}: {column} is {describe(value)}, expected "
                                        "the answer's index (0-based) or letter"))
        elif isinstance(value, int):
            if 0 <= value < n:
                return value
            out.problems.append(Problem("answer_out_of_range", row, column, f"{where}: {column} is {value}, but there "
                                        f"are {n} choices (indexes 0 to {n - 1}, or letters A to {LETTERS[n - 1]})"))
        elif not value.strip():
            out.problems.append(Problem("empty_field", row, column, f"{where}: {column} is empty"))
        else:
            letter = _LETTER.match(value.strip())
            if letter:
                index = LETTERS.index(letter.group(1).upper())
                if index < n:
                    return index
                out.problems.append(Problem("answer_letter", row, column, f"{where}: {column} is {value.strip()!r}, "
                                            f"but the choices go from A to {LETTERS[n - 1]}"))
                return None
            folded = [c.casefold() for c in choices]
            if value.strip().casefold() in folded:
                return folded.index(value.strip().casefold())
            out.problems.append(Problem("answer_letter", row, column, f"{where}: {column} is {value.strip()!r}: "
                                        f"neither a letter A to {LETTERS[n - 1]}, an index 0 to {n - 1}, nor one of "
                                        "the choices"))
        return None

    def _qa(self, row: int, record: dict, out) -> None:
        question = self._text(row, record, "question", out)
        solution = record.get(self.mapping["answer"])
        if isinstance(solution, (int, float)) and not isinstance(solution, bool):
            solution = json.dumps(solution)  # a bare number is its own final answer
        else:
            solution = self._text(row, record, "answer", out)
        if question is None or solution is None:
            return
        answer = final_answer(solution)
        if answer is None:
            column = self.mapping["answer"]
            out.problems.append(Problem("no_final_answer", row, column, f"{self._where(row)}: no final answer in "
                                        f"{column}: end it with '#### <answer>', a \\boxed{{…}} or a number"))
            return
        out.canonical = {"question": question, "solution": solution, "answer": answer,
                         "messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": solution}]}
        out.chars = len(question) + len(solution)
