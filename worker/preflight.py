"""A measured pre-flight: a few real optimizer steps of a training job's configuration on the worker that would run
it (the real data, the real sequence lengths), through the objective's own recipe, stopped after ``steps`` by the
memory meter (worker/memory_meter.py) before it evaluates, saves or registers anything.

It reports the measured peak (CUDA tensors, or the process's resident memory on the CPU), tokens/s, step time and
the whole run's ETA. Where the peak would not fit the device, it picks the next rung of the advisor's ladder
(smaller micro-batch with more gradient accumulation, then gradient checkpointing) whose estimate, scaled by what
this run measured against its own estimate, fits, and measures again. No version, no checkpoint is left behind.
"""
from __future__ import annotations

import math
import shutil

from models_db import BaseModel, session_scope
from studio.advisor import jobcost, sources
from studio.advisor.plan import USABLE_FRACTION, micro_batches
from worker import memory_meter
from worker.context import JobContext
from worker.errors import UserFacingError

DEFAULT_STEPS = 3
MAX_ATTEMPTS = 3  # the configuration asked for, then at most two smaller ones
NEVER = 10**9  # evaluation and checkpoint intervals a few steps never reach


def device_budget_gb(cuda: bool) -> float:
    """What the device this worker trains on can hold: the GPU's memory, or the machine's RAM."""
    if cuda:
        import torch

        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    else:
        import psutil

        total = psutil.virtual_memory().total
    return total / 2**30 * USABLE_FRACTION


def run_preflight_job(ctx: JobContext) -> dict:
    """The ``preflight`` job kind's entry point (studio/jobkinds.py); returns ``measured`` and the attempts."""
    import torch

    config = dict(ctx.job.config)
    pf = dict(config.pop("preflight", None) or {})
    steps = int(pf.get("steps") or DEFAULT_STEPS)
    cuda = torch.cuda.is_available()
    budget = float(pf.get("budget_gb") or device_budget_gb(cuda))
    model_config = _model_config(config["model_id"])
    gpus = [budget / USABLE_FRACTION] if cuda else None
    attempts: list[dict] = []
    training = dict(config["training"])
    for _ in range(MAX_ATTEMPTS):
        figures = _measure(ctx, config, training, steps, model_config, gpus, first=not attempts)
        attempts.append(figures)
        ctx.say(f"measured {figures['peak_memory_gb']:.2f} GB peak at micro-batch "
                f"{figures['settings']['micro_batch']}, checkpointing {figures['settings']['grad_ckpt']} "
                f"(budget {budget:.1f} GB)")
        if figures["peak_memory_gb"] <= budget:
            break
        smaller = shrink(model_config, config, training, figures, budget, gpus)
        if smaller is None:
            break
        training = smaller
    shutil.rmtree(ctx.dir / "checkpoints", ignore_errors=True)  # the Trainer made the folder; nothing is kept
    last = attempts[-1]
    fits = last["peak_memory_gb"] <= budget
    hours = last["eta_seconds"] / 3600 if last.get("eta_seconds") else None
    cost = round(hours * float(pf["cost_per_hour"]), 2) if hours is not None and pf.get("cost_per_hour") else None
    measured = {k: last[k] for k in ("peak_memory_gb", "peak_memory_kind", "tokens_per_second", "step_seconds",
                                     "eta_seconds", "run_steps", "steps_measured", "parts", "estimate_gb",
                                     "error_pct", "settings")}
    measured.update(device="cuda" if cuda else "cpu", budget_gb=round(budget, 2), fits=fits,
                    device_hours=round(hours, 4) if hours is not None else None, cost=cost)
    return {"measured": measured, "attempts": attempts, "shrunk": len(attempts) > 1}


def _model_config(model_id: int) -> dict:
    with session_scope() as db:
        base = db.get(BaseModel, model_id)
        if base is None:
            raise UserFacingError(f"model {model_id} no longer exists (studio models list)")
        return sources.model_config(base)


def _measure(ctx: JobContext, config: dict, training: dict, steps: int, model_config: dict, gpus, first: bool) -> dict:
    """Run the recipe for ``steps`` optimizer steps with ``training``; the meter's figures and the estimate."""
    from worker import recipes

    spec = {**config, "training": dict(training)}
    estimate = jobcost.job_estimate(model_config, spec, gpus)
    run = {"max_steps": training.get("max_steps", -1), "num_train_epochs": training.get("num_train_epochs", 1)}
    spec["estimate"] = estimate
    # a few steps: no evaluation, no checkpoint, no early stopping; the meter stops it and carries the figures out
    spec["training"].update(max_steps=steps, save_strategy="no", eval_steps=NEVER, save_steps=NEVER, logging_steps=1)
    spec["early_stopping_patience"] = 0
    if not first:
        memory_meter.reset_peak(bool(gpus))
    baseline = memory_meter.now_gb(bool(gpus))
    job = ctx.job
    job.config = spec  # detached row (worker/job_process.py): the recipe reads it, nothing writes it back
    ctx.preflight = {"steps": steps, "run": run, "baseline_gb": baseline}
    try:
        recipes.train(ctx)
    except memory_meter.StepsDone as done:
        figures = done.figures
    else:
        raise UserFacingError("the pre-flight's recipe finished without its step limit; nothing was measured")
    finally:
        ctx.preflight = None
    kind = figures["peak_memory_kind"]
    compared = estimate["live_gb" if kind == "cuda_allocated" else "total_gb"]
    return {**figures, "estimate_gb": compared, "estimate_parts": estimate["parts"],
            "error_pct": round(100 * (compared - figures["peak_memory_gb"]) / figures["peak_memory_gb"], 1),
            "settings": {"micro_batch": training["per_device_train_batch_size"],
                         "gradient_accumulation_steps": training["gradient_accumulation_steps"],
                         "grad_ckpt": bool(training.get("gradient_checkpointing")),
                         "optimizer": training.get("optim"), "seq_len": config.get("max_seq_length")}}


def shrink(model_config: dict, config: dict, training: dict, figures: dict, budget: float, gpus) -> dict | None:
    """The next smaller settings predicted to fit ``budget``: the advisor's ladder (the same effective batch at a
    smaller micro-batch, then gradient checkpointing), each rung's estimate scaled by measured / estimated of the
    run just measured. None when even the leanest rung is predicted not to fit."""
    ratio = figures["peak_memory_gb"] / figures["estimate_gb"] if figures.get("estimate_gb") else 1.0
    for candidate in ladder(training):
        est = jobcost.job_estimate(model_config, {**config, "training": candidate}, gpus)
        predicted = est["live_gb" if figures["peak_memory_kind"] == "cuda_allocated" else "total_gb"] * ratio
        if predicted <= budget:
            return candidate
    return None


def ladder(training: dict) -> list[dict]:
    """Smaller settings than ``training``, cheapest change first, each keeping the effective batch (micro-batch
    x accumulation): smaller micro-batches, then checkpointing at each micro-batch from the current one down."""
    mb, acc = int(training["per_device_train_batch_size"]), int(training["gradient_accumulation_steps"])
    effective = mb * acc
    out = []
    ckpt_now = bool(training.get("gradient_checkpointing"))
    for ckpt in ((False, True) if not ckpt_now else (True,)):
        for size in micro_batches(mb):
            if (size, ckpt) == (mb, ckpt_now):
                continue
            out.append({**training, "per_device_train_batch_size": size,
                        "gradient_accumulation_steps": math.ceil(effective / size), "gradient_checkpointing": ckpt})
    return [t for t in out if (t["per_device_train_batch_size"], t["gradient_checkpointing"]) != (mb, ckpt_now)
            and not (t["gradient_checkpointing"] == ckpt_now and t["per_device_train_batch_size"] >= mb)]


__all__ = ["run_preflight_job", "shrink", "ladder", "device_budget_gb"]
