"""The torch side of the method registry: how each method is applied, saved, reloaded and merged.

What a method is (params, flags, defaults, cost) is its torch-free spec in ``studio.methods``; each module
here registers the implementation under the spec's name with ``implement(...)`` (peft's tuner table beside
its config table). Stdlib only at module level: each method module imports torch/peft/transformers inside
its functions, so importing the registry stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio import methods as specs
from studio.methods import MethodError, MethodSpec


def save_pretrained_only(model, out_dir: Path, **kwargs) -> None:
    """``save_pretrained`` as safetensors, keeping only weights and json (peft also writes a README)."""
    out_dir = Path(out_dir)
    readme_existed = (out_dir / "README.md").exists()
    model.save_pretrained(str(out_dir), safe_serialization=True, **kwargs)
    if not readme_existed and (out_dir / "README.md").exists():
        (out_dir / "README.md").unlink()


def _default_save(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """Write only safetensors (+ json config): peft adapters or a full transformers model."""
    save_pretrained_only(model, out_dir, state_dict=state_dict)


def _default_load(base_model, saved_dir: Path, *, trainable: bool = False):
    """Rebuild a peft model from its base plus the saved adapter directory."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, str(saved_dir), is_trainable=trainable)
    if not trainable:  # peft leaves soft-prompt embeddings trainable even in inference mode
        model.requires_grad_(False)
        model.eval()
    return model


def _no_load_kwargs(params, model_dir=None) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    """A method's spec and its torch implementation, read as one object: the spec's fields (``name``,
    ``params``, ``mergeable``, ``default_training``, the flags...) are attributes of it too.

    ``apply(model, params, task)`` returns the trainable model (task in ``TASKS``).
    ``load_kwargs(params, model_dir=None)`` are extra ``from_pretrained`` kwargs for the base in
    ``model_dir`` (qlora quantizes, and leaves the layers its 4-bit blocks cannot hold in full precision).
    ``describe(model)``, when set, returns a job-log line and counts for the version's metrics about what
    the method did to the base (qlora: how many weights are quantized, which layers are not).
    ``save(model, dir, state_dict=None)`` writes only safetensors + json (``state_dict``: the model's full
    weights when they are gathered from shards, as under FSDP, where the model itself holds only a shard);
    ``load(base, dir, trainable=False)`` rebuilds.
    ``merge(model)`` returns a plain transformers model (consumes ``model``); None if not mergeable.
    ``after_optimizer_step(model, global_step)``, when set, must be called by the training loop after
    every optimizer step and before ``zero_grad`` (AdaLoRA reallocates its rank budget there).
    """

    spec: MethodSpec
    apply: Callable[[Any, Any, str], Any]
    load_kwargs: Callable[..., dict] = _no_load_kwargs
    save: Callable[..., None] = _default_save
    load: Callable[..., Any] = _default_load
    merge: Callable[[Any], Any] | None = None
    after_optimizer_step: Callable[[Any, int], None] | None = None
    describe: Callable[[Any], tuple[str, dict]] | None = None

    def __getattr__(self, key: str):
        if key == "spec":  # not set yet (copying, unpickling): no spec to look in
            raise AttributeError(key)
        return getattr(self.spec, key)


REGISTRY: dict[str, Method] = {}


def implement(name: str, *, apply: Callable, **torch_side) -> Method:
    """Register the torch side of the spec called ``name`` (one line per method module) and return it.

    ``torch_side`` takes the other :class:`Method` fields (load_kwargs, save, load, merge, ...)."""
    spec = specs.get(name)
    method = Method(spec, apply, **torch_side)
    if spec.mergeable != (method.merge is not None):
        raise ValueError(f"{name}: its spec says mergeable={spec.mergeable} but merge is {method.merge!r}")
    REGISTRY[name] = method
    return method


def get(name: str) -> Method:
    """The method called ``name``; MethodError listing the known names otherwise."""
    specs.get(name)  # an unknown name: the spec registry's error, listing the methods
    try:
        return REGISTRY[name]
    except KeyError:
        raise MethodError(f"{name}: this worker has no implementation of it (worker/methods/).") from None


def names() -> list[str]:
    """Implemented method names, in the specs' order (the UI's)."""
    return [n for n in specs.names() if n in REGISTRY]
