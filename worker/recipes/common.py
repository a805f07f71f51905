"""The steps every training recipe takes the same way, whatever the task: read the job, settle the
precision for this machine, start from the base plus the parent's lineage, run the HF Trainer with the
studio's callbacks, measure, save and describe the version. A recipe reads top to bottom (data ->
load -> method -> train -> save -> register) and calls these where the task makes no difference."""
from __future__ import annotations

import dataclasses
import functools
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments

from models_db import BaseModel, Dataset, ModelVersion, session_scope
from studio import store
from studio.jobspec import TrainSpec
from studio.settings import get_settings
from worker import distributed, lineage, machine_defaults, memory_meter, methods, perf, tracking
from worker.callbacks import MethodStepCallback, StudioCallback, latest_complete_checkpoint
from worker.context import JobContext
from worker.methods.counting import count_parameters
from worker.sysmon import SystemSampler
from worker.trust import model_code_kwargs


@dataclass
class TrainJob:
    """A training job's inputs, read once from the database (detached from the session)."""

    spec: TrainSpec
    base: BaseModel
    dataset: Dataset
    ancestors: list[ModelVersion]
    home: Path
    training: dict  # the TrainingArguments values, settled for this machine
    cuda: bool

    @property
    def continuing(self) -> bool:
        """A parent that cannot be merged (soft prompts, bottleneck adapters) is continued, not built
        upon: its own adapter is reloaded trainable and keeps training (the studio refuses another method)."""
        return bool(self.ancestors) and not methods.get(self.ancestors[-1].method).mergeable

    @property
    def base_dtype(self) -> torch.dtype:
        """A frozen base is loaded in 16-bit on GPU (it is never updated); trained weights stay fp32."""
        if self.cuda and not methods.get(self.spec.method).trains_base:
            return torch.bfloat16 if self.training["bf16"] else torch.float16
        return torch.float32


def read_job(ctx: JobContext) -> TrainJob:
    spec = TrainSpec(**ctx.job.config)
    with session_scope() as db:
        base, dataset = db.get(BaseModel, spec.model_id), db.get(Dataset, spec.dataset_id)
        ancestors = lineage.chain(db, spec.parent_version_id) if spec.parent_version_id else []
        db.expunge_all()
    # A worker on another machine fetches the data set and the base once from the shared store
    # (studio/store.py); the detached rows point at its local copies and are never written back.
    dataset.path, base.path = str(store.local_dataset(dataset.path)), store.local_model(base.path)
    cuda = torch.cuda.is_available()
    training = dict(spec.training)
    # transformers 5 folded warmup_ratio into warmup_steps (a value below 1 is a fraction of the run)
    ratio = training.pop("warmup_ratio", 0.0)
    training["warmup_steps"] = ratio or training.get("warmup_steps", 0)
    if not cuda:  # mixed precision is a GPU affair; on CPU the studio trains in fp32
        training.update(bf16=False, fp16=False)
    elif not training["bf16"] and not training["fp16"]:
        training["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True
    device_gb = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30 if cuda else None
    one_gpu = getattr(spec, "gpus", 1) <= 1  # the estimate is for one device; sharded jobs are sized by the launcher
    for note in machine_defaults.settle_training(training, cuda=cuda, estimate=spec.estimate if one_gpu else None,
                                         device_total_gb=device_gb):
        ctx.say(f"fast path: {note}")
    return TrainJob(spec, base, dataset, ancestors, get_settings().home_abs, training, cuda)


def training_arguments(ctx: JobContext, job: TrainJob, *, has_eval: bool, packed: bool = False,
                       args_class: type = TrainingArguments, **extra) -> TrainingArguments:
    """TrainingArguments for the job; with early stopping, checkpoints follow evaluations. ``packed``:
    batches are padding-free rows (no attention mask), so every input token is a real one. ``args_class``: a
    TrainingArguments subclass (TRL's DPOConfig...), ``extra`` its own fields."""
    training = dict(job.training)
    early = job.spec.early_stopping_patience > 0 and has_eval
    if early:  # the best checkpoint must be among those evaluated
        training["save_steps"] = training["eval_steps"]
    return args_class(
        output_dir=str(ctx.dir / "checkpoints"), **training,
        eval_strategy="steps" if has_eval else "no",
        load_best_model_at_end=early, metric_for_best_model="eval_loss" if early else None,
        gradient_checkpointing_kwargs={"use_reentrant": False} if training["gradient_checkpointing"] else None,
        include_num_input_tokens_seen="all" if packed else "non_padding", disable_tqdm=True,
        report_to=tracking.report_to(ctx, job),  # MLflow / W&B runs, when set and reachable (worker/tracking.py)
        use_cpu=not job.cuda, **machine_defaults.dataloader_arguments(cuda=job.cuda, gpus=getattr(job.spec, "gpus", 1)),
        **extra,
    )


def optimizer_steps(rows: int, args: TrainingArguments) -> int:
    """How many optimizer steps the Trainer will take over ``rows`` examples (its own arithmetic in
    ``Trainer.set_initial_training_values``): max_steps, or epochs x ceil(batches / accumulation)."""
    if args.max_steps > 0:
        return args.max_steps
    per_batch = args.train_batch_size * args.world_size
    batches = rows // per_batch if args.dataloader_drop_last else math.ceil(rows / per_batch)
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return math.ceil(args.num_train_epochs * per_epoch)


def load_start(ctx: JobContext, job: TrainJob, load, load_kwargs: dict):
    """The model training starts from: ``load(path, **kwargs)`` (the base, with the task's model class)
    and the parent version's lineage, merged in or (continuing) loaded trainable.

    A quantizing method (qlora) gets the lineage merged in full precision first and is then quantized
    from a scratch copy: merging into 4-bit weights would re-quantize them and lose the parent's update.
    """
    ctx.say(f"loading {job.base.name}")
    load = functools.partial(load, **model_code_kwargs(job.base))
    if job.ancestors and load_kwargs:
        scratch = ctx.dir / "merged-parent"
        merged = lineage.load_chain(load(job.base.path, dtype=torch.float32), job.ancestors, last="merge")
        merged.save_pretrained(scratch, safe_serialization=True)
        del merged
        model = load(str(scratch), dtype=job.base_dtype, **load_kwargs)
        shutil.rmtree(scratch, ignore_errors=True)
        return model
    model = load(job.base.path, dtype=job.base_dtype, **load_kwargs)
    if not job.ancestors:
        return model
    return lineage.load_chain(model, job.ancestors, last="train" if job.continuing else "merge")


def make_trainable(ctx: JobContext, job: TrainJob, method, model, params, task: str):
    """Apply the method (LoRA matrices, adapters, prompts, top layers, ...) unless continuing the
    parent's own adapter; returns (model, parameter counts for the version's metrics)."""
    if job.continuing:
        ctx.say(f"continuing the {job.spec.method} weights of version {job.ancestors[-1].id}")
    else:
        model = method.apply(model, params, task)
    counts = count_parameters(model)
    ctx.say(f"{job.spec.method}: {counts['trainable']:,} of {counts['total']:,} parameters trainable "
            f"({100 * counts['ratio']:.3f}%)")
    sizes = {"trainable_params": counts["trainable"], "total_params": counts["total"],
             "trainable_ratio": counts["ratio"]}
    if method.describe:  # e.g. qlora: what is quantized, and which layers stayed in full precision
        line, extra = method.describe(model)
        ctx.say(line)
        sizes.update(extra)
    return model, sizes


def build_trainer(ctx: JobContext, job: TrainJob, method, args: TrainingArguments, *, trainer_class: type = Trainer,
                  curves: tuple[str, ...] = (), **trainer_kwargs) -> Trainer:
    """The HF Trainer (or ``trainer_class``, a subclass such as TRL's) with the studio's progress/metrics callback
    (recording ``curves`` too: the objective's own logged figures), early stopping when asked, and the
    method's per-step hook (AdaLoRA reallocates its rank budget after every optimizer step), the
    throughput meter (tokens/s, step time, MFU) and the system sampler (CPU, RAM, GPU curves)."""
    context = perf.context_of(trainer_kwargs.get("train_dataset"))
    callbacks = [StudioCallback(ctx, curves), perf.PerfCallback(ctx.writer, context), SystemSampler(ctx.writer),
                 memory_meter.for_job(ctx, job)]  # measured memory beside the estimate; a pre-flight's step limit
    if args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(job.spec.early_stopping_patience))
    if method.after_optimizer_step:
        callbacks.append(MethodStepCallback(method.after_optimizer_step))
    trainer = trainer_class(args=args, callbacks=callbacks, **trainer_kwargs)
    trainer.remove_callback(PrinterCallback)  # StudioCallback prints one readable line per log instead
    return trainer


def fit(ctx: JobContext, trainer: Trainer) -> tuple[dict, dict]:
    """Train (a retry resumes from the last complete checkpoint) and evaluate once more at the end.

    Returns (run metrics: losses, time, steps, tokens, peak memory; the final evaluation)."""
    resume = latest_complete_checkpoint(Path(trainer.args.output_dir))
    if resume:
        ctx.say(f"resuming from {resume.rsplit('/', 1)[-1]}")
    started = time.time()
    try:
        out = trainer.train(resume_from_checkpoint=resume)
    finally:  # on_train_end never runs when training raises: the sampler thread would outlive the job
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, SystemSampler):
                callback.stop()
    seconds = time.time() - started
    final_eval = final_evaluation(trainer)
    cuda = trainer.args.device.type == "cuda"
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    ranks = distributed.ranks_report(trainer)  # every rank's host, device and steps (a collective: all ranks)
    print(f"rank {distributed.rank()} of {distributed.world_size()} trained {state.global_step} steps", flush=True)
    return {
        "world_size": trainer.args.world_size,
        "distributed": distributed.strategy(),
        "ranks": ranks,
        "train_loss": losses[-1] if losses else out.training_loss,
        "first_train_loss": losses[0] if losses else None,
        "eval_loss": final_eval.get("eval_loss"),
        "train_seconds": seconds,
        "steps": state.global_step,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_s": state.num_input_tokens_seen / seconds if seconds else None,
        "peak_memory_gb": peak / 2**30,
        "peak_memory_kind": "cuda_allocated" if cuda else "cpu_rss",
        **perf.summary(trainer),  # samples/s, step time, tokens/s over training steps only, MFU on CUDA
    }, final_eval


def final_evaluation(trainer: Trainer) -> dict:
    """The evaluation the version records: the one the Trainer already ran at the last step when there
    was one (a second pass over the same rows with the same weights would only delay "version ready"),
    else one pass now; {} without eval rows. With the best model loaded at the end, always a pass now."""
    if trainer.eval_dataset is None:
        return {}
    step = trainer.state.global_step
    last = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    if last and not trainer.args.load_best_model_at_end:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def save_version(ctx: JobContext, job: TrainJob, method, params, trainer: Trainer, tokenizer, metrics: dict,
                 measured: dict | None = None, **config) -> dict:
    """Save the trained part (safetensors) with the tokenizer; return the job result with its version.

    ``config`` adds task-specific entries to the version's config (e.g. a classifier's labels); ``measured``: the
    figures an evaluation on the data set's stored eval split records (default: the task's own)."""
    ctx.say("saving")
    spec, base, dataset = job.spec, job.base, job.dataset
    rel = f"versions/job-{ctx.job.id}/adapter"
    distributed.save_trained(trainer, method, job.home / rel)  # rank 0 writes (all ranks gather under FSDP)
    if distributed.is_main():
        tokenizer.save_pretrained(job.home / rel)
        store.put(rel)  # into the shared store, for the studio and the other workers (studio/store.py)
    spec_json = {k: v for k, v in spec.to_json().items() if k != "lineage_note" or v}  # only where it says something
    config = {**spec_json, "method_params": dataclasses.asdict(params), "training": job.training,
              "base_model": base.name, "dataset": dataset.name, **config}
    return {
        "step": trainer.state.global_step,
        "metrics": metrics,
        "evaluations": own_evaluation(job, metrics, measured),
        "version": {
            "name": f"{base.name}-{spec.method}-job{ctx.job.id}", "base_model_id": base.id,
            "parent_id": spec.parent_version_id, "dataset_id": dataset.id, "method": spec.method,
            "config": config, "metrics": metrics, "artifacts": {"adapter": rel},
        },
    }


def own_evaluation(job: TrainJob, metrics: dict, measured: dict | None = None) -> list[dict]:
    """The final evaluation as the version's Evaluation on its own data set, when it ran on that data
    set's stored eval split (the rows an ``evaluate`` job uses, so no second pass is needed); [] when
    it ran on rows held out by ``eval_split`` or not at all (worker/job_process.py then queues an evaluate job)."""
    rows = metrics.get("rows") or {}
    stored = has_stored_eval(job)
    if not stored or not rows.get("eval_rows") or metrics.get("eval_loss") is None:
        return []
    if measured is None and job.spec.task == "seq_cls":
        measured = {"accuracy": metrics.get("eval_accuracy"), "f1": metrics.get("eval_f1"), "eval_loss": metrics["eval_loss"]}
    elif measured is None:
        measured = {"eval_loss": metrics["eval_loss"], "perplexity": metrics.get("perplexity")}
    return [{"dataset_id": job.dataset.id, "split": "eval", "rows": rows["eval_rows"], "metrics": measured}]


def has_stored_eval(job: TrainJob) -> bool:
    """Whether the job's data set version has a stored eval split (``eval.jsonl`` beside its rows)."""
    from worker.data import stored_eval

    return stored_eval(job.home / job.dataset.path) is not None
