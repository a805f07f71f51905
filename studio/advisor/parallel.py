"""How a job that asks for several GPUs on one machine is spread over them (no torch).

* **ddp**: every GPU holds a whole replica (weights, gradients, optimizer state) and trains on its
  share of each batch; gradients are averaged. Fastest, but the job must fit one GPU.
* **fsdp**: weights, gradients and optimizer state are sharded across the GPUs (ZeRO-3 style) and
  gathered layer by layer, so a model that does not fit one GPU can still train.

``choose_strategy`` picks between them from the advisor's estimate (``jobcost.job_estimate``, kept in
the job's config) and the memory of one of the worker's GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass

from studio.advisor.memory import GIB
from studio.advisor.plan import usable_bytes

STRATEGIES = ("auto", "ddp", "fsdp")
SHARDED_PARTS = ("weights", "trainable_state")  # what FSDP divides by the number of GPUs


@dataclass(frozen=True)
class Strategy:
    """How to run a job: ``name`` is single, ddp or fsdp; ``reason`` says why, in words."""

    name: str
    processes: int
    reason: str


def sharded_gb(estimate: dict, gpus: int) -> float | None:
    """The estimated per-GPU peak under FSDP: weights and optimizer/gradient state split ``gpus`` ways,
    activations, logits and overhead kept whole. None when the estimate has no parts."""
    parts = estimate.get("parts") or {}
    if not parts:
        return None
    return sum(v / gpus if k in SHARDED_PARTS else v for k, v in parts.items())


def choose_strategy(requested: str, gpus: int, estimate: dict | None, gpu_memory_gb: float | None) -> Strategy:
    """The launch strategy for a job asking for ``gpus`` GPUs of ``gpu_memory_gb`` GiB each.

    ``requested`` "ddp" or "fsdp" is honoured; "auto" takes DDP while the whole job (the estimate's
    ``total_gb``) fits the usable memory of one GPU, and FSDP once it does not."""
    if requested not in STRATEGIES:
        raise ValueError(f"distributed must be one of {', '.join(STRATEGIES)}, not {requested!r}")
    if gpus <= 1:
        return Strategy("single", 1, "one device: no distributed launch")
    if requested != "auto":
        return Strategy(requested, gpus, f"{requested} was asked for")
    total = (estimate or {}).get("total_gb")
    if total is None or not gpu_memory_gb:
        return Strategy("ddp", gpus, "no memory estimate or GPU size to compare: DDP, one replica per device")
    fits = usable_bytes(gpu_memory_gb) / GIB
    if total <= fits:
        return Strategy("ddp", gpus, f"the job's estimated peak {total:.1f} GB fits one {gpu_memory_gb:g} GB GPU "
                                     f"({fits:.1f} GB usable): DDP, one replica per GPU")
    shard = sharded_gb(estimate, gpus)
    after = f"; sharded over {gpus} GPUs about {shard:.1f} GB each" if shard is not None else ""
    return Strategy("fsdp", gpus, f"the job's estimated peak {total:.1f} GB exceeds one {gpu_memory_gb:g} GB GPU "
                                  f"({fits:.1f} GB usable): FSDP shards weights, gradients and optimizer state{after}")
