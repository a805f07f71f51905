"""The bridge from the HF Trainer to the studio: progress, metrics, complete-checkpoint markers."""
from __future__ import annotations

import math
import time
from pathlib import Path

from transformers import TrainerCallback

from studio import sweeps
from worker import checkpoints
from worker.context import JobContext

LOGGED = ("loss", "eval_loss", "eval_accuracy", "eval_f1", "learning_rate", "grad_norm", "epoch")


class StudioCallback(TrainerCallback):
    """Sends progress and metrics to the job's batched writer; stops cleanly on a stale claim
    and on a non-finite loss (keeping the last good checkpoint). Owns the checkpoints: marks the
    complete ones, rotates them (last ``save_total_limit`` plus the best by eval loss), drops torn
    ones, and refuses a run whose checkpoints will not fit on the disk (worker/checkpoints.py)."""

    def __init__(self, ctx: JobContext, curves: tuple[str, ...] = ()):
        self.ctx = ctx
        # the objective's own figures (DPO's rewards/margins...) beside the studio's, and their eval_ twins
        self.logged = LOGGED + tuple(curves) + tuple(f"eval_{name}" for name in curves)
        self._last_progress = 0.0
        self.keep_last = 2
        self.trial = sweeps.TrialReport.for_config(ctx.job.config)  # a sweep's trial: its pruner sees each evaluation

    def on_init_end(self, args, state, control, **kw):
        # Take rotation over from the Trainer, whose own keeps the best checkpoint only with
        # load_best_model_at_end and sorts by mtime (a torn folder would count as the newest).
        if args.save_total_limit:
            self.keep_last, args.save_total_limit = args.save_total_limit, None

    def on_train_begin(self, args, state, control, model=None, **kw):
        out = Path(args.output_dir)
        for torn in checkpoints.discard_torn(out):  # resume already loaded a complete one
            self.ctx.say(f"removed {torn.name}: its save never finished")
        if model is not None:
            self._check_disk(out, model, args.optim)
        self.ctx.writer.put(step=state.global_step, max_steps=state.max_steps, resume_step=state.global_step,
                            message="training")

    def _check_disk(self, out: Path, model, optim) -> None:
        params = list(model.parameters())
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        weight_bytes = sum(p.numel() * p.element_size() for p in params) / max(total, 1)
        adapter_only = hasattr(model, "peft_config")
        per = checkpoints.checkpoint_bytes(trainable=trainable, total=total, weight_bytes=weight_bytes,
                                           optimizer=str(getattr(optim, "value", optim)), adapter_only=adapter_only)
        final = trainable * 4 if adapter_only else total * weight_bytes
        existing = sum(checkpoints.folder_bytes(p) for p in checkpoints.complete_checkpoints(out))
        checkpoints.check_disk(out, checkpoints.disk_needed(per, self.keep_last, final, existing))

    def on_step_end(self, args, state, control, model=None, **kw):
        self.ctx.check()
        if control.should_save and state.global_step >= state.max_steps and not args.load_best_model_at_end:
            # The Trainer saves at the last step; the version is saved from the same weights right after,
            # so that checkpoint only costs time and disk (most for full fine-tuning). A crash before the
            # version is saved retries from the previous checkpoint. Early stopping keeps it: the best
            # model is reloaded from the checkpoints at the end.
            control.should_save = False
        if control.should_save and model is not None and not all(p.isfinite().all() for p in model.parameters()
                                                                  if p.requires_grad):
            control.should_save = False  # never write (or resume from) non-finite weights
            self._stop_non_finite(args, "the weights", state.global_step)
        now = time.monotonic()
        if now - self._last_progress >= 0.5 or state.global_step == state.max_steps:
            self.ctx.writer.put(step=state.global_step, max_steps=state.max_steps)
            self._last_progress = now

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        step = state.global_step
        # throughput (tokens/s, samples/s, step time, memory, MFU) is worker/perf.py's PerfCallback's
        points = [(step, k, float(logs[k])) for k in self.logged if isinstance(logs.get(k), (int, float))]
        if points:
            self.ctx.writer.put(points)
            shown = " ".join(f"{n}={v:.4g}" for _, n, v in points)
            print(f"step {step}/{state.max_steps} {shown}", flush=True)
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self._stop_non_finite(args, f"the loss ({loss})", step)

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        # a sweep's trial reports each evaluation to its study; sweeps.Pruned ends the job as pruned (job_process)
        if self.trial is not None and state.is_world_process_zero:
            self.trial.evaluated(state.global_step, metrics or {})

    def _stop_non_finite(self, args, what: str, step: int):
        from worker.errors import UserFacingError

        done = checkpoints.complete_checkpoints(Path(args.output_dir))
        kept = f"the last good checkpoint ({done[-1].name}) is kept" if done else "no checkpoint was saved before it"
        raise UserFacingError(
            f"Training stopped: {what} became NaN or infinite at step {step}; {kept}. "
            "Lower learning_rate, keep max_grad_norm at 1.0, or use bf16 instead of fp16.")

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero:  # several training processes: rank 0 owns the checkpoint folder
            return
        out = Path(args.output_dir)
        ckpt = out / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            checkpoints.mark_complete(ckpt, state.global_step)
            checkpoints.publish(ckpt)
        evals = {h["step"]: h["eval_loss"] for h in state.log_history if "eval_loss" in h}
        checkpoints.rotate(out, self.keep_last, evals, protect=state.best_model_checkpoint)


class MethodStepCallback(TrainerCallback):
    """Runs a method's per-step hook (``Method.after_optimizer_step``) after every optimizer step and
    before the gradients are zeroed: AdaLoRA scores importance from those gradients and reallocates
    its rank budget there (peft's ``update_and_allocate``)."""

    def __init__(self, hook):
        self.hook = hook

    def on_optimizer_step(self, args, state, control, model=None, **kw):
        # The Trainer increments global_step after this event; the hook wants the step just taken (1-based),
        # so the run's last step equals AdaLoRA's total_step and its final budget is applied.
        self.hook(model, state.global_step + 1)


def latest_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint whose save finished; a torn one (no marker) is ignored. A retry on another
    machine fetches it from the shared store first (worker/checkpoints.py ``fetch_latest``)."""
    checkpoints.fetch_latest(output_dir)
    done = checkpoints.complete_checkpoints(output_dir)
    return str(done[-1]) if done else None
