"""Training objectives as the studio sees them without torch: what the weights learn from, one spec per
objective, found through a registry (the second axis beside ``studio.methods``, which says which weights train).
A spec holds its params (the Train form and ``--set`` keys are generated from them, parsed by the methods' own
parser), the data formats it trains on, the model it trains (``task``), flags the rest of the studio reads instead
of its name (needs_reference_model, pairs...), its training defaults and the curves its trainer logs. The torch
half is the worker's recipe registered under the same name (worker/recipes/__init__.py). docs/objectives.md
describes each one.

Stdlib only: importing this package registers every spec and pulls in no torch, transformers or trl.
"""
from __future__ import annotations

import dataclasses

from studio.methods.params import describe_fields, parse_fields
from studio.methods.spec import MethodError
from studio.objectives.spec import (
    PLANNED,
    REGISTRY,
    TASK_ALIASES,
    ObjectiveError,
    ObjectiveSpec,
    check_data,
    check_job,
    check_method,
    check_model,
    default_for,
    flags_for,
    get,
    names,
    of_config,
    register,
    resolve,
    training_defaults,
)

# One import per objective; importing a module runs its register(...) line. This order is the UI order, and
# the first objective that takes a data format is that format's default (studio.objectives.default_for).
from studio.objectives import sft  # noqa: F401  isort: skip
from studio.objectives import classification  # noqa: F401  isort: skip
from studio.objectives import dpo  # noqa: F401  isort: skip
from studio.objectives import kto  # noqa: F401  isort: skip
from studio.objectives import orpo  # noqa: F401  isort: skip
from studio.objectives import simpo  # noqa: F401  isort: skip
from studio.objectives import reward  # noqa: F401  isort: skip
# grpo, then rloo (both registered by grpo.py: the same data, rewards and recipe), train on qa data (questions with
# a reference answer) with the rewards of studio/objectives/rewards.py (numeric_match, exact_match, regex, format,
# length, a reward-model version), weighted by name:weight.
from studio.objectives import grpo  # noqa: F401  isort: skip


def parse_params(name: str, raw: dict[str, object] | None = None, method=None):
    """The params instance of objective ``name`` from CLI strings or typed UI values (the methods' parser:
    unknown keys, wrong types, out-of-range values and choices are refused with what to set); with ``method``
    (a MethodSpec), the objective's own checks of the pair run too."""
    spec = get(name)
    try:
        params = parse_fields(name, spec.params, raw)
    except MethodError as e:
        raise ObjectiveError(str(e)) from None
    if method is not None:
        spec.check(params, method)
    return params


def param_keys(name: str) -> set[str]:
    """The ``--set`` keys of objective ``name``."""
    return {f.name for f in dataclasses.fields(get(name).params)}


def describe(spec: ObjectiveSpec) -> dict:
    """JSON-able description of one objective: its params with defaults, ranges and help, its data and flags."""
    return {
        "name": spec.name, "summary": spec.summary, "task": spec.task, "formats": list(spec.formats),
        "needs_reference_model": spec.needs_reference_model, "pairs": spec.pairs, "packable": spec.packable,
        "params": describe_fields(spec.params), "default_training": dict(spec.default_training),
        "learning_rate_scale": spec.learning_rate_scale,
    }


def describe_all() -> list[dict]:
    """Every registered objective, described for the Train form and ``studio objectives list --json``."""
    return [describe(o) for o in REGISTRY.values()]


__all__ = ["ObjectiveSpec", "ObjectiveError", "REGISTRY", "PLANNED", "TASK_ALIASES", "register", "get", "names",
           "resolve", "of_config", "default_for", "check_data", "check_method", "check_model", "check_job", "flags_for",
           "training_defaults", "parse_params", "param_keys", "describe", "describe_all"]
