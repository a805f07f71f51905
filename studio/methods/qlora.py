"""QLoRA: LoRA on a base loaded in 4-bit NF4 (double quantization) or 8-bit via bitsandbytes; mergeable.

The worker loads the base quantized and merges onto it in full precision (``worker/methods/qlora.py``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from studio.methods import lora
from studio.methods._common import LORA_TRAINING
from studio.methods.spec import Costs, MethodError, MethodSpec, register

NO_BACKEND = (
    "qlora: bitsandbytes cannot run {bits}-bit layers here ({reason}). Install bitsandbytes>=0.45 "
    "(CUDA, or its CPU backend), or choose the lora method instead."
)


@dataclass(frozen=True)
class QLoraParams(lora.LoraParams):
    """LoRA params plus how the frozen base is quantized."""

    bits: int = field(default=4, metadata={
        "help": "Base weights in 4-bit (NF4, about 1/8 of fp32 memory) or 8-bit (LLM.int8).", "choices": [4, 8]})
    quant_type: str = field(default="nf4", metadata={
        "help": "4-bit data type: nf4 (normal-float, QLoRA's choice) or fp4.", "choices": ["nf4", "fp4"]})
    double_quant: bool = field(default=True, metadata={
        "help": "Quantize the quantization constants too (saves about 0.4 bits per weight)."})
    compute_dtype: str = field(default="auto", metadata={
        "help": "dtype for the 4-bit matmuls: auto (bf16 on GPUs that support it, else fp32), "
                "bfloat16, float16, float32.", "choices": ["auto", "bfloat16", "float16", "float32"]})


def check(params, model_config: dict | None) -> None:
    """The LoRA options are valid and bitsandbytes is installed (looked up, not imported)."""
    lora.make_check("qlora")(params, model_config)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MethodError(NO_BACKEND.format(bits=params.bits, reason="bitsandbytes is not installed"))


def quantization(shape, p) -> str:
    """How the estimator stores the frozen base's linear layers."""
    return "int8" if p.bits == 8 else "nf4"


SPEC = register(MethodSpec(
    name="qlora",
    params=QLoraParams,
    summary="LoRA on a 4-bit NF4 (or 8-bit) frozen base; fits large models on small GPUs; mergeable.",
    mergeable=True,
    quantizes_base=True,
    low_rank=True,
    count_as="lora",
    combinable=True,
    default_training=dict(LORA_TRAINING),
    check=check,
    advised_params=lora.advised_params,
    costs=Costs(added=lora.added, extra_activations=lora.extra_activations, quantization=quantization),
))
