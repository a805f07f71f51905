"""Peak training memory, by formula, from a model config (see ``docs/memory.md`` for sources).

peak = weights + trainable_state + activations + logits + overhead, per device, in bytes:

* weights — a frozen base at the load precision (NF4/int8 for quantized linears) plus fp32
  adapters (peft upcasts them); full and freeze load the whole model in fp32 (the worker's recipe:
  trained weights stay fp32 under bf16/fp16 autocast).
* trainable_state — per trainable parameter: an fp32 gradient plus the optimizer's state; plus what the method
  itself keeps while training (``Costs.state_bytes``: AdaLoRA's importance averages).
* activations — per layer per token, what autograd keeps for the backward pass (SDPA attention,
  no s² term); with gradient checkpointing only each layer's input plus one layer being recomputed.
* logits — micro_batch · seq · vocab · 4 bytes, twice (fp32 logits and the loss's softmax).
* objective — what the training objective adds: the reference model (a frozen copy of the adapter when the
  policy is a peft adapter over the frozen base, as TRL keeps it; nothing for full/freeze, whose reference
  log-probabilities are computed before training) and GRPO's generation cache. The sequences per row (a
  preference pair forwards chosen and rejected together) and GRPO's completion length scale activations and
  logits instead.
* overhead — on CUDA the context plus allocator fragmentation; on the CPU the Python/torch runtime plus the
  heap glibc keeps from the previous step's activations (see :data:`CPU_HEAP_RETENTION`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio import methods
from studio.advisor.architecture import ModelShape, model_shape, synthetic_config
from studio.methods import AdvisorChoices, MethodSpec

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
# On the CPU, torch allocates through glibc malloc, whose mmap threshold rises to the size of the largest
# mmapped block freed (up to 32 MiB): once the first step's activations (per-layer tensors of a few MiB) are
# freed, the next step's come from the heap beside pages glibc keeps, and the resident peak from the second
# step on holds about one more set of activations (measured on SmolLM2-135M: +0.27 GB at 256 tokens with LoRA,
# +0.33 GB with full, both ≈ the activations; none with MALLOC_MMAP_THRESHOLD_ fixed; docs/memory.md). Blocks
# above 32 MiB (the logits) are always mmapped and returned, so they are not retained.
CPU_HEAP_RETENTION = 1.0  # sets of activations glibc keeps beside the live ones
PARTS = ("weights", "trainable_state", "activations", "logits", "objective", "overhead")


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


def method_params(shape: ModelShape, spec: MethodSpec, params=None, choices: AdvisorChoices | None = None):
    """The method's params instance the estimate is for: ``params`` as given (an instance, or a dict of
    ``--set`` values parsed by the registry), else what the advisor suggests for ``choices`` (the method's own
    ``advised_params``; every other value its default)."""
    if params is None:
        return spec.params(**spec.advised_params(choices or AdvisorChoices(layers=shape.layers)))
    if isinstance(params, dict):
        return methods.parse_params(spec.name, params)
    if not isinstance(params, spec.params):
        raise ValueError(f"params {type(params).__name__} are not {spec.name}'s ({spec.params.__name__})")
    return params


def _quant(shape: ModelShape, spec: MethodSpec, params, quant: str | None) -> str | None:
    if quant is None:
        return spec.costs.quantization(shape, params)
    q = QUANT_ALIASES.get(str(quant).lower())
    if q is None:
        raise ValueError(f"unknown quantization {quant!r}; use nf4 (4-bit) or int8 (8-bit)")
    if spec.trains_base:
        raise ValueError(f"{spec.name} trains the base weights, which cannot be quantized")
    return q


def weight_bytes(shape: ModelShape, spec: MethodSpec, params, precision: str, quant: str | None) -> float:
    """Bytes of the base weights plus any new (fp32) parameters."""
    if spec.trains_base:  # the worker loads a base whose weights train in fp32
        return shape.total() * 4.0
    frozen = shape.total()
    added = spec.costs.added(shape, params)
    if quant is None:
        return frozen * PRECISION_BYTES[precision] + added * 4
    linears = shape.layers * sum(l.in_features * l.out_features for l in shape.linears)
    rows = shape.layers * sum(l.out_features for l in shape.linears)
    qbytes = linears * NF4_BYTES if quant == "nf4" else linears * INT8_BYTES + rows * 4
    # peft's prepare_model_for_kbit_training casts every non-quantized parameter to fp32.
    return qbytes + (frozen - linears) * 4 + added * 4


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


def activation_bytes(shape: ModelShape, spec: MethodSpec, params, precision: str, tokens: int,
                     grad_ckpt: bool) -> float:
    """Activations kept for backward across the layers that gradients flow through."""
    abytes = PRECISION_BYTES[precision]
    if spec.trains_base:  # gradients flow down to the lowest trained block only, and its linears' inputs are kept
        layers = spec.costs.trained_layers(shape, params)
        per_layer = layer_activation_elements(shape, True)
    else:
        layers = shape.layers
        per_layer = layer_activation_elements(shape, False)
    per_layer += spec.costs.extra_activations(shape, params)
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


@dataclass(frozen=True)
class ObjectiveTerms:
    """What the training objective changes in the estimate: sequences forwarded per micro-batch row, tokens added
    to each (GRPO's completions), whether a reference model is kept, and the generation batch (GRPO)."""

    sequences: int = 1
    extra_tokens: int = 0
    reference: bool = False
    generations: int = 0

    @classmethod
    def of(cls, objective: str | None, params=None) -> ObjectiveTerms:
        """The terms of ``objective`` (a registered name; None: plain SFT) with its ``params`` (an instance, a dict
        of ``--set`` values, or None for its defaults). Flags are read from the spec (``sequences_per_row``,
        ``needs_reference_model``, and its ``flags(params)`` overrides when it has them); GRPO's
        ``num_generations`` and ``max_completion_length`` from its params, by attribute."""
        if not objective:
            return cls()
        from studio import objectives

        spec = objectives.get(objective)
        if params is None or isinstance(params, dict):
            params = objectives.parse_params(objective, params or {})
        flags = {"needs_reference_model": spec.needs_reference_model, "sequences_per_row": spec.sequences_per_row}
        if callable(getattr(spec, "flags", None)):
            flags.update(spec.flags(params))
        generations = int(getattr(params, "num_generations", 0) or 0)
        if generations:  # TRL's micro-batch counts completions: each is one sequence, prompt + completion
            return cls(1, int(getattr(params, "max_completion_length", 0) or 0), bool(flags["needs_reference_model"]),
                       generations)
        return cls(int(flags["sequences_per_row"] or 1), 0, bool(flags["needs_reference_model"]))


def objective_bytes(shape: ModelShape, spec: MethodSpec, params, terms: ObjectiveTerms, precision: str,
                    micro_batch: int, seq: int) -> float:
    """The reference model and GRPO's generation cache.

    Reference: with a peft policy TRL keeps a frozen copy of the starting adapter (its new parameters, fp32) and
    computes the reference by switching adapters over the same frozen base; full and freeze train the base, so
    their reference log-probabilities are computed once before training and no second model is held.
    Generation (GRPO): the KV cache of the completions generated together (at least one group of
    ``num_generations``), at the weights' precision, counted on top although generation and backward do not
    overlap (a margin for the sampling buffers)."""
    out = 0.0
    if terms.reference and not spec.trains_base:
        out += spec.costs.added(shape, params) * 4
    if terms.generations:
        batch = max(micro_batch, terms.generations)
        out += batch * seq * shape.layers * 2 * shape.kv_dim * PRECISION_BYTES[precision]
    return out


def estimate_memory(
    config_or_params, method: str, *, precision: str = "bf16", micro_batch: int = 1, seq_len: int = 512,
    grad_ckpt: bool = False, optimizer: str = "adamw", quant: str | None = None, lora_r: int = 16,
    target: str = "attention_mlp", shards: int = 1, device: str = "cuda", freeze_layers: int | None = None,
    num_virtual_tokens: int | None = None, lm_logits: bool = True, params=None, objective: str | None = None,
    objective_params=None,
) -> MemoryEstimate:
    """Estimate one device's peak memory for training ``method`` on the model.

    ``config_or_params`` is an HF ``config.json`` dict or a size in billions of parameters.
    ``shards`` > 1 splits weights and trainable state over that many GPUs (ZeRO-3/FSDP).
    ``device`` is "cuda" or "cpu" (no CUDA context; the CPU runtime instead).
    ``lm_logits`` False for a classification head (no vocabulary-sized logits).
    ``quant`` stores the frozen base's linear layers in nf4/int8 (default: as the method loads it).
    ``params`` describes the method in full (its params instance, or a dict of ``--set`` values); without
    it the method takes what the advisor suggests for rank ``lora_r``, ``target`` layers, ``freeze_layers``
    trained blocks and ``num_virtual_tokens`` (each method reads those that apply to it).
    ``objective`` (a registered objective; None: SFT) with ``objective_params`` adds the reference model, the
    sequences per row (a preference pair: two) and GRPO's completions (:class:`ObjectiveTerms`).
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_BYTES)}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}")
    if micro_batch < 1 or seq_len < 1 or shards < 1:
        raise ValueError("micro_batch, seq_len and shards must be at least 1")
    shape = resolve_shape(config_or_params)
    spec = methods.get(method)
    choices = AdvisorChoices(rank=lora_r, target=target, layers=shape.layers, trainable_layers=freeze_layers,
                             virtual_tokens=num_virtual_tokens)
    params = method_params(shape, spec, params, choices)
    q = _quant(shape, spec, params, quant)
    trainable = spec.costs.trainable(shape, params)
    terms = ObjectiveTerms.of(objective, objective_params)
    seq = seq_len + terms.extra_tokens + spec.costs.virtual_tokens(shape, params)
    rows = micro_batch * terms.sequences  # sequences in one forward pass
    tokens = rows * seq

    weights = weight_bytes(shape, spec, params, precision, q)
    state = trainable * (GRAD_BYTES + OPTIMIZER_BYTES[optimizer]) + spec.costs.state_bytes(shape, params)
    if shards > 1:  # ZeRO-3: each rank holds 1/N, plus about two gathered layers in flight
        gathered = 2 * shape.layer_params() * PRECISION_BYTES[precision]
        weights = weights / shards + gathered
        state = state / shards
    acts = activation_bytes(shape, spec, params, precision, tokens, grad_ckpt)
    logits = logits_bytes(shape, rows, seq) if lm_logits else 0.0
    extra = objective_bytes(shape, spec, params, terms, precision, micro_batch, seq)
    live = weights + state + acts + logits + extra
    if device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + FRAGMENTATION * live
    else:  # the runtime, and the heap glibc keeps from the previous step's activations (no caching allocator)
        overhead = CPU_RUNTIME_BYTES + CPU_HEAP_RETENTION * acts
    parts = {"weights": weights, "trainable_state": state, "activations": acts, "logits": logits,
             "objective": extra, "overhead": overhead}
    settings = {"method": method, "precision": precision, "micro_batch": micro_batch, "seq_len": seq_len,
                "grad_ckpt": grad_ckpt, "optimizer": optimizer, "quant": q, "lora_r": lora_r,
                "target": target, "shards": shards, "device": device, "objective": objective,
                "sequences_per_row": terms.sequences}
    return MemoryEstimate(parts=parts, total_gb=sum(parts.values()) / GIB, trainable_params=trainable,
                          total_params=shape.total(), settings=settings)


def gb(nbytes: float) -> float:
    """Bytes to GiB, rounded to 0.1 for messages."""
    return round(nbytes / GIB, 1)


__all__ = ["MemoryEstimate", "ObjectiveTerms", "estimate_memory", "method_params", "resolve_shape", "PARTS", "GIB", "NF4_BYTES"]
