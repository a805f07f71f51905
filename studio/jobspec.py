"""The typed config of a training job, validated in the studio before anything is queued.

Keys are the Hugging Face ``TrainingArguments`` names where one exists, the studio's own
(``max_seq_length``, ``eval_split``, ``early_stopping_patience``), the method's parameters and the training
objective's (``studio.objectives``: beta, loss_type...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from studio import methods, objectives
from studio.methods.params import not_convertible


class SpecError(ValueError):
    """A setting is unknown or out of range; the message says what to change."""


@dataclass(frozen=True)
class Knob:
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None


SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")  # bitsandbytes' (8-bit and paged)
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", *BNB_OPTIMIZERS)

# The TrainingArguments the studio exposes. Fractions below 1 for *_steps mean "of the total steps".
TRAINING: dict[str, Knob] = {
    "num_train_epochs": Knob(float, 1.0, "Passes over the training data (ignored when max_steps > 0).", 0.01, 1000),
    "max_steps": Knob(int, -1, "Stop after this many optimizer steps; -1 trains for num_train_epochs.", -1, 10_000_000),
    "learning_rate": Knob(float, 2e-4, "Peak learning rate.", 1e-8, 1.0),
    "lr_scheduler_type": Knob(str, "linear", "Learning-rate schedule after warmup.", choices=SCHEDULERS),
    "warmup_ratio": Knob(float, 0.0, "Fraction of steps spent warming the learning rate up.", 0.0, 0.9),
    "warmup_steps": Knob(float, 0, "Warmup steps (below 1: fraction of the run); warmup_ratio wins if set.", 0, 1e7),
    "weight_decay": Knob(float, 0.0, "AdamW weight decay.", 0.0, 1.0),
    "max_grad_norm": Knob(float, 1.0, "Clip gradients to this global norm (0 disables).", 0.0, 1000),
    "per_device_train_batch_size": Knob(int, 4, "Examples per micro-batch on each device.", 1, 4096),
    "per_device_eval_batch_size": Knob(int, 8, "Examples per evaluation batch.", 1, 4096),
    "gradient_accumulation_steps": Knob(int, 1, "Micro-batches summed before each optimizer step.", 1, 4096),
    "gradient_checkpointing": Knob(bool, False, "Recompute activations in the backward pass to save memory.", None, None),
    "bf16": Knob(bool, False, "bfloat16 mixed precision (GPUs that support it).", None, None),
    "fp16": Knob(bool, False, "float16 mixed precision.", None, None),
    "optim": Knob(str, "adamw_torch", "Optimizer (8-bit and paged ones need bitsandbytes).", choices=OPTIMIZERS),
    "torch_compile": Knob(bool, False, "Compile the model with torch.compile (GPU): faster steps after a "
                          "compile of a minute or more; helps long runs with fixed shapes.", None, None),
    "use_liger_kernel": Knob(bool, False, "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear "
                             "cross-entropy) on CUDA: less memory, faster steps. Needs the studio's [fast] extra "
                             "(liger-kernel) on the worker.", None, None),
    "logging_steps": Knob(float, 1, "Log metrics every N steps.", 0.0001, 100000),
    "eval_steps": Knob(float, 0.1, "Evaluate every N steps (below 1: fraction of the run).", 0.0001, 100000),
    "save_steps": Knob(float, 0.25, "Checkpoint every N steps (below 1: fraction of the run).", 0.0001, 100000),
    "save_total_limit": Knob(int, 2, "Checkpoints kept on disk (the best by eval loss is kept too).", 1, 1000),
    "seed": Knob(int, 42, "Seed for initialisation, data order and the eval split.", 0, 2**31 - 1),
}
STUDIO: dict[str, Knob] = {
    "max_seq_length": Knob(int, 0, "Longest tokenised example; longer ones are truncated and counted. 0: from the "
                           "data: the shortest multiple of 64 that holds 99 % of the rows whole (at most the "
                           "model's context and 4096); the job log says what it chose.", 0, 131072),
    "eval_split": Knob(float, 0.1, "Fraction of rows held out for evaluation (0: none). Only for data sets without a "
                       "stored split: a split stored with the data set wins. Left unset, none is held out from a "
                       "data set under 300 rows: every row is needed for training; evaluate on a separate "
                       "eval file instead.", 0.0, 0.5),
    "early_stopping_patience": Knob(int, 0, "Stop after this many evaluations without improvement (0: off).", 0, 1000),
    "packing": Knob(bool, True, "Pack several examples into each sequence without padding (causal LM): no compute "
                    "is spent on padding. Position ids restart per example, so examples never attend to each other. "
                    "On by default; always off for prompt-learning methods and classification.", None, None),
    "gpus": Knob(int, 1, "GPUs on one machine for this job; above 1 the worker holding them launches it with "
                 "accelerate (DDP, or FSDP when the job does not fit one GPU).", 1, 64),
    "distributed": Knob(str, "auto", "How several GPUs share the job: auto (DDP when it fits one GPU, else FSDP), "
                        "ddp (a replica per GPU) or fsdp (weights and optimizer state sharded).",
                        choices=("auto", "ddp", "fsdp")),
}


@dataclass
class TrainSpec:
    """Everything a training job needs; stored as the job's config and the version's config."""

    model_id: int
    dataset_id: int
    method: str
    method_params: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    max_seq_length: int = 0  # 0: from the data (worker/data.py covering_length)
    eval_split: float = 0.1
    early_stopping_patience: int = 0
    packing: bool = True  # padding-free; build_train_spec and services.submit_train switch it off where wrong
    gpus: int = 1  # GPUs on one machine (worker/launch_plan.py); above 1: accelerate launch
    distributed: str = "auto"  # auto | ddp | fsdp (studio/advisor/parallel.py)
    task: str | None = None  # the model the objective trains: causal_lm or seq_cls (studio.objectives' spec.task)
    # what the weights learn from (studio.objectives); None: implied by the data set (operations.submit_train).
    # Jobs stored before objectives existed have only ``task``, which names one (causal_lm: sft, seq_cls: ...).
    objective: str | None = None
    objective_params: dict = field(default_factory=dict)
    parent_version_id: int | None = None
    # the advisor's estimate at submit (studio.advisor.jobcost.job_estimate), shown beside the measured peak
    estimate: dict = field(default_factory=dict)
    # continuing a version: what it means for the lineage and a merged export (set at submit)
    lineage_note: str = ""
    # a sweep's trial (studio/sweeps/): its sweep (trackers tag their run with it) and its Optuna trial number
    sweep_id: int | None = None
    trial_number: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def coerce(key: str, knob: Knob, raw: Any) -> Any:
    """Turn a CLI string or UI value into the knob's type, checking its range."""
    try:
        value = methods.convert(raw, knob.type)  # the same converter as the methods' parameters
    except (TypeError, ValueError, OverflowError):
        raise SpecError(not_convertible(key, knob.type, raw)) from None
    if knob.choices and value not in knob.choices:
        raise SpecError(f"{key}: {value!r} is not one of {', '.join(knob.choices)}")
    if knob.min is not None and value < knob.min or knob.max is not None and value > knob.max:
        raise SpecError(f"{key}: {value} is outside [{knob.min}, {knob.max}]. {knob.help}")
    return value


def build_train_spec(*, model_id: int, dataset_id: int, method: str, settings: dict[str, Any],
                     parent_version_id: int | None = None, task: str | None = None,
                     objective: str | None = None) -> TrainSpec:
    """Split user settings into training / studio / method / objective keys, fill defaults, and validate all.

    ``objective`` (or the older ``task``, which names one) says what the weights learn from; left out, the data
    set's format decides (its default objective). Defaults are layered: the studio's, then the method's own
    (SEEDS.md) with the objective's over them, then the person's."""
    try:
        m = methods.get(method)
        name = objectives.resolve(objective, task) or _default_objective(dataset_id)
        o = objectives.get(name) if name else None
    except (methods.MethodError, objectives.ObjectiveError) as e:
        raise SpecError(str(e)) from None
    method_keys = {f for f in m.params.__dataclass_fields__}
    objective_keys = objectives.param_keys(name) if name else set()
    unknown = [k for k in settings if k not in TRAINING and k not in STUDIO and k not in method_keys
               and k not in objective_keys]
    if unknown:
        theirs = f"; {name} keys: {', '.join(sorted(objective_keys)) or '(none)'}" if name else ""
        raise SpecError(
            f"unknown setting {unknown[0]!r}. Training keys: {', '.join(TRAINING)}; studio keys: "
            f"{', '.join(STUDIO)}; {method} keys: {', '.join(sorted(method_keys)) or '(none)'}{theirs}"
        )
    training = {k: knob.default for k, knob in TRAINING.items()}
    training.update(objectives.training_defaults(o, m))
    training.update({k: coerce(k, TRAINING[k], v) for k, v in settings.items() if k in TRAINING})
    if training["bf16"] and training["fp16"]:
        raise SpecError("bf16 and fp16 are both on: choose one precision")
    studio = {k: coerce(k, knob, settings.get(k, knob.default)) for k, knob in STUDIO.items()}
    if "eval_split" not in settings:
        studio["eval_split"] = default_eval_split(dataset_id)
    if 0 < studio["max_seq_length"] < MIN_SEQ_LENGTH:
        raise SpecError(f"max_seq_length: {studio['max_seq_length']} tokens is too short to train on; give 0 "
                        f"(chosen from the data) or at least {MIN_SEQ_LENGTH}.")
    if not m.packable:  # prompt learning: packed examples would share the virtual tokens (worker/data.py)
        studio["packing"] = False
    if o is not None and not o.packable:  # pairs and classification rows are not packed
        studio["packing"] = False
    try:
        params = methods.parse_params(method, {k: v for k, v in settings.items() if k in method_keys})
        aims = objectives.parse_params(name, {k: v for k, v in settings.items() if k in objective_keys}, m) if o else None
        if o is not None:
            objectives.check_method(o, m)
    except (methods.MethodError, objectives.ObjectiveError) as e:
        raise SpecError(str(e)) from None
    return TrainSpec(model_id=model_id, dataset_id=dataset_id, method=method, method_params=asdict(params),
                     training=training, parent_version_id=parent_version_id, task=o.task if o else task,
                     objective=name, objective_params=asdict(aims) if aims is not None else {}, **studio)


MIN_SEQ_LENGTH = 8  # tokens: below this not even a chat template's markers fit
SMALL_DATA_ROWS = 300  # below this, a hold-out starves training (measured: bench/quality.py)


def _default_objective(dataset_id: int) -> str | None:
    """The objective the data set's format implies (studio.objectives.default_for); None without a database
    here (a torch-free check), or for a format no objective takes (submit says so)."""
    from models_db import Dataset, session_scope

    if not dataset_id:
        return None
    try:
        with session_scope() as db:
            ds = db.get(Dataset, int(dataset_id))
            fmt = ds.format if ds is not None else None
    except Exception:  # noqa: BLE001 - no database here: submit decides from the data set
        return None
    spec = objectives.default_for(fmt) if fmt else None
    return spec.name if spec else None


def default_eval_split(dataset_id: int) -> float:
    """The hold-out when the person did not set one: none for a data set under ``SMALL_DATA_ROWS`` rows
    (10 % of 200 rows is 20 rows the model never learns from, and too few to measure it well), else 10 %."""
    from models_db import Dataset, session_scope

    default = STUDIO["eval_split"].default
    if not dataset_id:
        return default
    try:
        with session_scope() as db:
            ds = db.get(Dataset, int(dataset_id))
            rows = ds.rows if ds is not None else None
    except Exception:  # noqa: BLE001 - no database here (a torch-free check): the plain default
        return default
    return 0.0 if rows is not None and rows < SMALL_DATA_ROWS else default


def continue_from(spec: TrainSpec, parent_method: str, parent_config: dict) -> TrainSpec:
    """The spec for training on top of a version. A method that cannot be merged is continued, not
    stacked: only the same method may follow it, and it keeps the parent's parameters (its adapter's shape)."""
    try:
        methods.check_continuation(spec.parent_version_id, parent_method, spec.method)
    except methods.MethodError as e:
        raise SpecError(str(e)) from None
    if methods.get(parent_method).mergeable:
        return spec
    return replace(spec, method_params=dict(parent_config.get("method_params", spec.method_params)))


def lineage_note(parent_id: int, parent_method: str, method: str) -> str:
    """What training ``method`` on a ``parent_method`` version means for the lineage and a merged export."""
    return methods.continuation_note(parent_id, parent_method, method)


def check_against_model(spec: TrainSpec, model_dir: str, stored_config: dict | None = None) -> None:
    """Model-dependent checks before a job is queued: layer counts from config.json, module names from
    the safetensors headers (no torch). Without the folder here, the config stored at import is used."""
    from studio.methods import model_files

    try:
        config, names = model_files.read_config(model_dir), model_files.module_names(model_dir)
    except (OSError, ValueError):  # the model store may be mounted on the workers only
        config, names = stored_config, None
    try:
        methods.parse_params(spec.method, spec.method_params, model_config=config, module_names=names)
    except methods.MethodError as e:
        raise SpecError(str(e)) from None


def parse_set_args(pairs: list[str]) -> dict[str, str]:
    """``["r=16", "learning_rate=1e-4"]`` -> dict; a pair without '=' is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {pair!r}: expected key=value, e.g. --set learning_rate=1e-4")
        out[key.strip()] = value.strip()
    return out
