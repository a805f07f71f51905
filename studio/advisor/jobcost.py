"""What one training job will cost, from its settings: trainable parameters and peak memory (no torch).

The Train tab shows it while the form changes, ``studio train`` prints it before queuing, the job's
config keeps it (``estimate``), and the job page sets it beside the peak the worker measured. The method's
own cost terms (``studio.methods``, its spec's ``costs``) give the counts.

    count_trainable(config, spec.method, spec.method_params)   # {"trainable", "total", "ratio"}
    job_estimate(config, train_spec.to_json(), gpus=[24.0])
"""
from __future__ import annotations

from studio import methods
from studio.advisor.architecture import model_shape
from studio.advisor.memory import GIB, estimate_memory
from studio.advisor.plan import usable_bytes


def count_trainable(config: dict, method: str, params: dict | None = None) -> dict:
    """``{"trainable", "total", "ratio"}`` as peft's ``print_trainable_parameters`` would report them
    (total = base + what the method adds), from ``config.json`` alone. Unset params take the method's
    defaults; a bad value raises the registry's MethodError."""
    shape, spec = model_shape(config), methods.get(method)
    p = methods.parse_params(method, params or {})
    trainable = spec.costs.trainable(shape, p)
    total = shape.total() + spec.costs.added(shape, p) + spec.costs.frozen_added(shape, p)
    return {"trainable": trainable, "total": total, "ratio": trainable / total if total else 0.0}


def _precision(training: dict, device: str) -> str:
    """What the worker's recipe trains in: fp32 on CPU; fp16 when asked, else bf16 on a GPU."""
    if device == "cpu":
        return "fp32"
    return "fp16" if training.get("fp16") else "bf16"


def job_estimate(config: dict, spec: dict, gpus: list[float] | None = None) -> dict:
    """The estimated peak of a job (``TrainSpec.to_json()``) on ``gpus`` (GiB each; none = CPU).

    Returns total and parts in GiB, ``live_gb`` (the tensors alone, what CUDA's
    ``max_memory_allocated`` measures), the parameter counts, and the GPUs it fits on.
    """
    training, method = spec.get("training", {}), spec["method"]
    device = "cuda" if gpus else "cpu"
    est = estimate_memory(  # the method's params say how it stores the base (qlora: bits)
        config, method, params=dict(spec.get("method_params") or {}),
        precision=_precision(training, device), micro_batch=int(training.get("per_device_train_batch_size", 1)),
        seq_len=int(spec.get("max_seq_length") or 512), grad_ckpt=bool(training.get("gradient_checkpointing")),
        optimizer=training.get("optim", "adamw"), device=device, lm_logits=spec.get("task") != "seq_cls",
        objective=spec.get("objective"), objective_params=dict(spec.get("objective_params") or {}),  # what it trains
    )
    counts = count_trainable(config, method, spec.get("method_params"))
    total = sum(est.parts.values())
    return {
        "total_gb": round(est.total_gb, 3),
        "live_gb": round((total - est.parts["overhead"]) / GIB, 3),
        "parts": est.parts_gb(),
        "device": device,
        "gpus": list(gpus or []),
        "fits_on": [f"GPU {i} ({g:g} GB)" for i, g in enumerate(gpus or []) if total <= usable_bytes(g)],
        "settings": {k: est.settings[k] for k in ("precision", "micro_batch", "seq_len", "grad_ckpt", "optimizer",
                                                   "quant")},
        **counts,
    }


def estimate_vs_measured(config: dict | None, result: dict | None) -> dict | None:
    """The job's estimated peak beside the one its worker measured, or None when either is missing.

    CUDA runs record ``max_memory_allocated`` (tensors only), compared with the estimate's
    ``live_gb``; CPU runs record the process's peak resident memory, compared with ``total_gb``.
    """
    estimate = (config or {}).get("estimate") or {}
    metrics = (result or {}).get("metrics") or {}
    measured, kind = metrics.get("peak_memory_gb"), metrics.get("peak_memory_kind")
    if "total_gb" not in estimate:
        return None
    out = {"estimated_gb": estimate["total_gb"], "measured_gb": measured, "measured_kind": kind,
           "compared": None, "compared_gb": None, "error_pct": None}
    if measured:
        key = "live_gb" if kind == "cuda_allocated" else "total_gb"
        out.update(compared=key, compared_gb=estimate[key],
                   error_pct=round(100 * (estimate[key] - measured) / measured, 1))
    return out


def describe_cost(counts: dict, estimate: dict | None = None, *, markdown: bool = True) -> str:
    """One line: '7.17k of 51.4k parameters train (14 %) · estimated peak memory 0.61 GB (CPU)'."""
    b = "**" if markdown else ""
    text = (f"{b}{human(counts['trainable'])}{b} of {human(counts['total'])} parameters train "
            f"({b}{100 * counts['ratio']:.3g} %{b})")
    if estimate and "total_gb" in estimate:
        if estimate["device"] == "cpu":
            where = "training on the CPU"
        elif estimate["fits_on"]:
            where = "fits " + ", ".join(estimate["fits_on"])
        else:
            where = f"does not fit the largest GPU ({max(estimate['gpus']):g} GB)"
        text += f" · estimated peak memory {b}{estimate['total_gb']:.2f} GB{b} ({where})"
    return text


def describe_memory(vs: dict | None) -> str:
    """'est. 0.61 GB' until the job has a measured peak; then '0.58 GB · est. 0.61 (+5 %)'.

    On CUDA the measured peak is the tensors' (``max_memory_allocated``), so the estimate shown beside it
    is the estimate's tensors too (no CUDA context, no allocator slack)."""
    if not vs:
        return "—"
    if vs["measured_gb"] is None:
        return f"est. {vs['estimated_gb']:.2f} GB"
    return f"{vs['measured_gb']:.2f} GB · est. {vs['compared_gb']:.2f} ({vs['error_pct']:+.0f} %)"


def human(n: int) -> str:
    """134515008 -> '135M', 44192 -> '44.2k'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


__all__ = ["count_trainable", "describe_cost", "describe_memory", "estimate_vs_measured", "human", "job_estimate"]
