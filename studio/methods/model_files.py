"""What a stored model folder says about the model, read without torch: its config and module names.

The studio validates a job against these before queuing it (layer counts, target module names),
so a wrong setting fails in the form or the CLI instead of minutes later on a worker.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

# Heads that transformers creates or ties at load time, so a checkpoint may not store them.
LOAD_TIME_HEADS = ("lm_head", "score", "classifier")


def read_config(model_dir: str | Path) -> dict:
    """The model's config.json as a dict."""
    return json.loads((Path(model_dir) / "config.json").read_text())


def _tensor_names(file: Path) -> list[str]:
    """Tensor names from a safetensors header: an 8-byte little-endian length, then JSON."""
    with open(file, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return [k for k in header if k != "__metadata__"]


def module_names(model_dir: str | Path) -> list[str]:
    """Every module that holds weights, and each of its parents ('model.layers.0.self_attn.q_proj',
    'model.layers.0.self_attn', ...), from the safetensors headers; plus the load-time heads."""
    names = set(LOAD_TIME_HEADS)
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        for tensor in _tensor_names(file):
            parts = tensor.split(".")[:-1]  # drop 'weight' / 'bias'
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(names)


def layer_module_names(names: list[str]) -> list[str]:
    """The short names used inside the repeated blocks ('q_proj', 'mlp', ...), for error messages."""
    short = set()
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if part.isdigit():
                short.update(parts[i + 1:])
                break
    return sorted(short)
