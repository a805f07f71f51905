"""Find settings that make a method fit the hardware, or say by how much it does not.

The ladder tries the cheapest changes first: a smaller micro-batch (same effective batch through
gradient accumulation, down to 4), then gradient checkpointing, then ZeRO-3 sharding over the GPUs
(when there are several), then an 8-bit optimizer; only then micro-batches below 4, in the same order.  Shorter sequences, a 4-bit base, more GPUs or a
smaller model change the job itself, so they are only suggested.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from studio import methods
from studio.advisor.memory import GIB, MemoryEstimate, estimate_memory, gb, resolve_shape

USABLE_FRACTION = 0.97  # a "24 GB" card exposes a little less to the allocator than its label
EIGHT_BIT_OPTIMIZER = "paged_adamw_8bit"
MIN_BUSY_BATCH = 4


@dataclass(frozen=True)
class Hardware:
    """Devices a job could run on: GPUs (label, GiB) or the CPU with its RAM (GiB, or None = unknown)."""

    gpus: tuple[float, ...] = ()
    ram_gb: float | None = None

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    @property
    def largest(self) -> float | None:
        return max(self.gpus) if self.gpus else self.ram_gb

    def labels(self) -> list[str]:
        if self.cpu_only:
            return [f"CPU ({self.ram_gb:g} GB RAM)" if self.ram_gb else "CPU"]
        return [f"GPU {i} ({g:g} GB)" for i, g in enumerate(self.gpus)]

    def describe(self) -> str:
        if self.cpu_only:
            return f"CPU only, {self.ram_gb:g} GB RAM" if self.ram_gb else "CPU only, RAM unknown"
        if len(set(self.gpus)) == 1:
            return f"{len(self.gpus)}× {self.gpus[0]:g} GB GPU"
        return ", ".join(f"{g:g} GB" for g in self.gpus) + " GPUs"


@dataclass
class Plan:
    """One method's planned settings, its estimate there, and whether and where it fits."""

    method: str
    estimate: MemoryEstimate
    fits: bool
    fits_on: list[str]
    make_it_fit: list[str]
    over_gb: float = 0.0  # how far the most economical settings exceed the budget
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "total_gb": round(self.estimate.total_gb, 2),
            "parts": self.estimate.parts_gb(),
            "fits": self.fits,
            "fits_on": self.fits_on,
            "make_it_fit": self.make_it_fit,
            "trainable_params": self.estimate.trainable_params,
            "settings": self.settings,
        }


def usable_bytes(gib: float) -> float:
    """Bytes the allocator can really use on a device sold as ``gib`` GiB."""
    return gib * USABLE_FRACTION * GIB


def micro_batches(target: int) -> list[int]:
    """``target`` then the powers of two below it, largest first."""
    out = [target]
    p = 2 ** int(math.log2(target)) if target > 1 else 1
    while p >= 1:
        if p < target:
            out.append(p)
        p //= 2
    return out


def _modes(method: str, n_gpus: int):
    """(grad_ckpt, optimizer, shards) in the order the ladder tries them."""
    yield False, "adamw", 1
    yield True, "adamw", 1
    if n_gpus > 1:
        yield True, "adamw", n_gpus
    if not methods.get(method).tiny_optimizer_state:  # an 8-bit optimizer only helps when there is real state
        yield True, EIGHT_BIT_OPTIMIZER, 1
        if n_gpus > 1:
            yield True, EIGHT_BIT_OPTIMIZER, n_gpus


def _budget(hw: Hardware, shards: int) -> float | None:
    if hw.cpu_only:
        return usable_bytes(hw.ram_gb) if hw.ram_gb else None
    return usable_bytes(min(hw.gpus) if shards > 1 else max(hw.gpus))


def _total(est: MemoryEstimate) -> float:
    return sum(est.parts.values())


def _changes(est: MemoryEstimate, target_batch: int) -> list[str]:
    s = est.settings
    out = []
    if s["micro_batch"] < target_batch:
        acc = math.ceil(target_batch / s["micro_batch"])
        out.append(f"micro-batch {s['micro_batch']} × {acc} gradient-accumulation steps (effective batch {target_batch})")
    if s["grad_ckpt"]:
        out.append("gradient checkpointing on")
    if s["shards"] > 1:
        out.append(f"ZeRO-3/FSDP sharding over {s['shards']} GPUs")
    if s["optimizer"] != "adamw":
        out.append(f"8-bit optimizer ({s['optimizer']})")
    return out


def plan_method(config_or_params, method: str, hw: Hardware, *, seq_len: int, target_batch: int,
                precision: str = "bf16", **method_kwargs) -> Plan:
    """Walk the ladder for ``method`` and return the first settings that fit (or the leanest that don't)."""
    shape = resolve_shape(config_or_params)
    device = "cpu" if hw.cpu_only else "cuda"
    n = len(hw.gpus)
    est = None
    for ckpt, optim, shards, mb in _ladder(method, n, target_batch):
        budget = _budget(hw, shards)
        est = estimate_memory(shape, method, precision=precision, micro_batch=mb, seq_len=seq_len,
                              grad_ckpt=ckpt, optimizer=optim, shards=shards, device=device, **method_kwargs)
        if budget is None or _total(est) <= budget:
            return _fitting_plan(method, est, hw, target_batch, budget is None)
    return _failing_plan(shape, method, est, hw, target_batch, precision, method_kwargs)


def _ladder(method: str, n_gpus: int, target_batch: int):
    """(grad_ckpt, optimizer, shards, micro_batch) in order of preference.

    Micro-batches of at least ``MIN_BUSY_BATCH`` (or the target, if smaller) are tried in every
    memory mode before smaller ones: checkpointing at micro-batch 4 keeps a GPU busier than no
    checkpointing at micro-batch 1.  The last candidate is always the leanest.
    """
    floor = min(target_batch, MIN_BUSY_BATCH)
    sizes = micro_batches(target_batch)
    for keep in (lambda mb: mb >= floor, lambda mb: mb < floor):
        for ckpt, optim, shards in _modes(method, n_gpus):
            for mb in filter(keep, sizes):
                yield ckpt, optim, shards, mb


def _settings(est: MemoryEstimate, target_batch: int) -> dict:
    s = est.settings
    return {"micro_batch": s["micro_batch"], "gradient_accumulation_steps": math.ceil(target_batch / s["micro_batch"]),
            "grad_ckpt": s["grad_ckpt"], "optimizer": s["optimizer"], "shards": s["shards"], "seq_len": s["seq_len"],
            "precision": s["precision"], "quant": s["quant"]}


def _fitting_plan(method, est, hw: Hardware, target_batch, unknown_budget) -> Plan:
    total = _total(est)
    if est.settings["shards"] > 1:
        fits_on = [f"all {len(hw.gpus)} GPUs together (sharded)"]
    elif unknown_budget:
        fits_on = hw.labels()
    else:
        budgets = hw.gpus or (hw.ram_gb,)
        fits_on = [label for label, g in zip(hw.labels(), budgets) if total <= usable_bytes(g)]
    changes = _changes(est, target_batch)
    if unknown_budget:
        changes.append("RAM size unknown: assumed enough; give the RAM in GB (--ram-gb in the CLI) to check")
    return Plan(method, est, True, fits_on, changes, 0.0, _settings(est, target_batch))


def _failing_plan(shape, method, est, hw: Hardware, target_batch, precision, kwargs) -> Plan:
    """The leanest settings still do not fit: say by how much, and what would."""
    budget = _budget(hw, est.settings["shards"])
    over = (_total(est) - budget) / GIB
    where = "the largest GPU" if not hw.cpu_only else "RAM"
    device = "cpu" if hw.cpu_only else "cuda"
    notes = [f"needs {est.total_gb:.1f} GB even with {', '.join(_changes(est, target_batch)) or 'the leanest settings'}:"
             f" {over:.1f} GB more than {where} can hold ({hw.largest:g} GB)"]
    common = dict(precision=precision, micro_batch=1, grad_ckpt=True, optimizer=est.settings["optimizer"],
                  shards=est.settings["shards"], device=device, **kwargs)
    seq = est.settings["seq_len"]
    while seq > 128:
        seq //= 2
        shorter = estimate_memory(shape, method, seq_len=seq, **common)
        if _total(shorter) <= budget:
            notes.append(f"shorter sequences: at {seq} tokens it needs {shorter.total_gb:.1f} GB")
            break
    else:
        notes.append("shorter sequences alone are not enough")
    spec = methods.get(method)
    if spec.suggest_4bit_base and "quant" not in kwargs:
        q = estimate_memory(shape, method, seq_len=est.settings["seq_len"], quant="nf4", **common)
        notes.append(f"a 4-bit NF4 base (as qlora) needs {q.total_gb:.1f} GB")
    if spec.trains_base and not hw.cpu_only:  # its trained base is what must be sharded
        needed = _gpus_needed(shape, method, est, max(hw.gpus), common)
        if needed:
            notes.append(f"more GPUs: {needed}× {max(hw.gpus):g} GB with ZeRO-3 sharding")
    fraction = budget / _total(est)
    notes.append(f"a smaller model: about {shape.total() * fraction / 1e9:.2g} B parameters or fewer")
    return Plan(method, est, False, [], notes, round(over, 2), _settings(est, target_batch))


def _gpus_needed(shape, method, est, gpu_gb, common) -> int | None:
    kwargs = {k: v for k, v in common.items() if k != "shards"}
    for n in (2, 4, 8, 16, 32, 64):
        sharded = estimate_memory(shape, method, seq_len=est.settings["seq_len"], shards=n, **kwargs)
        if _total(sharded) <= usable_bytes(gpu_gb):
            return n
    return None


__all__ = ["Hardware", "Plan", "plan_method", "usable_bytes", "micro_batches", "gb"]
