"""What a fine-tuning method is, torch-free: its params, the facts the rest of the studio reads, its defaults
and its cost. One :class:`MethodSpec` per method, registered by name (peft's config table; the torch part,
its tuner table, is ``worker.methods``, registered under the same names).

Stdlib only: the UI process, the CLI and the advisor import this and must not pull in torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the cost terms read the advisor's model shape; only its attributes, never its module
    from studio.advisor.architecture import ModelShape

TASKS = ("causal_lm", "seq_cls")


class MethodError(ValueError):
    """A method cannot be used as asked; the message says what to change."""


def check_task(method: str, task: str) -> None:
    """Refuse a task the studio does not know."""
    if task not in TASKS:
        raise MethodError(f"{method}: unknown task {task!r}. Use one of: {', '.join(TASKS)}.")


def _none(shape: ModelShape, params) -> int:
    return 0


def _no_quantization(shape: ModelShape, params) -> str | None:
    return None


def _no_check(params, model_config: dict | None) -> None:
    return None


def _no_advice(choices: AdvisorChoices) -> dict:
    return {}


@dataclass(frozen=True)
class Costs:
    """A method's terms for the memory estimator (``studio.advisor.memory``) and the trainable-parameter count,
    each a function of the advisor's :class:`~studio.advisor.architecture.ModelShape` and the method's parsed
    params. Every term left out is zero: a method states only what it adds. The counts equal peft's on the meta
    device (``tests/studio/test_train_tab.py``)."""

    base_trainable: Callable[[ModelShape, Any], int] = _none  # base weights that get gradients
    trained_layers: Callable[[ModelShape, Any], int] = _none  # blocks whose own weights train
    added: Callable[[ModelShape, Any], int] = _none  # new trainable parameters (modules_to_save copies included)
    frozen_added: Callable[[ModelShape, Any], int] = _none  # new parameters that never train
    extra_activations: Callable[[ModelShape, Any], int] = _none  # elements per layer per token beyond the layer's own
    virtual_tokens: Callable[[ModelShape, Any], int] = _none  # tokens prepended to every sequence
    state_bytes: Callable[[ModelShape, Any], int] = _none  # bytes the method keeps beside gradients and optimizer
    quantization: Callable[[ModelShape, Any], str | None] = _no_quantization  # "nf4"/"int8" storage of base linears

    def trainable(self, shape: ModelShape, params) -> int:
        """Every parameter with a gradient and optimizer state."""
        return self.base_trainable(shape, params) + self.added(shape, params)


@dataclass(frozen=True)
class AdvisorChoices:
    """What the advisor decides for a job whatever the method; each spec's ``advised_params`` turns these into
    its own ``--set`` values (a method ignores what does not apply to it)."""

    rank: int = 16  # article 001's rank rule
    target: str = "attention_mlp"  # which linear layers get adapters
    layers: int = 0  # the model's block count
    trainable_layers: int | None = None  # blocks that train, where a method trains blocks (None: its default)
    virtual_tokens: int | None = None  # soft-prompt length, where a method prepends one (None: its default)


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method as the studio sees it without torch.

    ``params`` is a frozen dataclass whose fields carry ``help``, ``min``/``max``, ``choices`` (and ``modules``,
    ``context``) metadata: the Train form and ``--set`` parsing are generated from it. ``check(params,
    model_config)`` validates it against the base's config.json dict. ``default_training`` are the method's own
    training defaults (layered over the studio's by ``studio.jobspec``). ``advised_params(choices)`` are the
    params the advisor suggests (:class:`AdvisorChoices`), ``costs`` its terms for the estimator.

    Flags, read wherever the studio, the advisor or the worker would otherwise test the method's name:
    ``mergeable``: the trained result folds into the base weights (else it ships as base + adapter, and a version
    trained with it can only be continued by the same method). ``packable``: padding-free packing is correct
    for it (not for prompt learning: its virtual tokens would be shared by every example packed into a row).
    ``trains_base``: base weights get gradients, so the base is loaded in fp32, takes weight decay and cannot be
    quantized. ``quantizes_base``: the frozen base is loaded quantized through bitsandbytes. ``low_rank``: the
    advisor's rank rule (article 001) sizes its update. ``suggest_4bit_base``: when it does not fit, the memory
    plan says what a 4-bit base would need (methods whose trained weights sit in the blocks of a frozen base).
    ``tiny_optimizer_state``: it trains so few numbers that the plan never tries an 8-bit optimizer.
    ``count_as`` names a method whose implementation can count its parameters on the meta device (qlora
    quantizes, which the meta device cannot). ``combinable``: its versions are plain low-rank matrices that
    peft's ``add_weighted_adapter`` combines (studio/combine.py); ``not_combinable_why`` says why not, where
    the reason is worth more than "only LoRA adapters combine". ``single_adapter``: peft holds one trainable
    adapter of it per model, so no frozen copy can sit beside it (TRL keeps a DPO/KTO reference that way;
    ``studio.objectives`` refuses the pair). ``prepends_tokens``: its virtual tokens are prepended to the input
    sequence (prompt tuning, P-tuning), so the logits are longer than the labels; an objective whose trainer
    does not drop them refuses it. ``prefix_in_cache``: its virtual tokens are key/value prefixes handed to the
    model as its attention cache (prefix tuning); for a classifier peft then calls the backbone itself and reads
    a BERT-style pooled output, which a decoder (Llama and kin) does not return, so a decoder classifier refuses it.
    """

    name: str
    params: type
    summary: str
    mergeable: bool
    default_training: dict = field(default_factory=dict)
    check: Callable[[Any, dict | None], None] = _no_check
    packable: bool = True
    trains_base: bool = False
    quantizes_base: bool = False
    low_rank: bool = False
    suggest_4bit_base: bool = False
    tiny_optimizer_state: bool = False
    count_as: str | None = None
    combinable: bool = False
    not_combinable_why: str = ""
    single_adapter: bool = False
    prepends_tokens: bool = False
    prefix_in_cache: bool = False
    advised_params: Callable[[AdvisorChoices], dict] = _no_advice
    costs: Costs = Costs()


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (one line per method module) and return it."""
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MethodSpec:
    """The registered method called ``name``; MethodError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r}. Known methods: {', '.join(names())}.") from None


def names() -> list[str]:
    """Registered method names, in registration order (the UI's order)."""
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
