"""What a training objective is, torch-free: what the weights learn from (supervised answers, preference pairs,
thumbs up/down...). One :class:`ObjectiveSpec` per objective, registered by name, beside the method axis
(``studio.methods``: which weights train). The torch half is the worker's recipe registered under the same name
(``worker/recipes/__init__.py``).

Stdlib only: the UI process, the CLI and the advisor import this and must not pull in torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from studio.methods.spec import MethodSpec

# The older ``task`` setting names an objective: jobs and versions stored before objectives existed, and
# ``studio train --task``, keep working through this table.
TASK_ALIASES = {"causal_lm": "sft", "seq_cls": "classification"}
# Objectives the studio knows it will offer but does not run yet: asking for one says why, not "unknown".
# (none now: grpo, the last one named, runs since issue 18's GRPO slice)
PLANNED: dict[str, str] = {}


class ObjectiveError(ValueError):
    """An objective cannot be used as asked; the message says what to change."""


def _no_check(params, method: MethodSpec) -> None:
    return None


def _no_stats_check(dataset_id: int, stats: dict, rows: int) -> None:
    return None


def _no_job_check(params, training: dict, session) -> None:
    return None


def _no_flags(params) -> dict:
    return {}


@dataclass(frozen=True)
class ObjectiveSpec:
    """One training objective as the studio sees it without torch.

    ``params``: a frozen dataclass whose fields carry ``help`` and ``min``/``max`` or ``choices`` metadata, like a
    method's (the Train form and ``--set`` keys are generated from it; ``studio.methods.parse_fields`` parses it).
    ``task``: the model the objective trains, ``causal_lm`` (a generating LM) or ``seq_cls`` (a head that scores
    text): the methods apply to it, the version records it, and a ``causal_lm`` objective needs a base that can
    generate. ``formats``: the data set formats it trains on (``studio.datasets.formats``), most natural first.
    ``title``, ``data_help`` and ``suggest`` word the refusals: how to name it, what data it takes, and what to
    say to a person whose data fits it. ``check(params, method)`` refuses parameter combinations;
    ``check_stats(dataset_id, stats, rows)`` refuses a data set whose stats cannot train it (one class only...).

    Flags, read wherever the studio or the worker would otherwise test the objective's name:
    ``needs_reference_model``: the loss compares the policy with a frozen reference (DPO, KTO): with a peft method
    the reference is a frozen copy of the starting adapter, otherwise the reference's log-probabilities are
    computed once before training; ``pairs``: every row is a chosen and a rejected sequence, both forwarded in one
    step (reward accuracy and margins apply); ``sequences_per_row``: sequences forwarded per row, for the memory
    estimate (KTO's second one is its KL sample); ``packable``: padding-free packing is correct for it;
    ``takes_prepended_tokens``: its trainer drops the virtual tokens prompt tuning and P-tuning prepend (a method
    with ``prepends_tokens`` is refused otherwise).

    ``check_job(params, training, session)`` refuses, at submit, what needs the job's training settings or the
    database (GRPO: a batch that does not hold whole groups of generations, a ``reward_model=`` version that is
    not a reward model). ``flags(params)`` overrides the static flags above for given params (GRPO needs a
    reference only when beta > 0, and forwards num_generations sequences per prompt): :func:`flags_for` gives
    the flags of a job, for the memory estimate.

    ``default_training`` are its own training defaults, layered over the method's; ``learning_rate_scale``
    multiplies the method's learning rate (a preference loss on top of an SFT model wants a smaller step than SFT
    itself). ``curves``: the trainer's logged figures the job records at every logging step (its ``eval_`` twins
    too) and the version keeps from the final held-out evaluation.
    """

    name: str
    params: type
    summary: str
    task: str
    formats: tuple[str, ...]
    title: str
    data_help: str
    suggest: str
    check: Callable[[Any, MethodSpec], None] = _no_check
    check_stats: Callable[[int, dict, int], None] = _no_stats_check
    check_job: Callable[[Any, dict, Any], None] = _no_job_check
    flags: Callable[[Any], dict] = _no_flags
    needs_reference_model: bool = False
    pairs: bool = False
    sequences_per_row: int = 1
    packable: bool = False
    takes_prepended_tokens: bool = True
    default_training: dict = field(default_factory=dict)
    learning_rate_scale: float = 1.0
    curves: tuple[str, ...] = ()
    samples_completions: bool = False  # its trainer samples answers as it trains: the Jobs tab lists a few


REGISTRY: dict[str, ObjectiveSpec] = {}


def register(spec: ObjectiveSpec) -> ObjectiveSpec:
    """Add ``spec`` to the registry (one line per objective module) and return it."""
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ObjectiveSpec:
    """The registered objective called ``name``; ObjectiveError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = f"Known objectives: {', '.join(names())}."
        if name in PLANNED:
            raise ObjectiveError(f"{PLANNED[name]}. {known}") from None
        raise ObjectiveError(f"unknown objective {name!r}. {known}") from None


def names() -> list[str]:
    """Registered objective names, in registration order (the UI's)."""
    return list(REGISTRY)


def resolve(objective: str | None, task: str | None) -> str | None:
    """The objective a job asks for: ``objective``, or the one its older ``task`` setting names (causal_lm: sft,
    seq_cls: classification); None when neither is given (the data set's format decides at submit)."""
    if task is not None and task not in TASK_ALIASES:
        raise ObjectiveError(f"unknown task {task!r}: use one of {', '.join(TASK_ALIASES)} (or --objective NAME)")
    if objective is None:
        return TASK_ALIASES.get(task) if task else None
    spec = get(objective)
    if task is not None and spec.task != task:
        raise ObjectiveError(f"objective {objective} trains a {spec.task} model, not {task}: drop --task (it is the "
                             f"older name of --objective), or pick objective {TASK_ALIASES[task]}.")
    return spec.name


def of_config(config: dict | None) -> str:
    """The objective a stored job or version config trains: its ``objective``, else the one its older ``task``
    names (a config from before tasks existed trains sft). ObjectiveError for a name no longer registered."""
    config = config or {}
    if config.get("objective"):
        return resolve(config["objective"], None)
    return resolve(None, config.get("task") or "causal_lm")


def default_for(fmt: str) -> ObjectiveSpec | None:
    """The objective a data set of format ``fmt`` trains when none is asked for: the first registered one that
    takes it (instruction/chat/text: sft; classification; preference: dpo; feedback: kto)."""
    return next((o for o in REGISTRY.values() if fmt in o.formats), None)


def check_data(spec: ObjectiveSpec, dataset_id: int, fmt: str, stats: dict | None, rows: int) -> None:
    """Refuse a data set whose format ``spec`` does not train on, naming the format it has, the one needed and
    the objective that fits it; then the objective's own check of the data set's stats."""
    if fmt not in spec.formats:
        fits = default_for(fmt)
        hint = (f" {fits.suggest} (CLI: --objective {fits.name}, or leave --objective out)." if fits else "")
        raise ObjectiveError(f"dataset {dataset_id} is {fmt} data; {spec.title} takes {spec.data_help}.{hint}")
    spec.check_stats(dataset_id, stats or {}, rows)


def check_method(spec: ObjectiveSpec, method: MethodSpec) -> None:
    """Refuse a method the objective cannot train with, with the reason; then the objective's own checks."""
    if spec.needs_reference_model and method.single_adapter:
        raise ObjectiveError(
            f"{spec.name} compares the policy with a frozen reference, which TRL keeps as a copy of the starting "
            f"adapter beside the trained one; peft allows a {method.name} model only one adapter. Use lora or dora "
            f"with {spec.name}, or {method.name} with an objective without a reference model "
            f"({', '.join(o.name for o in REGISTRY.values() if not o.needs_reference_model and o.task == spec.task)}).")
    if method.prepends_tokens and not spec.takes_prepended_tokens:
        raise ObjectiveError(
            f"{method.name} prepends virtual tokens to every sequence, and {spec.name}'s trainer (TRL's) does not "
            f"drop them before the loss. Use prefix_tuning (its virtual tokens live in the attention cache), lora, or "
            f"{method.name} with {', '.join(o.name for o in REGISTRY.values() if o.takes_prepended_tokens and o.pairs)}.")


def check_job(spec: ObjectiveSpec, params, training: dict, session) -> None:
    """The objective's own checks of a job about to be queued: its parsed ``params`` against the job's
    ``training`` settings and, through ``session``, the rows they name (ObjectiveError: what to change)."""
    spec.check_job(params, training, session)


def flags_for(spec: ObjectiveSpec, params) -> dict:
    """The flags of ``spec`` for a job with ``params`` (a params instance, or None: the static ones):
    ``needs_reference_model``, ``pairs``, ``sequences_per_row``, with the objective's per-params overrides."""
    out = {"needs_reference_model": spec.needs_reference_model, "pairs": spec.pairs,
           "sequences_per_row": spec.sequences_per_row}
    if params is not None:
        out.update(spec.flags(params))
    return out


def check_model(spec: ObjectiveSpec, model_name: str, model_config: dict | None,
                method: MethodSpec | None = None) -> None:
    """Refuse a base that cannot train ``spec``: a generating objective on an encoder (BERT and its kin have no
    head that writes text), or (with ``method``) a classifier on a decoder with a method whose prefixes peft's
    classifier path cannot read there. Read from config.json only; an unreadable config is let through."""
    if not model_config:
        return
    from studio.advisor.architecture import model_shape

    try:
        encoder = model_shape(model_config).encoder
    except ValueError:
        return
    if spec.task == "causal_lm" and encoder:
        scorers = ", ".join(o.name for o in REGISTRY.values() if o.task == "seq_cls")
        raise ObjectiveError(
            f"{model_name} is an encoder ({model_config.get('model_type')}): it scores text but cannot generate it, "
            f"and {spec.name} trains a model that writes answers. Use a decoder base (studio models import --demo), "
            f"or train {scorers} on this one.")
    if spec.task == "seq_cls" and not encoder and method is not None and method.prefix_in_cache:
        raise ObjectiveError(
            f"{method.name} cannot train a classifier on {model_name}, a decoder ({model_config.get('model_type')}): "
            f"peft passes its prefixes as the attention cache and then reads an encoder's pooled output, which a "
            f"decoder's classifier does not return. Use prompt_tuning or p_tuning (virtual tokens, as small), lora, "
            f"or {method.name} on an encoder base (BERT and kin).")


def training_defaults(spec: ObjectiveSpec | None, method: MethodSpec) -> dict:
    """The method's training defaults with the objective's over them (its learning-rate scale applied to the
    method's learning rate): what ``studio.jobspec`` layers over the studio's own, and the Train form shows."""
    out = dict(method.default_training)
    if spec is None:
        return out
    out.update(spec.default_training)
    if "learning_rate" in method.default_training and "learning_rate" not in spec.default_training:
        out["learning_rate"] = float(f"{method.default_training['learning_rate'] * spec.learning_rate_scale:.3g}")
    return out
