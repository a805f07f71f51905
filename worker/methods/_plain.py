"""Save/load/merge for methods that train the transformers model itself (full, freeze)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

METHOD_FILE = "studio_method.json"  # which method/params produced the weights, to continue training


def remember(model, name: str, params, task: str) -> None:
    """Record the method on the model so a saved version can be trained further the same way."""
    model.studio_method_config = {"method": name, "params": dataclasses.asdict(params), "task": task}


def save_model(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """The whole model as safetensors + config.json (it is already standalone), plus the method json."""
    from .base import save_pretrained_only

    out_dir = Path(out_dir)
    save_pretrained_only(model, out_dir, state_dict=state_dict)
    config = getattr(model, "studio_method_config", None)
    if config:
        (out_dir / METHOD_FILE).write_text(json.dumps(config, indent=2))


def load_model(base_model, saved_dir: Path, *, trainable: bool = False):
    """Same class and dtype as the base, weights from ``saved_dir`` (the base only names the class).

    With ``trainable=True`` the recorded method is applied again, so a freeze-tuned version
    continues with the same layers frozen.
    """
    from .base import get

    saved_dir = Path(saved_dir)
    model = type(base_model).from_pretrained(str(saved_dir), dtype=base_model.dtype)
    config_file = saved_dir / METHOD_FILE
    if trainable and config_file.exists():
        config = json.loads(config_file.read_text())
        method = get(config["method"])
        return method.apply(model, method.params(**config["params"]), config["task"])
    model.requires_grad_(trainable)
    model.train(trainable)
    return model


def merge_identity(model):
    """Nothing to merge: every trained weight already lives in the model."""
    return model


def train_head(model, trainable: bool = True) -> None:
    """Make the task head (lm_head / classifier / score) trainable."""
    from . import _arch

    for name in _arch.head_names(model):
        for p in getattr(model, name).parameters():
            p.requires_grad_(trainable)
