"""Training recipes: each one readable top to bottom (load -> method -> data -> train -> save -> register), the
torch half of the training objectives (studio.objectives), registered here under the same names."""
from __future__ import annotations

from studio import objectives
from worker.errors import UserFacingError


def _sft():
    from worker.recipes import sft

    return sft.train


def _seq_cls():
    from worker.recipes import seq_cls

    return seq_cls.train


def _preference():
    from worker.recipes import preference

    return preference.train


def _grpo():
    from worker.recipes import grpo

    return grpo.train


# objective -> its recipe's train(ctx), imported when used. The preference objectives share one recipe, GRPO and
# RLOO another: TRL's trainer for each is picked in worker/recipes/trl_trainers.py.
RECIPES = {"sft": _sft, "classification": _seq_cls, "dpo": _preference, "kto": _preference, "orpo": _preference,
           "simpo": _preference, "reward": _preference, "grpo": _grpo, "rloo": _grpo}


def train(ctx) -> dict:
    """A training job's entry point (studio/jobkinds.py): the job config's objective picks the recipe (a job
    stored before objectives existed names it by its task: causal_lm is sft, seq_cls classification)."""
    config = ctx.job.config
    try:
        objective = objectives.of_config(config)
    except objectives.ObjectiveError as e:
        raise UserFacingError(str(e)) from None
    if objective not in RECIPES:
        raise UserFacingError(f"objective {objective!r}: this worker has no recipe for it; it trains "
                              f"{', '.join(RECIPES)}")
    return RECIPES[objective]()(ctx)
