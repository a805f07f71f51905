"""Pieces several method specs share: target-module presets and their help, list and pattern parsing, the
layer count of a config, the soft-prompt length field and the measured training defaults."""
from __future__ import annotations

from studio.methods.spec import MethodError

TARGET_PRESETS = ("attention", "attention_mlp", "all_linear")
# A field naming modules (checked against the model's weights before a job is queued).
TARGETS_META = {"modules": TARGET_PRESETS}
SAVE_META = {"modules": ()}
TARGET_HELP = (
    "Which linear layers get adapters: attention (q/k/v/o projections), attention_mlp (plus the MLP), "
    "all_linear (every linear layer in the blocks), or a comma list of module names such as q_proj,v_proj."
)
# Chosen by measurement (bench/quality.py, docs/benchmarks.md): on short runs (tens to hundreds of steps)
# a linear decay from the first step beats warm-up + cosine; the advisor adds a short warm-up to long runs.
LORA_TRAINING = {"learning_rate": 2e-4, "warmup_ratio": 0.0, "lr_scheduler_type": "linear"}
PROMPT_TRAINING = {"learning_rate": 3e-2, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"}
VIRTUAL_TOKENS_META = {
    "help": "How many learnable virtual tokens are prepended to every input (the articles use 20-50).",
    "min": 1, "max": 512,
}


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_int_map(method: str, key: str, text: str) -> dict[str, int]:
    """'q_proj=16,down_proj=4' -> {'q_proj': 16, 'down_proj': 4} (peft rank/alpha patterns)."""
    result = {}
    for item in split_list(text):
        name, sep, value = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = 0
        if not sep or not name.strip() or number < 1:
            raise MethodError(
                f"{method}: {key} must look like 'regex=int,regex=int' with ints >= 1 (got {item!r}). "
                f"Example: --set {key}=q_proj=16,down_proj=4"
            )
        result[name.strip()] = number
    return result


def parse_layers(method: str, text: str, num_layers: int | None) -> list[int] | None:
    """'0,1,5' -> [0, 1, 5]; '' -> None (all layers). Checked against the model's layer count."""
    items = split_list(text)
    if not items:
        return None
    try:
        layers = [int(i) for i in items]
    except ValueError:
        raise MethodError(
            f"{method}: layers_to_transform must be a comma list of layer indices (got {text!r}). "
            "Example: --set layers_to_transform=0,1"
        ) from None
    if num_layers is not None and any(i < 0 or i >= num_layers for i in layers):
        raise MethodError(
            f"{method}: layers_to_transform has an index outside 0..{num_layers - 1} (got {text!r}); "
            f"the model has {num_layers} layers."
        )
    return layers


def config_num_layers(model_config: dict | None) -> int | None:
    """Layer count from a config.json dict, whatever the architecture calls it."""
    if not model_config:
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(model_config.get(key), int):
            return model_config[key]
    return None
