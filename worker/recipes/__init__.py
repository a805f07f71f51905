"""Training recipes: each one readable top to bottom (load -> method -> data -> train -> save -> register)."""
from __future__ import annotations

import importlib

from worker.errors import UserFacingError

RECIPES = {"causal_lm": "worker.recipes.sft", "seq_cls": "worker.recipes.seq_cls"}  # task -> module with train(ctx)


def train(ctx) -> dict:
    """A training job's entry point (studio/jobkinds.py): the job config's task picks the recipe."""
    task = ctx.job.config.get("task") or "causal_lm"
    if task not in RECIPES:
        raise UserFacingError(f"unknown task {task!r}: use one of {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[task]).train(ctx)
