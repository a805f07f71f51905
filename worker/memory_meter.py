"""What a training run really uses, step by step: peak memory (CUDA tensors, or the process's resident memory on
the CPU), step time and tokens/s, and the memory before the first step (runtime + weights) beside the peak of the
steps, so the estimator's parts can be checked where the process can tell them apart.

Every training job carries one (worker/recipes/common.py build_trainer): at the end of training it stores the
estimate beside the measurement (models_db MemoryMeasurement, what the estimator learns from). A measured
pre-flight (worker/preflight.py) gives it a step limit: it stops the run there and raises :class:`StepsDone`,
so the recipe neither evaluates nor saves nor registers anything.
"""
from __future__ import annotations

import gc
import math
import resource
import time
from pathlib import Path

from transformers import TrainerCallback

GIB = 2**30
_STATUS = Path("/proc/self/status")


class StepsDone(Exception):
    """A pre-flight's steps are done: carries the meter's figures out of the recipe (nothing is saved)."""

    def __init__(self, figures: dict):
        super().__init__("pre-flight steps done")
        self.figures = figures


def _status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_gb() -> float:
    """This process's resident memory now, in GiB."""
    kib = _status_kib("VmRSS")
    return kib / 2**20 if kib is not None else peak_rss_gb()


def peak_rss_gb() -> float:
    """This process's peak resident memory since it started (or since :func:`reset_peak`), in GiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux and most BSDs report KiB
    return kib / 2**20


def reset_peak(cuda: bool) -> None:
    """Start a new peak: CUDA's allocator statistics, or on the CPU the kernel's resident high-water mark
    (``/proc/self/clear_refs`` 5), after returning freed heap pages (a second measurement in one process must
    not inherit the first one's peak). Only the pre-flight calls it: a training job's peak is the process's."""
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_gb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / GIB
    return peak_rss_gb()


def now_gb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.memory_allocated() / GIB
    return rss_gb()


class MemoryMeter(TrainerCallback):
    """Measures the run: memory before the first step and at its peak, step time, tokens/s; with ``limit``
    stops after that many optimizer steps and raises :class:`StepsDone` with the figures.

    ``run_steps``: the optimizer steps of the whole run the figures stand for (a pre-flight measures a few of
    them); None: the run's own."""

    def __init__(self, limit: int | None = None, run_steps: int | None = None, baseline_gb: float | None = None,
                 record=None, run: dict | None = None):
        self.limit = limit
        self.run = run  # the whole run's max_steps and num_train_epochs, when a pre-flight stands for it
        self.record = record
        self.run_steps = run_steps
        self.baseline_gb = baseline_gb
        self.cuda = False
        self.before_gb = 0.0
        self.load_peak_gb = 0.0
        self.step_times: list[float] = []
        self.step_tokens: list[int] = []
        self._mark = 0.0
        self._tokens = 0
        self.max_steps = 0
        self.args = None

    def on_train_begin(self, args, state, control, **kw):
        self.args = args
        self.cuda = args.device.type == "cuda"
        self.before_gb = now_gb(self.cuda)
        self.load_peak_gb = peak_gb(self.cuda)  # loading, tokenising: everything before the first step
        self.max_steps = state.max_steps
        loader = kw.get("train_dataloader")
        if self.run and self.run_steps is None and loader is not None:  # the Trainer's own arithmetic
            per_epoch = max(math.ceil(len(loader) / args.gradient_accumulation_steps), 1)
            self.run_steps = int(self.run.get("max_steps") or 0) if (self.run.get("max_steps") or 0) > 0 \
                else math.ceil(float(self.run.get("num_train_epochs") or 1) * per_epoch)
        self._tokens = state.num_input_tokens_seen
        self._mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.step_times.append(now - self._mark)
        self.step_tokens.append(state.num_input_tokens_seen - self._tokens)
        self._tokens, self._mark = state.num_input_tokens_seen, now
        if self.limit is not None and len(self.step_times) >= self.limit:
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, **kw):
        self._mark = time.perf_counter()

    on_save = on_log = on_evaluate

    def on_train_end(self, args, state, control, **kw):
        figures = self.figures()
        if self.record is not None:
            try:
                self.record(figures)
            except Exception as exc:  # noqa: BLE001 - a bookkeeping row must never fail the job
                print(f"memory measurement not stored: {exc}", flush=True)
        if self.limit is not None:
            raise StepsDone(figures)

    def figures(self) -> dict:
        """peak_memory_gb, tokens_per_second, step_seconds (the first, warm-up step left out when there are
        more), eta_seconds of ``run_steps``, and the parts: baseline (runtime before the model loaded, when
        known), before_training (runtime + weights + trainable state as set up), load_peak, step_peak."""
        times, tokens = self.step_times, self.step_tokens
        if len(times) > 1:
            times, tokens = times[1:], tokens[1:]
        seconds = sum(times)
        step = seconds / len(times) if times else None
        steps = self.run_steps or self.max_steps
        peak = peak_gb(self.cuda)
        return {
            "peak_memory_gb": round(peak, 4),
            "peak_memory_kind": "cuda_allocated" if self.cuda else "cpu_rss",
            "tokens_per_second": round(sum(tokens) / seconds, 2) if seconds and sum(tokens) else None,
            "step_seconds": round(step, 3) if step else None,
            "eta_seconds": round(step * steps, 1) if step and steps else None,
            "run_steps": steps,
            "steps_measured": len(self.step_times),
            "parts": {k: round(v, 4) for k, v in (("baseline_gb", self.baseline_gb), ("before_training_gb", self.before_gb),
                                                   ("load_peak_gb", self.load_peak_gb), ("step_peak_gb", peak))
                      if v is not None},
        }


def for_job(ctx, job) -> MemoryMeter:
    """The meter of a training job (``job``: worker/recipes/common.TrainJob): a pre-flight's step limit and run
    length from ``ctx.preflight``; its measurement stored beside the job's estimate (rank 0 only)."""
    from worker import distributed

    pf = ctx.preflight or {}
    record = (lambda figures: store(ctx.job, job.spec.to_json(), figures)) if distributed.is_main() else None
    return MemoryMeter(limit=pf.get("steps"), baseline_gb=pf.get("baseline_gb"), record=record, run=pf.get("run"))


def store(job_row, spec: dict, figures: dict) -> None:
    """One MemoryMeasurement row: the job's estimate (``spec["estimate"]``) beside the measured figures."""
    from models_db import session_scope
    from models_db.schema import MemoryMeasurement

    estimate = spec.get("estimate") or {}
    kind = figures["peak_memory_kind"]
    compared = estimate.get("live_gb" if kind == "cuda_allocated" else "total_gb")
    training = spec.get("training") or {}
    settings = {"micro_batch": training.get("per_device_train_batch_size"),
                "gradient_accumulation_steps": training.get("gradient_accumulation_steps"),
                "grad_ckpt": training.get("gradient_checkpointing"), "optimizer": training.get("optim"),
                "seq_len": spec.get("max_seq_length"), **(estimate.get("settings") or {})}
    with session_scope() as db:
        db.add(MemoryMeasurement(
            job_id=job_row.id, kind=job_row.kind, method=spec.get("method") or "?", objective=spec.get("objective"),
            device="cuda" if kind == "cuda_allocated" else "cpu", measured_kind=kind,
            measured_gb=figures["peak_memory_gb"], estimate_gb=compared, measured_parts=figures["parts"],
            estimate_parts=estimate.get("parts") or {}, settings=settings))


def find(trainer) -> MemoryMeter | None:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, MemoryMeter)), None)
