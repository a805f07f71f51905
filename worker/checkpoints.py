"""Checkpoints on disk: which are complete, which to keep, and whether they fit.

A checkpoint counts only once ``STUDIO_COMPLETE`` is written after the Trainer's save (a process
killed mid-write leaves a torn folder without it, which resume ignores and removes). Rotation keeps
the last N complete checkpoints plus the best by eval loss; the Trainer's own ``save_total_limit``
keeps the best only with ``load_best_model_at_end``, and may count a torn folder as the newest."""
from __future__ import annotations

import shutil
from pathlib import Path

from studio import store
from studio.advisor.memory import OPTIMIZER_BYTES
from studio.settings import get_settings

COMPLETE = "STUDIO_COMPLETE"
PREFIX = "checkpoint-"
SMALL_FILES_BYTES = 64 * 2**20  # tokenizer, trainer state, scheduler and RNG state, with slack


def _step(path: Path) -> int:
    tail = path.name[len(PREFIX):]
    return int(tail) if tail.isdigit() else -1


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in Path(output_dir).glob(f"{PREFIX}*") if _step(p) >= 0 and (p / COMPLETE).exists()]
    return sorted(found, key=_step)


def mark_complete(checkpoint: Path, step: int) -> None:
    (checkpoint / COMPLETE).write_text(str(step))


def discard_torn(output_dir: Path) -> list[Path]:
    """Remove checkpoint folders a killed process left half-written; returns them."""
    torn = [p for p in Path(output_dir).glob(f"{PREFIX}*") if p.is_dir() and not (p / COMPLETE).exists()]
    for p in torn:
        shutil.rmtree(p, ignore_errors=True)
    return torn


def _key(path: Path) -> Path:
    """A checkpoint folder's key in the shared store: its path under the studio's home."""
    return Path(path).resolve().relative_to(get_settings().home_abs)


def publish(checkpoint: Path) -> None:
    """Copy a complete checkpoint into the shared store (studio/store.py), its marker last, so that a
    retry on another machine resumes from it and a copy cut short stays torn (no marker) there too."""
    if not store.store_url():
        return
    key = _key(checkpoint)
    for child in sorted(Path(checkpoint).iterdir()):
        if child.name != COMPLETE:
            store.put(key / child.name)
    store.put(key / COMPLETE)


def fetch_latest(output_dir: Path) -> Path | None:
    """When this machine has no complete checkpoint of the job but the shared store has one (the
    previous attempt ran elsewhere), fetch the newest complete one into ``output_dir``."""
    if not store.store_url() or complete_checkpoints(output_dir):
        return None
    key = _key(Path(output_dir))
    steps = sorted((int(n[len(PREFIX):]) for n in store.listdir(key)
                    if n.startswith(PREFIX) and n[len(PREFIX):].isdigit()), reverse=True)
    for step in steps:
        if store.exists(key / f"{PREFIX}{step}" / COMPLETE):
            return store.local(key / f"{PREFIX}{step}", into_home=True)
    return None


def keep_set(steps: list[int], eval_losses: dict[int, float], keep_last: int) -> set[int]:
    """The checkpoint steps to keep: the last ``keep_last`` and the one with the lowest eval loss
    (evaluated at that very step)."""
    keep = set(sorted(steps)[-max(keep_last, 1):])
    scored = [s for s in steps if s in eval_losses]
    if scored:
        keep.add(min(scored, key=lambda s: (eval_losses[s], -s)))
    return keep


def rotate(output_dir: Path, keep_last: int, eval_losses: dict[int, float], protect: str | None = None) -> list[Path]:
    """Delete complete checkpoints outside :func:`keep_set` (never ``protect``); returns the deleted."""
    done = complete_checkpoints(output_dir)
    keep = keep_set([_step(p) for p in done], eval_losses, keep_last)
    gone = [p for p in done if _step(p) not in keep and (protect is None or Path(protect).resolve() != p.resolve())]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
        if store.store_url():
            store.remove(_key(p))
    return gone


def checkpoint_bytes(*, trainable: int, total: int, weight_bytes: float, optimizer: str, adapter_only: bool) -> float:
    """One checkpoint's size: the saved weights (the adapter alone for peft models, else the whole
    model), the optimizer's state for the trainable parameters, and the small files."""
    weights = trainable * 4 if adapter_only else total * weight_bytes
    return weights + trainable * OPTIMIZER_BYTES.get(optimizer, 8) + SMALL_FILES_BYTES


def disk_needed(per_checkpoint: float, keep_last: int, final_weights: float, existing: float = 0.0) -> float:
    """Peak bytes still to write: ``keep_last`` checkpoints, the best one, the one being written before
    rotation, and the final weights; checkpoints already on disk are rotated away and give theirs back."""
    return max(per_checkpoint * (keep_last + 2) + final_weights - existing, 0.0)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def check_disk(output_dir: Path, need: float, free: float | None = None) -> None:
    """Refuse to start a run whose checkpoints will not fit on the disk, saying what to change."""
    from worker.errors import UserFacingError

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output_dir).free if free is None else free
    if need > free:
        gb = 2**30
        raise UserFacingError(
            f"Not enough disk space for the checkpoints: this run needs about {need / gb:.1f} GB under "
            f"{output_dir} but only {free / gb:.1f} GB is free. Free some space, lower save_total_limit, "
            "or pick a method that trains fewer parameters (LoRA checkpoints hold only the adapter).")
