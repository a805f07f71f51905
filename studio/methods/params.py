"""A method's params from CLI strings or form values, and its description for the Train form and the CLI."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from studio.methods._common import split_list
from studio.methods.spec import REGISTRY, MethodError, MethodSpec, get

_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}


def _field_types(params_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(params_cls)


def _base_type(tp) -> tuple[type, bool]:
    """(scalar type, optional?) for ``int``, ``int | None``, ``Optional[int]``."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return tp, False


def convert(value, scalar: type):
    """A CLI string or UI value as ``scalar`` (bool, int, float or str): the one converter the studio uses
    for method parameters and training settings alike. Booleans: true/false, 1/0, yes/no, on/off, y/n;
    integers: whole numbers, also written as a float ("1e3", "16.0"). ValueError when it is not one."""
    if scalar is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if scalar is int:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    if scalar is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    if scalar is str:
        if isinstance(value, (list, tuple)):  # the UI may send a multi-select
            return ",".join(str(v).strip() for v in value)
        return str(value).strip()
    return value


def not_convertible(key: str, scalar: type, value) -> str:
    """The one message for a value the converter refused, for method parameters and training settings alike."""
    kind = getattr(scalar, "__name__", str(scalar))
    article = "an" if kind[:1] in "aeiou" else "a"
    return f"{key} must be {article} {kind} (got {value!r}). Set --set {key}=<{kind}>."


def _coerce(method: str, key: str, value, tp):
    """Turn a CLI string or UI value into the field's declared type."""
    scalar, optional = _base_type(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"})):
        return None
    try:
        return convert(value, scalar)
    except (TypeError, ValueError, OverflowError):
        raise MethodError(f"{method}: {not_convertible(key, scalar, value)}") from None


def _check_range(method: str, key: str, value, meta) -> None:
    """Enforce the min/max/choices declared in the field metadata."""
    if value is None:
        return
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if lo is not None and value < lo:
        raise MethodError(f"{method}: {key} must be >= {lo} (got {value}). Set --set {key}={lo} or higher.")
    if hi is not None and value > hi:
        raise MethodError(f"{method}: {key} must be <= {hi} (got {value}). Set --set {key}={hi} or lower.")
    if choices is not None and value not in choices:
        options = ", ".join(str(c) for c in choices)
        raise MethodError(f"{method}: {key} must be one of {options} (got {value!r}). Set --set {key}={choices[0]}.")


def _check_modules(method: str, key: str, value, meta, module_names: list[str] | None) -> None:
    """A field declared with ``metadata={"modules": presets}`` names modules of the model (or a preset)."""
    from studio.methods.model_files import layer_module_names

    presets = meta.get("modules")
    if presets is None or module_names is None or not isinstance(value, str) or value in presets:
        return
    missing = [w for w in split_list(value) if not any(n == w or n.endswith("." + w) for n in module_names)]
    if missing:
        options = f"one of {', '.join(presets)} or " if presets else ""
        raise MethodError(
            f"{method}: {key} names {', '.join(missing)}, which the model does not have. Its blocks contain: "
            f"{', '.join(layer_module_names(module_names))}. Set --set {key}= to {options}a comma list of these names."
        )


def parse_fields(owner: str, params_cls: type, raw: dict[str, object] | None = None,
                 module_names: list[str] | None = None):
    """An instance of the frozen params dataclass ``params_cls`` from CLI strings or typed UI values, checked
    against its fields' metadata (type, ``min``/``max``, ``choices``, ``modules``): the one parser for every
    declared params class, a method's (``parse_params``) or a training objective's (``studio.objectives``).
    Errors are MethodError naming ``owner``, the key and what to set."""
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    types = _field_types(params_cls)
    values = {}
    for key, value in (raw or {}).items():
        if key not in fields:
            valid = ", ".join(fields) or "(none: it has no parameters)"
            raise MethodError(f"{owner}: unknown parameter {key!r}. Valid keys: {valid}.")
        coerced = _coerce(owner, key, value, types[key])
        meta = fields[key].metadata
        if isinstance(coerced, str) and meta.get("choices"):
            coerced = coerced.lower()  # choices are lower-case; accept "PiSSA", "Both"
        _check_range(owner, key, coerced, meta)
        _check_modules(owner, key, coerced, meta, module_names)
        values[key] = coerced
    return params_cls(**values)


def parse_params(name: str, raw: dict[str, object] | None = None, model_config: dict | None = None,
                 module_names: list[str] | None = None):
    """Build the params instance of method ``name`` from CLI strings or typed UI values.

    Unknown keys, wrong types and out-of-range values raise MethodError saying what to change.
    When ``model_config`` (the base's config.json as a dict) is given, model-dependent checks run
    too (e.g. freezing more layers than the model has); with ``module_names``
    (``model_files.module_names(dir)``) fields that name modules are checked against the model.
    """
    method = get(name)
    params = parse_fields(name, method.params, raw, module_names)
    method.check(params, model_config)
    return params


def with_context(params, **context):
    """Fill params fields that come from the training run (metadata ``context``) when left unset.

    AdaLoRA's ``total_step`` is declared with ``metadata={"context": "total_steps"}``; the recipe calls
    ``with_context(params, total_steps=max_steps)`` before ``apply``. Explicit values are kept.
    """
    updates = {}
    for f in dataclasses.fields(params):
        key = f.metadata.get("context")
        if key in context and not getattr(params, f.name):
            updates[f.name] = context[key]
    return dataclasses.replace(params, **updates) if updates else params


def _type_name(tp) -> str:
    scalar, _ = _base_type(tp)
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(scalar, str(scalar))


def describe_fields(params_cls: type) -> list[dict]:
    """JSON-able description of a params dataclass's fields: name, type, default, help, range, choices (the
    Train form's fields and ``--set`` keys; methods and objectives alike)."""
    types = _field_types(params_cls)
    return [{
        "name": f.name,
        "type": _type_name(types[f.name]),
        "default": f.default,
        "help": f.metadata.get("help", ""),
        "min": f.metadata.get("min"),
        "max": f.metadata.get("max"),
        "choices": list(f.metadata["choices"]) if f.metadata.get("choices") else None,
    } for f in dataclasses.fields(params_cls)]


def describe(method: MethodSpec) -> dict:
    """JSON-able description of one method: its params with defaults, ranges and help."""
    return {
        "name": method.name,
        "summary": method.summary,
        "mergeable": method.mergeable,
        "packable": method.packable,
        "params": describe_fields(method.params),
        "default_training": dict(method.default_training),
    }


def describe_all() -> list[dict]:
    """Every registered method, described for the Train form and ``studio methods list --json``."""
    return [describe(m) for m in REGISTRY.values()]
