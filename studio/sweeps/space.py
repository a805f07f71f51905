"""A sweep's search space and its metric: ``--space`` specs parsed into :class:`Dim` and checked against the
setting each one searches (the same checks as ``--set``), and the figures a trial's job records (so a sweep's
``--metric`` is refused before anything is queued when no trial could report it).

No state: nothing here reads or writes a sweep's row or its Optuna study.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, replace

from models_db import Dataset
from studio import methods, objectives
from studio.jobspec import STUDIO, TRAINING, SpecError, build_train_spec

KINDS = ("loguniform", "uniform", "int", "choice")


class SweepError(SpecError):
    """A sweep's setting is wrong; the message says which and what to change (nothing was queued)."""


# --- the search space ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dim:
    """One searched setting: ``loguniform``/``uniform``/``int`` between ``low`` and ``high``, or ``choice``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def to_json(self) -> dict:
        return {"kind": self.kind, "low": self.low, "high": self.high, "choices": list(self.choices)}

    @classmethod
    def from_json(cls, key: str, d: dict) -> Dim:
        return cls(key, d["kind"], d.get("low"), d.get("high"), tuple(d.get("choices") or ()))

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def holds(self, value) -> bool:
        """Whether ``value`` (an advised setting) lies in this dimension."""
        if self.kind == "choice":
            return value in self.choices
        try:
            return self.low <= float(value) <= self.high and (self.kind != "int" or float(value).is_integer())
        except (TypeError, ValueError):
            return False

    def grid(self) -> list | None:
        """Its values for a grid search (None: a continuous range has no grid)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return None

    def text(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(str(c) for c in self.choices)}"
        return f"{self.key}={self.kind}:{self.low:g}:{self.high:g}"


def _number(key: str, raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SweepError(f"--space {key}: its {what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SweepError(f"--space {key}: its {what} must be a finite number (got {raw!r})")
    return value


def parse_dim(text: str) -> Dim:
    """``learning_rate=loguniform:1e-5:1e-3``, ``r=choice:4,16``, ``warmup_ratio=uniform:0:0.1``, ``r=int:4:32``."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    kind, _, args = rest.partition(":")
    kind = kind.strip().lower()
    example = "e.g. --space learning_rate=loguniform:1e-5:1e-3 or --space r=choice:4,16"
    if not sep or not key or not kind:
        raise SweepError(f"--space {text!r}: expected KEY=KIND:ARGS, {example}")
    if kind not in KINDS:
        raise SweepError(f"--space {key}: unknown kind {kind!r}; use one of {', '.join(KINDS)} ({example})")
    if kind == "choice":
        choices = tuple(dict.fromkeys(c.strip() for c in args.split(",") if c.strip()))
        if not choices:
            raise SweepError(f"--space {key}: choice needs at least one value, e.g. {key}=choice:4,16")
        return Dim(key, kind, choices=choices)
    parts = args.split(":")
    if len(parts) != 2:
        raise SweepError(f"--space {key}: {kind} needs LOW:HIGH, e.g. {key}={kind}:{'1e-5:1e-3' if kind == 'loguniform' else '4:32' if kind == 'int' else '0:0.1'}")
    low, high = _number(key, parts[0], "low bound"), _number(key, parts[1], "high bound")
    if low >= high:
        raise SweepError(f"--space {key}: the bounds are reversed or equal ({low:g} >= {high:g}); give LOW:HIGH "
                         f"with LOW below HIGH, e.g. {key}={kind}:{min(low, high):g}:{max(low, high):g}")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"--space {key}: loguniform needs a positive low bound (got {low:g}); use uniform for a "
                         "range that starts at 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise SweepError(f"--space {key}: int needs whole-number bounds (got {low:g}:{high:g})")
    return Dim(key, kind, low, high)


def field_type(method: str, objective: str | None, key: str) -> type | None:
    """The scalar type of a training setting, a method parameter or an objective parameter (None: unknown key)."""
    from studio.methods.params import _base_type

    if key in TRAINING:
        return TRAINING[key].type
    if key in STUDIO:
        return STUDIO[key].type
    for params in (methods.get(method).params, objectives.get(objective).params if objective else None):
        if params is not None and key in {f.name for f in dataclasses.fields(params)}:
            return _base_type(typing.get_type_hints(params)[key])[0]
    return None


def check_dim(dim: Dim, *, model_id: int, dataset_id: int, method: str, objective: str | None,
              settings: dict) -> Dim:
    """A dimension checked against the setting it searches, with the same checks as ``--set`` (the key exists,
    the bounds and every choice lie within the field's limits); choices converted to the field's type."""
    try:
        build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings={**settings, dim.key: (
            dim.choices[0] if dim.kind == "choice" else dim.low)}, objective=objective)
    except SpecError as e:
        raise SweepError(f"--space {dim.key}: {e}") from None
    scalar = field_type(method, objective, dim.key)
    if dim.kind in ("uniform", "loguniform") and scalar is not float:
        raise SweepError(f"--space {dim.key}: it is {'a whole number' if scalar is int else f'a {scalar.__name__}'}; "
                         f"search it with int:LOW:HIGH or choice:A,B")
    if dim.kind == "int" and scalar not in (int, float):
        raise SweepError(f"--space {dim.key}: it is a {scalar.__name__}; search it with choice:A,B")
    values = dim.choices if dim.kind == "choice" else (dim.low, dim.high)
    typed = []
    for value in values:
        try:
            spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method,
                                    settings={**settings, dim.key: value}, objective=objective)
        except SpecError as e:
            raise SweepError(f"--space {dim.key}: {value}: {e}") from None
        typed.append(_value_of(spec, dim.key))
    if dim.kind == "choice":
        return replace(dim, choices=tuple(typed))
    return dim


def _value_of(spec, key: str):
    """A key's value in a built spec (training, studio, method or objective part)."""
    for part in (spec.training, spec.method_params, spec.objective_params):
        if key in part:
            return part[key]
    return getattr(spec, key)


# --- the metric -------------------------------------------------------------------------------------------------

def recorded_metrics(objective: str | None, evaluates: bool) -> list[str]:
    """The final figures a training job with this objective records (in its result's ``metrics``)."""
    out = ["train_loss"]
    if evaluates:
        spec = objectives.get(objective) if objective else None
        out += ["eval_loss", "perplexity"] if spec is None or spec.task == "causal_lm" else ["eval_loss"]
        if spec is not None and spec.task == "seq_cls":
            out += ["eval_accuracy", "eval_f1"]
        out += [f"eval_{c}" for c in (spec.curves if spec else ())]
    return list(dict.fromkeys(out))


def default_direction(metric: str) -> str:
    """Losses, perplexity and KL go down; accuracies, F1, rewards and margins go up."""
    return "maximize" if any(w in metric for w in ("accuracy", "f1", "margin", "reward")) else "minimize"


def _evaluates(ds: Dataset, spec) -> bool:
    """Whether the job holds out eval rows (worker/data.py): a stored split, or eval_split of 4 rows or more."""
    return bool(ds.eval_rows) or (spec.eval_split > 0 and ds.rows >= 4)
