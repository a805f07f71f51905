"""Peak training memory, by formula, from a model config (see ``docs/memory.md`` for sources).

peak = weights + trainable_state + activations + logits + overhead, per device, in bytes:

* weights — a frozen base at the load precision (NF4/int8 for quantized linears) plus fp32
  adapters (peft upcasts them); full and freeze load the whole model in fp32 (the worker's recipe:
  trained weights stay fp32 under bf16/fp16 autocast).
* trainable_state — per trainable parameter: an fp32 gradient plus the optimizer's state.
* activations — per layer per token, what autograd keeps for the backward pass (SDPA attention,
  no s² term); with gradient checkpointing only each layer's input plus one layer being recomputed.
* logits — micro_batch · seq · vocab · 4 bytes, twice (fp32 logits and the loss's softmax).
* overhead — CUDA context (or the CPU runtime) plus allocator fragmentation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.advisor.architecture import ModelShape, model_shape, synthetic_config
from studio.advisor.methods import (
    MethodSpec, added_params, base_trainable_params, extra_activation_elements, trained_layers, virtual_tokens,
)

GIB = 2**30
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# NF4: 4 bits per weight; double quantization stores one 8-bit absmax per 64 weights and one fp32
# constant per 256 absmax blocks (Dettmers et al. 2023, QLoRA §3: 0.127 bits/param of constants).
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0  # LLM.int8(); plus one fp32 scale per output row, added per module
QUANT_ALIASES = {"nf4": "nf4", "4bit": "nf4", "int4": "nf4", "int8": "int8", "8bit": "int8"}
OPTIMIZER_BYTES = {  # state bytes per trainable parameter
    "adamw": 8, "adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
    "adamw_8bit": 2, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2, "sgd": 4, "adafactor": 0,
}
GRAD_BYTES = 4  # trainable parameters are fp32, so are their gradients
CUDA_CONTEXT_BYTES = 0.5 * GIB  # CUDA context + cuBLAS workspace, outside torch's allocator stats
CPU_RUNTIME_BYTES = 0.5 * GIB  # Python + torch resident memory before the model loads
FRAGMENTATION = 0.05  # caching-allocator slack on top of live tensors
PARTS = ("weights", "trainable_state", "activations", "logits", "overhead")


@dataclass
class MemoryEstimate:
    """An estimated peak: ``parts`` in bytes (keys :data:`PARTS`), ``total_gb`` in GiB."""

    parts: dict[str, float]
    total_gb: float
    trainable_params: int = 0
    total_params: int = 0
    settings: dict = field(default_factory=dict)

    def parts_gb(self) -> dict[str, float]:
        """The parts in GiB, rounded for display."""
        return {k: round(v / GIB, 3) for k, v in self.parts.items()}


def resolve_shape(config_or_params) -> ModelShape:
    """A :class:`ModelShape` from a config dict, or from a parameter count in billions."""
    if isinstance(config_or_params, ModelShape):
        return config_or_params
    if isinstance(config_or_params, dict):
        return model_shape(config_or_params)
    if isinstance(config_or_params, (int, float)) and config_or_params > 0:
        return model_shape(synthetic_config(float(config_or_params)))
    raise ValueError("need an HF config dict or a parameter count in billions")


def _quant(method: str, quant: str | None) -> str | None:
    if quant is None:
        return "nf4" if method == "qlora" else None
    q = QUANT_ALIASES.get(str(quant).lower())
    if q is None:
        raise ValueError(f"unknown quantization {quant!r}; use nf4 (4-bit) or int8 (8-bit)")
    if method in ("full", "freeze"):
        raise ValueError(f"{method} trains the base weights, which cannot be quantized")
    return q


def weight_bytes(shape: ModelShape, spec: MethodSpec, precision: str, quant: str | None) -> float:
    """Bytes of the base weights plus any new (fp32) parameters."""
    if base_trainable_params(shape, spec):  # full/freeze: the worker loads the whole model in fp32
        return shape.total() * 4.0
    frozen = shape.total()
    if quant is None:
        return frozen * PRECISION_BYTES[precision] + added_params(shape, spec) * 4
    linears = shape.layers * sum(l.in_features * l.out_features for l in shape.linears)
    rows = shape.layers * sum(l.out_features for l in shape.linears)
    qbytes = linears * NF4_BYTES if quant == "nf4" else linears * INT8_BYTES + rows * 4
    # peft's prepare_model_for_kbit_training casts every non-quantized parameter to fp32.
    return qbytes + (frozen - linears) * 4 + added_params(shape, spec) * 4


def layer_activation_elements(shape: ModelShape, trains_linears: bool) -> int:
    """16-bit elements one layer keeps per token for backward (SDPA/flash attention, no s² term).

    Always kept: the norms' inputs (upcast to fp32, so 2 elements each), q, k, v and the attention
    output, and the MLP nonlinearity's inputs/outputs.  Kept only when the layer's own weights
    train: the inputs of the q/k/v, MLP-in and MLP-out projections.
    """
    h, i = shape.hidden, shape.intermediate
    attention = 2 * shape.q_dim + 2 * shape.kv_dim
    norms = 2 * h * 2
    nonlinearity = 3 * i if shape.gated_mlp else i  # gate, act(gate), up  |  the GELU input
    if not shape.gated_mlp:
        norms += h  # dropout masks (1 byte each) in GPT-2/BERT-style blocks, about h elements
    linear_inputs = (2 * h + i) if trains_linears else 0
    return norms + attention + nonlinearity + linear_inputs


def activation_bytes(shape: ModelShape, spec: MethodSpec, precision: str, tokens: int, grad_ckpt: bool) -> float:
    """Activations kept for backward across the layers that gradients flow through."""
    abytes = PRECISION_BYTES[precision]
    if spec.method == "freeze":
        layers = trained_layers(shape, spec)  # nothing below the first trained layer needs grads
        per_layer = layer_activation_elements(shape, True)
    else:
        layers = shape.layers
        per_layer = layer_activation_elements(shape, spec.method == "full") + extra_activation_elements(shape, spec)
    if grad_ckpt:  # each layer's input is kept; one layer at a time is recomputed in backward
        elements = layers * shape.hidden + per_layer
    else:
        elements = layers * per_layer
    elements += 3 * shape.hidden  # final norm (fp32) and the LM head's input
    return elements * tokens * abytes


def logits_bytes(shape: ModelShape, micro_batch: int, tokens_per_seq: int) -> float:
    """fp32 logits and the cross-entropy's softmax over the vocabulary (decoders only)."""
    if shape.encoder:
        return 0.0
    return micro_batch * tokens_per_seq * shape.vocab * 4 * 2


def estimate_memory(
    config_or_params, method: str, *, precision: str = "bf16", micro_batch: int = 1, seq_len: int = 512,
    grad_ckpt: bool = False, optimizer: str = "adamw", quant: str | None = None, lora_r: int = 16,
    target: str = "attention_mlp", shards: int = 1, device: str = "cuda", freeze_layers: int | None = None,
    num_virtual_tokens: int | None = None, lm_logits: bool = True, spec: MethodSpec | None = None,
) -> MemoryEstimate:
    """Estimate one device's peak memory for training ``method`` on the model.

    ``config_or_params`` is an HF ``config.json`` dict or a size in billions of parameters.
    ``shards`` > 1 splits weights and trainable state over that many GPUs (ZeRO-3/FSDP).
    ``device`` is "cuda" or "cpu" (no CUDA context; the CPU runtime instead).
    ``lm_logits`` False for a classification head (no vocabulary-sized logits).
    ``spec`` describes the method in full (a registry params dict through
    :func:`studio.advisor.jobcost.spec_from_params`); it replaces ``lora_r``, ``target``,
    ``freeze_layers`` and ``num_virtual_tokens``.
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_BYTES)}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}")
    if micro_batch < 1 or seq_len < 1 or shards < 1:
        raise ValueError("micro_batch, seq_len and shards must be at least 1")
    shape = resolve_shape(config_or_params)
    if spec is None:
        spec = MethodSpec(method, lora_r=lora_r, target=target, freeze_layers=freeze_layers,
                          virtual_tokens=num_virtual_tokens)
    elif spec.method != method:
        raise ValueError(f"spec is for {spec.method}, not {method}")
    q = _quant(method, quant)
    trainable = base_trainable_params(shape, spec) + added_params(shape, spec)
    seq = seq_len + virtual_tokens(spec)
    tokens = micro_batch * seq

    weights = weight_bytes(shape, spec, precision, q)
    state = trainable * (GRAD_BYTES + OPTIMIZER_BYTES[optimizer])
    if shards > 1:  # ZeRO-3: each rank holds 1/N, plus about two gathered layers in flight
        gathered = 2 * shape.layer_params() * PRECISION_BYTES[precision]
        weights = weights / shards + gathered
        state = state / shards
    acts = activation_bytes(shape, spec, precision, tokens, grad_ckpt)
    logits = logits_bytes(shape, micro_batch, seq) if lm_logits else 0.0
    live = weights + state + acts + logits
    base = CUDA_CONTEXT_BYTES if device == "cuda" else CPU_RUNTIME_BYTES
    overhead = base + FRAGMENTATION * live
    parts = {"weights": weights, "trainable_state": state, "activations": acts, "logits": logits,
             "overhead": overhead}
    settings = {"method": method, "precision": precision, "micro_batch": micro_batch, "seq_len": seq_len,
                "grad_ckpt": grad_ckpt, "optimizer": optimizer, "quant": q, "lora_r": spec.lora_r,
                "target": spec.target, "shards": shards, "device": device}
    return MemoryEstimate(parts=parts, total_gb=sum(parts.values()) / GIB, trainable_params=trainable,
                          total_params=shape.total(), settings=settings)


def gb(nbytes: float) -> float:
    """Bytes to GiB, rounded to 0.1 for messages."""
    return round(nbytes / GIB, 1)


__all__ = ["MemoryEstimate", "estimate_memory", "resolve_shape", "PARTS", "GIB", "NF4_BYTES"]
