"""The bridge from the HF Trainer to the studio: progress, metrics, complete-checkpoint markers."""
from __future__ import annotations

import math
import time
from pathlib import Path

from transformers import TrainerCallback

from worker.context import JobContext

COMPLETE = "STUDIO_COMPLETE"  # written after a checkpoint is fully on disk; resume ignores others
LOGGED = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")


class StudioCallback(TrainerCallback):
    """Sends progress and metrics to the job's batched writer; stops cleanly on a stale claim
    and on a non-finite loss (keeping the last good checkpoint)."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self._last_progress = 0.0
        self._tok_t0: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kw):
        self.ctx.writer.put(step=state.global_step, max_steps=state.max_steps, message="training")
        self._tok_t0 = (time.monotonic(), state.num_input_tokens_seen)

    def on_step_end(self, args, state, control, **kw):
        self.ctx.check()
        now = time.monotonic()
        if now - self._last_progress >= 0.5 or state.global_step == state.max_steps:
            self.ctx.writer.put(step=state.global_step, max_steps=state.max_steps)
            self._last_progress = now

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        step = state.global_step
        points = [(step, k, float(logs[k])) for k in LOGGED if isinstance(logs.get(k), (int, float))]
        if self._tok_t0 and state.num_input_tokens_seen:
            t0, n0 = self._tok_t0
            now = time.monotonic()
            if now > t0 and state.num_input_tokens_seen > n0:
                points.append((step, "tokens_per_s", (state.num_input_tokens_seen - n0) / (now - t0)))
                points.append((step, "tokens_seen", float(state.num_input_tokens_seen)))
                self._tok_t0 = (now, state.num_input_tokens_seen)
        if points:
            self.ctx.writer.put(points)
            shown = " ".join(f"{n}={v:.4g}" for _, n, v in points if n != "tokens_seen")
            print(f"step {step}/{state.max_steps} {shown}", flush=True)
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            from worker.errors import UserFacingError

            raise UserFacingError(
                f"The loss became {loss} at step {step}. Training stopped; the last checkpoint before it is kept. "
                "Lower learning_rate, keep max_grad_norm at 1.0, or use bf16 instead of fp16.")

    def on_save(self, args, state, control, **kw):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            (ckpt / COMPLETE).write_text(str(state.global_step))


def latest_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint whose save finished; a torn one (no marker) is ignored."""
    done = [p for p in Path(output_dir).glob("checkpoint-*") if (p / COMPLETE).exists()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[1])))
