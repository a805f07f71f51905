"""Training recipes: each one readable top to bottom (load -> method -> data -> train -> save -> register)."""
from __future__ import annotations

from worker.errors import UserFacingError


def _sft():
    from worker.recipes import sft

    return sft.train


def _seq_cls():
    from worker.recipes import seq_cls

    return seq_cls.train


RECIPES = {"causal_lm": _sft, "seq_cls": _seq_cls}  # task -> its recipe's train(ctx), imported when used


def train(ctx) -> dict:
    """A training job's entry point (studio/jobkinds.py): the job config's task picks the recipe."""
    task = ctx.job.config.get("task") or "causal_lm"
    if task not in RECIPES:
        raise UserFacingError(f"unknown task {task!r}: use one of {', '.join(RECIPES)}")
    return RECIPES[task]()(ctx)
