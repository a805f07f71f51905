"""The studio's own bottleneck adapter (Houlsby-style), the torch side (spec: studio/methods/adapter.py); no
maintained library fits current transformers.

After the attention output and/or the MLP output of every block, a small module adds
``up(dropout(act(down(h))))`` to the hidden state ``h``. ``up`` starts at zero, so the adapted model
is exactly the base until training moves it. The base stays frozen; adapters are attached as
sub-modules of each block (so they follow ``.to()`` and show in ``state_dict``) and called from
forward hooks (so no model code changes). Saved as ``adapter_model.safetensors`` + ``adapter_config.json``.
Not mergeable: the nonlinearity cannot fold into the base weights.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

from studio.methods import MethodError, check_task
from studio.methods.adapter import AdapterParams, bottleneck

from . import _arch, _plain
from .base import implement

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "studio_adapter_"  # attribute prefix of the adapter sub-modules inside each block
MLP_NAMES = ("mlp", "feed_forward", "ffn", "output")  # BERT's "output" is its MLP output (+ residual/LN)


@functools.cache
def bottleneck_class():
    """The adapter nn.Module class, built on first use so importing this file needs no torch."""
    import torch.nn as nn

    class Bottleneck(nn.Module):
        """h + up(dropout(act(down(h)))), with up zero-initialised."""

        def __init__(self, hidden: int, size: int, nonlinearity: str, dropout: float):
            super().__init__()
            self.down = nn.Linear(hidden, size)
            self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[nonlinearity]()
            self.dropout = nn.Dropout(dropout)
            self.up = nn.Linear(size, hidden)
            nn.init.zeros_(self.up.weight)  # start as the identity: the base model is unchanged
            nn.init.zeros_(self.up.bias)

        def forward(self, hidden_states):
            return hidden_states + self.up(self.dropout(self.act(self.down(hidden_states))))

    return Bottleneck


def _targets(block, placement: str) -> dict[str, object]:
    """{'attn': module, 'mlp': module} whose outputs get an adapter in this block."""
    children = dict(block.named_children())
    attn = next((m for n, m in children.items() if _arch.is_attention(n)), None)
    mlp = next((children[n] for n in MLP_NAMES if n in children), None)
    found = {"attn": attn, "mlp": mlp}
    wanted = ["attn", "mlp"] if placement == "both" else [placement]
    missing = [w for w in wanted if found[w] is None]
    if missing:
        raise MethodError(
            f"adapter: cannot find the {' and '.join(missing)} module in {type(block).__name__} "
            f"(children: {', '.join(children)}). Use placement={'mlp' if 'attn' in missing else 'attn'} or another method."
        )
    return {w: found[w] for w in wanted}


def _hook(adapter):
    """Forward hook that passes the module's hidden-state output through ``adapter``."""
    def hook(module, args, output):
        if isinstance(output, tuple):  # attention returns (hidden, weights, ...)
            return (adapter(output[0]),) + tuple(output[1:])
        return adapter(output)
    return hook


def apply(model, params, task: str):
    """Freeze the base, insert adapters in every block, train them (and the head for seq_cls)."""
    check_task("adapter", task)
    _, blocks = _arch.layer_stack(model)
    hidden = model.config.hidden_size
    for p in model.parameters():
        p.requires_grad_(False)
    handles = []
    cls = bottleneck_class()
    for block in blocks:
        ref = next(block.parameters())
        for where, target in _targets(block, params.placement).items():
            adapter = cls(hidden, bottleneck(params, hidden), params.nonlinearity, params.dropout)
            adapter.to(device=ref.device, dtype=ref.dtype)
            block.add_module(PREFIX + where, adapter)
            handles.append(target.register_forward_hook(_hook(adapter)))
    if task == "seq_cls":
        _plain.train_head(model)
    model.studio_adapter_hooks = handles
    model.studio_adapter_config = {"method": "adapter", "task": task, "hidden_size": hidden,
                                   "params": dataclasses.asdict(params),
                                   "base_model_name_or_path": getattr(model, "name_or_path", "")}
    return model


def _saved_tensors(model, state_dict: dict | None = None) -> dict:
    """Adapter weights, plus the head for classification (it was trained from scratch); taken from
    ``state_dict`` when given (full weights gathered from shards), else from the model's parameters."""
    config = model.studio_adapter_config
    heads = tuple(h + "." for h in _arch.head_names(model)) if config["task"] == "seq_cls" else ()
    names = [n for n, _ in model.named_parameters() if PREFIX in n or (heads and n.startswith(heads))]
    source = state_dict if state_dict is not None else dict(model.named_parameters())
    return {n: source[n].detach().contiguous() for n in names}


def save(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """Write adapter_model.safetensors and adapter_config.json to ``out_dir``."""
    from safetensors.torch import save_file

    if not hasattr(model, "studio_adapter_config"):
        raise MethodError("adapter: this model has no studio adapters to save (apply the adapter method first).")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(_saved_tensors(model, state_dict), str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    (out_dir / CONFIG_NAME).write_text(json.dumps(model.studio_adapter_config, indent=2))


def load(base_model, saved_dir: Path, *, trainable: bool = False):
    """Re-apply the saved adapter config to ``base_model`` and load the saved weights."""
    from safetensors.torch import load_file

    saved_dir = Path(saved_dir)
    config = json.loads((saved_dir / CONFIG_NAME).read_text())
    params = AdapterParams(**config["params"])
    model = apply(base_model, params, config["task"])
    tensors = load_file(str(saved_dir / WEIGHTS_NAME), device=str(next(model.parameters()).device))
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if PREFIX in k]
    if result.unexpected_keys or missing:
        raise MethodError(f"adapter: {saved_dir} does not fit this base model "
                          f"(unexpected {result.unexpected_keys[:3]}, missing {missing[:3]}).")
    for n, p in model.named_parameters():
        p.requires_grad_(trainable and n in tensors)
    model.train(trainable)
    return model


METHOD = implement("adapter", apply=apply, save=save, load=load)
