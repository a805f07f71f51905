"""GRPO's built-in rewards, torch-free: the ``reward`` setting parsed and checked before a job is queued, and the
rewards themselves as plain functions over strings (the worker wraps them for TRL's ``reward_funcs`` in
worker/rewards.py). No user code runs: a person picks from these by name and gives weights.

``reward`` is a comma-separated list of ``NAME`` or ``NAME:WEIGHT`` (weight 1 when left out):

- ``numeric_match``: 1 when the last number of the completion equals the reference's final number (``#### 42``,
  ``\\boxed{42}`` or plain ``42``; ``1,000`` = ``1000``, ``-3.50`` = ``-3.5``), else 0.
- ``exact_match``: 1 when the completion's final answer (after ``####``, inside ``\\boxed{}``, else its last
  number; the qa benchmark's extraction) equals the reference's, as text (case and spacing aside), else 0.
- ``regex:PATTERN``: 1 when the pattern is found in the completion, else 0. Write a comma that is not inside
  brackets as ``\\,``; a pattern that ends in ``:NUMBER`` takes an explicit weight after it (``regex:a:1:1``).
- ``format`` (``format=any``, ``format=hashes``, ``format=boxed``): 1 when the completion states a final answer
  the required way (``#### ANSWER`` or ``\\boxed{ANSWER}``), else 0.
- ``length`` (``length=N``): 0 up to N completion tokens, then -(tokens - N) / N, at least -1. N defaults to half
  of ``max_completion_length``.
- ``reward_model=VERSION``: the score of a reward model version trained here (objective ``reward``), loaded on
  the worker.

Each reward is named once per job (its curve is ``rewards/NAME/mean``); TRL sums them with the weights.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from studio.datasets.benchmark_rows import _NUMBER as NUMBER  # the qa benchmark's number pattern
from studio.datasets.benchmark_rows import final_answer, normalise_answer
from studio.objectives.spec import ObjectiveError

NAMES = ("numeric_match", "exact_match", "regex", "format", "length", "reward_model")
FORMATS = ("any", "hashes", "boxed")
MAX_WEIGHT = 100.0
MAX_PATTERN = 200  # characters: a pattern is matched against every completion
_WEIGHT = re.compile(r"^(.*):\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$", re.S)
_HINT = ("Use a comma list of numeric_match, exact_match, regex:PATTERN, format[=any|hashes|boxed], length[=TOKENS], "
         "reward_model=VERSION, each optionally with :WEIGHT, e.g. --set reward=numeric_match,format:0.2")


@dataclass(frozen=True)
class Reward:
    """One reward of a job: ``name`` (its curve: rewards/NAME/mean), ``arg`` (the pattern, the format, the token
    budget or the version id; None where it takes none) and its ``weight`` in TRL's weighted sum."""

    name: str
    arg: str | int | None
    weight: float

    def describe(self) -> str:
        arg = "" if self.arg is None else (f":{self.arg}" if self.name == "regex" else f"={self.arg}")
        return f"{self.name}{arg}" + ("" if self.weight == 1.0 else f":{self.weight:g}")


def split_terms(text: str) -> list[str]:
    """``text`` cut at the commas that are not inside brackets or escaped (a pattern's ``{1,3}`` stays whole)."""
    terms, depth, current, escaped = [], 0, [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    terms.append("".join(current).strip())
    return terms


def _weight(term: str, owner: str) -> tuple[str, float]:
    found = _WEIGHT.match(term)
    if not found:
        return term, 1.0
    body, raw = found.group(1).strip(), found.group(2)
    weight = float(raw)
    if not math.isfinite(weight) or weight == 0 or abs(weight) > MAX_WEIGHT:
        raise ObjectiveError(f"{owner}: reward {body!r} has weight {raw}: give a weight between -{MAX_WEIGHT:g} and "
                             f"{MAX_WEIGHT:g}, not 0 (leave the reward out instead). {_HINT}.")
    return body, weight


def _one(term: str, max_completion_length: int, owner: str) -> Reward:
    if term.startswith("regex:") or term.startswith("regex="):
        body, weight = _weight(term[len("regex:"):], owner)
        return Reward("regex", _pattern(body, owner), weight)
    body, weight = _weight(term, owner)
    name, sep, arg = body.partition("=")
    name, arg = name.strip(), arg.strip()
    if name == "regex":
        raise ObjectiveError(f"{owner}: reward {term!r}: regex needs its pattern, e.g. regex:^\\d+$. {_HINT}.")
    if name not in NAMES:
        raise ObjectiveError(f"{owner}: unknown reward {name!r}. {_HINT}.")
    if name in ("numeric_match", "exact_match"):
        if sep:
            raise ObjectiveError(f"{owner}: reward {name} takes no value (got {body!r}); write {name} or {name}:WEIGHT.")
        return Reward(name, None, weight)
    if name == "format":
        fmt = arg.lower() or "any"
        if fmt not in FORMATS:
            raise ObjectiveError(f"{owner}: format={arg!r} is not a format: use format (either), format=hashes "
                                 "(#### ANSWER) or format=boxed (\\boxed{ANSWER}).")
        return Reward(name, fmt, weight)
    if name == "length":
        budget = arg or str(max(max_completion_length // 2, 1))
        if not budget.isdigit() or not 1 <= int(budget) <= max_completion_length:
            raise ObjectiveError(f"{owner}: length={arg!r}: give the token budget as a whole number from 1 to "
                                 f"max_completion_length ({max_completion_length}), e.g. length="
                                 f"{max(max_completion_length // 2, 1)}.")
        return Reward(name, int(budget), weight)
    # reward_model
    if not arg.isdigit():
        raise ObjectiveError(f"{owner}: reward_model needs a version id, e.g. reward_model=7 (got {body!r}): a reward "
                             "model version trained here with --objective reward (studio versions list).")
    return Reward(name, int(arg), weight)


def _pattern(pattern: str, owner: str) -> str:
    if not pattern:
        raise ObjectiveError(f"{owner}: regex needs its pattern, e.g. regex:^\\d+$. {_HINT}.")
    if len(pattern) > MAX_PATTERN:
        raise ObjectiveError(f"{owner}: the regex pattern is {len(pattern)} characters long; keep it under "
                             f"{MAX_PATTERN} (it runs on every completion).")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ObjectiveError(f"{owner}: regex {pattern!r} does not compile ({e}); fix the pattern (Python re syntax; "
                             "write a comma outside brackets as \\,).") from None
    return pattern


def parse(text: str, max_completion_length: int = 256, owner: str = "grpo") -> list[Reward]:
    """The rewards of a ``reward`` setting; ObjectiveError naming the bad term and what to write otherwise (its
    message starts with ``owner``, the objective whose setting it is)."""
    terms = split_terms(text or "")
    if not any(terms):
        raise ObjectiveError(f"{owner}: reward is empty. {_HINT}.")
    if not all(terms):
        raise ObjectiveError(f"{owner}: reward {text!r} has an empty item between commas. {_HINT}.")
    out = [_one(t, max_completion_length, owner) for t in terms]
    seen: set[str] = set()
    for r in out:
        if r.name in seen:
            raise ObjectiveError(f"{owner}: reward {r.name} is given twice; name each reward once (combine two patterns "
                                 "into one regex with |, and weigh a reward with :WEIGHT).")
        seen.add(r.name)
    return out


# ---------------------------------------------------------------------------------------------- the rewards

def _number(text: str) -> float | None:
    try:
        return float(normalise_answer(text))
    except ValueError:
        return None


def numeric_match(completion: str, reference: str) -> float:
    """1.0 when the completion's last number equals the reference's final number, else 0.0 (also when the
    reference has no number)."""
    expected = final_answer(reference)
    want = _number(expected) if expected is not None else None
    numbers = NUMBER.findall(completion or "")
    got = _number(numbers[-1]) if numbers else None
    if want is None or got is None:
        return 0.0
    return 1.0 if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9) else 0.0


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def exact_match(completion: str, reference: str) -> float:
    """1.0 when the completion's final answer equals the reference's (as the qa benchmark extracts them)."""
    got, want = final_answer(completion or ""), final_answer(reference) or normalise_answer(reference or "")
    return 1.0 if got is not None and want and _same(got, want) else 0.0


_HASHES = re.compile(r"####\s*\S")
_BOXED = re.compile(r"\\boxed\{\s*[^}\s]")


def answer_format(completion: str, fmt: str = "any") -> float:
    """1.0 when the completion states its final answer the required way: ``#### ANSWER`` (hashes),
    ``\\boxed{ANSWER}`` (boxed) or either (any)."""
    text = completion or ""
    ok = {"hashes": bool(_HASHES.search(text)), "boxed": bool(_BOXED.search(text))}
    return 1.0 if (ok[fmt] if fmt in ok else any(ok.values())) else 0.0


def length_penalty(tokens: int, budget: int) -> float:
    """0 up to ``budget`` tokens, then -(tokens - budget) / budget, at least -1."""
    return 0.0 if tokens <= budget else -min((tokens - budget) / budget, 1.0)
