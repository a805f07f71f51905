"""Full fine-tuning, the torch side: every weight trains; the result is a standalone model (spec:
studio/methods/full.py)."""
from __future__ import annotations

from studio.methods import check_task

from . import _plain
from .base import implement


def apply(model, params, task: str):
    """Unfreeze everything (a base loaded for inference may carry frozen weights)."""
    check_task("full", task)
    for p in model.parameters():
        p.requires_grad_(True)
    _plain.remember(model, "full", params, task)
    return model


METHOD = implement("full", apply=apply, save=_plain.save_model, load=_plain.load_model, merge=_plain.merge_identity)
