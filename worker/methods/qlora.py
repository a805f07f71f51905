"""QLoRA, the torch side: LoRA on a base loaded in 4-bit NF4 (double quantization) or 8-bit via bitsandbytes
(spec: studio/methods/qlora.py).

The base must be loaded with ``load_kwargs(params)``. Merging reloads the base in full precision
and merges there: merging into 4-bit weights would re-quantize and lose the update.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from studio.methods import MethodError
from studio.methods.qlora import NO_BACKEND

from .base import implement
from .lora import save, wrap


def _compute_dtype(name: str):
    import torch

    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, name)


# Heads stay in full precision: they are small, and a classification head must train in full.
SKIP_MODULES = ["lm_head", "score", "classifier"]

# bitsandbytes quantizes 4-bit weights in blocks of 64 along each row, and its CPU fast path (AVX-512 with
# bf16, taken for inference) repacks them 32 rows at a time: a layer whose in_features is not a multiple of
# 64, or out_features of 32, crashes there ("shape '[32, 0]' is invalid"). Such layers stay unquantized.
BLOCK_4BIT = 64
ROW_GROUP_4BIT = 32


def fits_4bit_blocks(in_features: int, out_features: int) -> bool:
    """Whether a linear layer of this shape quantizes to 4-bit on every bitsandbytes backend."""
    return in_features % BLOCK_4BIT == 0 and out_features % ROW_GROUP_4BIT == 0


def narrow_linears(model_dir) -> list[str]:
    """Names (relative to the backbone, matched as suffixes by transformers) of the linear layers of the
    model in ``model_dir`` that cannot be quantized to 4-bit; built on the meta device, no weights read."""
    import torch
    from transformers import AutoModel

    from .counting import _load_config

    with torch.device("meta"):
        backbone = AutoModel.from_config(_load_config(model_dir))
    return [name for name, module in backbone.named_modules()
            if isinstance(module, torch.nn.Linear) and not fits_4bit_blocks(module.in_features, module.out_features)]


def load_kwargs(params, model_dir=None) -> dict:
    """from_pretrained kwargs that quantize the base: 4-bit NF4 + double quant, or 8-bit.

    With ``model_dir``, 4-bit leaves the layers that do not fit its blocks in full precision
    (``describe`` then names them in the job log and counts them)."""
    from transformers import BitsAndBytesConfig

    if params.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_MODULES)}
    skip = SKIP_MODULES + (narrow_linears(model_dir) if model_dir else [])
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True,
        llm_int8_skip_modules=skip,
        bnb_4bit_quant_type=params.quant_type,
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=_compute_dtype(params.compute_dtype),
    )}


def probe_backend(bits: int, device) -> None:
    """Run one tiny quantized matmul on ``device``; MethodError when the backend cannot."""
    try:
        import bitsandbytes as bnb
        import torch

        x = torch.randn(2, 64, device=device)
        if bits == 4:
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32).to(device)
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False).to(device)
        layer(x)
    except Exception as exc:  # any failure here means the backend is unusable on this device
        raise MethodError(NO_BACKEND.format(bits=bits, reason=f"{type(exc).__name__}: {exc}")) from exc


def _is_quantized(model) -> bool:
    # Look at the layers themselves: transformers' is_loaded_in_4bit flags move between versions.
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def apply(model, params, task: str):
    """LoRA on the quantized base; the quantized weights stay frozen, norms are upcast to fp32."""
    from peft import prepare_model_for_kbit_training

    if not _is_quantized(model):
        raise MethodError(
            "qlora: the base model is not quantized. Load it with "
            "from_pretrained(..., **get('qlora').load_kwargs(params)), or use the lora method."
        )
    probe_backend(params.bits, next(model.parameters()).device)
    # Gradient checkpointing is a training option the recipe sets; do not force it here.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return wrap("qlora", model, params, task)


def describe(model) -> tuple[str, dict]:
    """A job-log line and the version's counts: how many base weights are quantized, and which linear
    layers (other than the heads) stayed in full precision because they do not fit the 4-bit blocks."""
    import bitsandbytes as bnb
    import torch

    quantized = kept = 0
    kept_names = []
    for name, module in model.named_modules():
        # bitsandbytes' own layers (peft's LoRA wrapper around one has the same class name)
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            quantized += _numel(module.weight)
        elif type(module) is torch.nn.Linear and not any(name.endswith(s) for s in SKIP_MODULES) \
                and not any(part in name for part in ("lora_", "modules_to_save")):
            kept += module.weight.numel()
            kept_names.append(name.removeprefix("base_model.model."))
    line = f"qlora: {quantized:,} base weights quantized"
    if kept_names:
        shown = ", ".join(kept_names[:4]) + (f" and {len(kept_names) - 4} more" if len(kept_names) > 4 else "")
        line += (f"; {len(kept_names)} linear layers ({kept:,} weights) kept in full precision because their "
                 f"width is not a multiple of the {BLOCK_4BIT}-wide 4-bit block: {shown}")
    return line, {"quantized_params": quantized, "unquantized_linear_params": kept}


def _numel(weight) -> int:
    quant_state = getattr(weight, "quant_state", None)  # 4-bit packs two weights per byte
    return int(quant_state.shape.numel()) if getattr(quant_state, "shape", None) is not None else weight.numel()


def merge(model):
    """Merge into a full-precision base: as loaded, or reloaded from disk when the base is quantized."""
    import torch
    from peft import PeftModel

    if not _is_quantized(model.get_base_model()):
        return model.merge_and_unload()  # e.g. the adapter was loaded onto an fp32 base for export
    base_path = model.peft_config[model.active_adapter].base_model_name_or_path
    if not base_path or not Path(base_path).exists():
        raise MethodError(f"qlora: cannot merge: the base model path {base_path!r} is not on disk.")
    full = type(model.get_base_model()).from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
    with tempfile.TemporaryDirectory() as tmp:
        save(model, Path(tmp))
        return PeftModel.from_pretrained(full, tmp).merge_and_unload()


METHOD = implement("qlora", apply=apply, load_kwargs=load_kwargs, save=save, merge=merge, describe=describe)
