"""Parameter counts: on a live model, and before launch on the meta device (no memory allocated)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from studio.methods import MethodError, with_context

from .base import Method, get

PLACEHOLDER_STEPS = 1000  # methods that need the run length (AdaLoRA) count the same for any length


def _numel(p) -> int:
    # bitsandbytes packs two 4-bit weights per uint8; count the weights, not the bytes.
    quant_state = getattr(p, "quant_state", None)
    if quant_state is not None and getattr(quant_state, "shape", None) is not None:
        return int(quant_state.shape.numel())
    return p.numel()


def count_parameters(model) -> dict:
    """{"trainable", "total", "ratio"} over unique parameters (tied weights count once)."""
    trainable = total = 0
    for p in model.parameters():
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return {"trainable": trainable, "total": total, "ratio": trainable / total if total else 0.0}


def _load_config(config_or_dir):
    from transformers import AutoConfig

    if isinstance(config_or_dir, dict):
        config = dict(config_or_dir)
        # A config.json of a quantized/GGUF checkpoint would make from_config try to quantize.
        config.pop("quantization_config", None)
        return AutoConfig.for_model(config.pop("model_type"), **config)
    return AutoConfig.from_pretrained(str(Path(config_or_dir)))


def _counting_method(method: Method, params):
    """Methods that cannot apply on meta (qlora quantizes) count as a stand-in (LoRA)."""
    if not method.count_as:
        return method, params
    stand_in = get(method.count_as)
    names = {f.name for f in dataclasses.fields(stand_in.params)}
    values = {k: v for k, v in dataclasses.asdict(params).items() if k in names}
    return stand_in, stand_in.params(**values)


def _meta_safe(params):
    """Params with data-dependent initialisations (SVD, text embeddings) switched to plain ones."""
    updates = {}
    for f in dataclasses.fields(params):
        if f.name == "init_lora_weights":
            updates[f.name] = "true"
        elif f.name == "init_text":
            updates[f.name] = ""
    return dataclasses.replace(params, **updates)


def estimate_trainable(config_or_dir, method: str | Method, params, task: str) -> dict:
    """Count what ``method`` would train on the model of ``config_or_dir`` without allocating weights.

    ``config_or_dir`` is a config.json dict or a model directory. Builds the model on the meta device
    and applies the method there; MethodError (e.g. unknown target modules) propagates, so this also
    validates a job before it is queued.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    method = get(method) if isinstance(method, str) else method
    method, params = _counting_method(method, params)
    params = with_context(_meta_safe(params), total_steps=PLACEHOLDER_STEPS)
    config = _load_config(config_or_dir)
    cls = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    # torch's meta device (not accelerate's init_empty_weights) keeps tied embeddings tied.
    with torch.device("meta"):
        model = cls.from_config(config)
        try:
            model = method.apply(model, params, task)
        except MethodError:
            raise
        except Exception as exc:  # a peft/transformers limit on meta tensors, not a user error
            raise MethodError(f"{method.name}: cannot estimate parameters for this model ({exc}).") from exc
    return count_parameters(model)
