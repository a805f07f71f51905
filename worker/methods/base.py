"""The method registry: what a fine-tuning method is, and how its params are parsed and described.

Stdlib only at module level: the UI process imports this to build its forms and must not pull in
torch. Each method module imports torch/peft/transformers inside its functions.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TASKS = ("causal_lm", "seq_cls")


class MethodError(ValueError):
    """A method cannot be used as asked; the message says what to change."""


def save_pretrained_only(model, out_dir: Path, **kwargs) -> None:
    """``save_pretrained`` as safetensors, keeping only weights and json (peft also writes a README)."""
    out_dir = Path(out_dir)
    readme_existed = (out_dir / "README.md").exists()
    model.save_pretrained(str(out_dir), safe_serialization=True, **kwargs)
    if not readme_existed and (out_dir / "README.md").exists():
        (out_dir / "README.md").unlink()


def _default_save(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """Write only safetensors (+ json config): peft adapters or a full transformers model."""
    save_pretrained_only(model, out_dir, state_dict=state_dict)


def _default_load(base_model, saved_dir: Path, *, trainable: bool = False):
    """Rebuild a peft model from its base plus the saved adapter directory."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, str(saved_dir), is_trainable=trainable)
    if not trainable:  # peft leaves soft-prompt embeddings trainable even in inference mode
        model.requires_grad_(False)
        model.eval()
    return model


def _no_load_kwargs(params, model_dir=None) -> dict:
    return {}


def _no_check(params, model_config: dict | None) -> None:
    return None


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: its params class, how to apply, save, reload and merge it.

    ``apply(model, params, task)`` returns the trainable model (task in ``TASKS``).
    ``load_kwargs(params, model_dir=None)`` are extra ``from_pretrained`` kwargs for the base in
    ``model_dir`` (qlora quantizes, and leaves the layers its 4-bit blocks cannot hold in full precision).
    ``describe(model)``, when set, returns a job-log line and counts for the version's metrics about what
    the method did to the base (qlora: how many weights are quantized, which layers are not).
    ``save(model, dir, state_dict=None)`` writes only safetensors + json (``state_dict``: the model's full
    weights when they are gathered from shards, as under FSDP, where the model itself holds only a shard); ``load(base, dir, trainable=False)`` rebuilds.
    ``merge(model)`` returns a plain transformers model (consumes ``model``); None if not mergeable.
    ``check(params, model_config)`` validates params against the base's config.json dict, torch-free.
    ``after_optimizer_step(model, global_step)``, when set, must be called by the training loop after
    every optimizer step and before ``zero_grad`` (AdaLoRA reallocates its rank budget there).
    ``count_as`` names another method whose apply can count parameters on the meta device.
    ``packable``: padding-free packing is correct for it (not for prompt learning: its virtual tokens
    would be shared by every example packed into a row); the studio packs causal LM data by default.
    """

    name: str
    params: type
    summary: str
    mergeable: bool
    apply: Callable[[Any, Any, str], Any]
    load_kwargs: Callable[..., dict] = _no_load_kwargs
    save: Callable[..., None] = _default_save
    load: Callable[..., Any] = _default_load
    merge: Callable[[Any], Any] | None = None
    default_training: dict = field(default_factory=dict)
    check: Callable[[Any, dict | None], None] = _no_check
    after_optimizer_step: Callable[[Any, int], None] | None = None
    describe: Callable[[Any], tuple[str, dict]] | None = None
    count_as: str | None = None
    packable: bool = True


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (one line per method module) and return it."""
    if method.mergeable != (method.merge is not None):
        raise ValueError(f"{method.name}: mergeable={method.mergeable} but merge is {method.merge!r}")
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    """The registered method called ``name``; MethodError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r}. Known methods: {', '.join(names())}.") from None


def names() -> list[str]:
    """Registered method names, in registration order."""
    return list(REGISTRY)


def check_continuation(parent_id: int, parent_method: str, method: str) -> None:
    """Refuse training ``method`` on a version trained with a method that cannot be merged, unless it is
    the same method (which then keeps training the parent's adapter)."""
    parent = get(parent_method)
    if not parent.mergeable and method != parent_method:
        mergeable = ", ".join(m.name for m in REGISTRY.values() if m.mergeable)
        raise MethodError(
            f"version {parent_id} was trained with {parent_method}, which cannot be merged into the base weights, "
            f"so {method} cannot be trained on top of it. Continue it with method {parent_method} (its "
            f"{parent_method} weights keep training), or start {method} from the base model or from a version "
            f"trained with a mergeable method ({mergeable}).")


def continuation_note(parent_id: int, parent_method: str, method: str) -> str:
    """What training ``method`` on version ``parent_id`` (trained with ``parent_method``) means for the
    lineage and for a merged export, in a sentence (check_continuation has refused what cannot work)."""
    parent, child = get(parent_method), get(method)
    if not parent.mergeable:
        return (f"Continuing version {parent_id}: its {parent_method} weights keep training; the new version "
                f"replaces them in the lineage (base → #{parent_id}'s {parent_method}, trained further).")
    what = ("the same kind of adapter, trained anew" if method == parent_method else
            f"a new {method} adapter (a method change: #{parent_id}'s {parent_method} update is fixed from now on)")
    merge = ("a merged export merges both into the weights" if child.mergeable else
             f"{method} cannot be merged, so exports give #{parent_id} merged into the base plus the {method} adapter")
    return (f"Version {parent_id} ({parent_method}) is merged into the base first, then {what} trains on top. "
            f"The lineage records base → #{parent_id} → the new version; {merge}.")


def check_task(method: str, task: str) -> None:
    """Refuse a task the studio does not know."""
    if task not in TASKS:
        raise MethodError(f"{method}: unknown task {task!r}. Use one of: {', '.join(TASKS)}.")


# ---------------------------------------------------------------- params parsing

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


def _coerce(method: str, key: str, value, tp):
    """Turn a CLI string or UI value into the field's declared type."""
    scalar, optional = _base_type(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"})):
        return None
    try:
        return convert(value, scalar)
    except (TypeError, ValueError, OverflowError):
        kind = getattr(scalar, "__name__", str(scalar))
        raise MethodError(f"{method}: {key} must be a {kind} (got {value!r}). Set --set {key}=<{kind}>.") from None


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


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _check_modules(method: str, key: str, value, meta, module_names: list[str] | None) -> None:
    """A field declared with ``metadata={"modules": presets}`` names modules of the model (or a preset)."""
    from .model_files import layer_module_names

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


def parse_params(name: str, raw: dict[str, object] | None = None, model_config: dict | None = None,
                 module_names: list[str] | None = None):
    """Build the params instance of method ``name`` from CLI strings or typed UI values.

    Unknown keys, wrong types and out-of-range values raise MethodError saying what to change.
    When ``model_config`` (the base's config.json as a dict) is given, model-dependent checks run
    too (e.g. freezing more layers than the model has); with ``module_names``
    (``model_files.module_names(dir)``) fields that name modules are checked against the model.
    """
    method = get(name)
    fields = {f.name: f for f in dataclasses.fields(method.params)}
    types = _field_types(method.params)
    values = {}
    for key, value in (raw or {}).items():
        if key not in fields:
            valid = ", ".join(fields) or "(none: this method has no parameters)"
            raise MethodError(f"{name}: unknown parameter {key!r}. Valid keys: {valid}.")
        coerced = _coerce(name, key, value, types[key])
        meta = fields[key].metadata
        if isinstance(coerced, str) and meta.get("choices"):
            coerced = coerced.lower()  # choices are lower-case; accept "PiSSA", "Both"
        _check_range(name, key, coerced, meta)
        _check_modules(name, key, coerced, meta, module_names)
        values[key] = coerced
    params = method.params(**values)
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


# ---------------------------------------------------------------- description for UI / CLI

def _type_name(tp) -> str:
    scalar, _ = _base_type(tp)
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(scalar, str(scalar))


def describe(method: Method) -> dict:
    """JSON-able description of one method: its params with defaults, ranges and help."""
    types = _field_types(method.params)
    params = []
    for f in dataclasses.fields(method.params):
        meta = f.metadata
        params.append({
            "name": f.name,
            "type": _type_name(types[f.name]),
            "default": f.default,
            "help": meta.get("help", ""),
            "min": meta.get("min"),
            "max": meta.get("max"),
            "choices": list(meta["choices"]) if meta.get("choices") else None,
        })
    return {
        "name": method.name,
        "summary": method.summary,
        "mergeable": method.mergeable,
        "packable": method.packable,
        "params": params,
        "default_training": dict(method.default_training),
    }


def describe_all() -> list[dict]:
    """Every registered method, described for the Train form and ``studio methods list --json``."""
    return [describe(m) for m in REGISTRY.values()]
