"""Routing by GPU memory: which Celery queue a job goes to, and which queues a worker consumes.

Queues are named by memory tier. A GPU worker consumes the default queue (``<base>``, the first of
``STUDIO_WORKER_QUEUES``) plus ``<base>.mem<T>`` for every tier T its GPUs reach; with n GPUs also
``<base>.mem<T>x<k>`` for k = 2..n (multi-GPU jobs). A training job whose config carries a GPU estimate
(``config["estimate"]``, studio.advisor.jobcost) goes to the smallest tier that holds it, so only
workers that can hold it ever see its message; anything else (a CPU-only fleet, an export, a job
without an estimate) stays on the default queue, which every worker consumes.

A tier's name is the size GPUs are sold as; its threshold is the least memory such a card reports
(``torch.cuda`` total memory in GiB: an "80 GB" H100 reports 79.2, a "24 GB" L4 22.0). Routing and
consuming use the same threshold, so a worker on a tier's queue always holds what the tier promises.

    queue_for("gpu", {"device": "cuda", "total_gb": 20.0}, 1)      # 'gpu.mem24'
    worker_queues("gpu", [{"memory_gb": 79.2}, {"memory_gb": 79.2}])  # gpu, gpu.mem8 ... gpu.mem80x2
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from models_db import Worker
from models_db.schema import utcnow
from studio.advisor import parallel
from studio.advisor.plan import USABLE_FRACTION
from studio.settings import get_settings

# (name, least GiB a card sold at that size reports), smallest first
TIERS: tuple[tuple[str, float], ...] = (
    ("mem4", 3.5), ("mem6", 5.5), ("mem8", 7.5), ("mem12", 11.0), ("mem16", 14.5), ("mem24", 21.5), ("mem32", 30.0), ("mem40", 39.0),
    ("mem48", 44.0), ("mem80", 78.0), ("mem96", 90.0), ("mem141", 130.0), ("mem192", 175.0),
)


def default_queue() -> str:
    """The queue every worker consumes: the first of ``STUDIO_WORKER_QUEUES``."""
    return get_settings().worker_queues.split(",")[0].strip()


def gpus_wanted(config: dict | None) -> int:
    """How many GPUs a job asks for (``config["gpus"]``, default 1)."""
    try:
        return max(1, int((config or {}).get("gpus") or 1))
    except (TypeError, ValueError):
        return 1


def gpu_need_gb(estimate: dict | None, gpus: int = 1, distributed: str = "auto") -> float | None:
    """The least memory (GiB, as a card reports it) each of the job's GPUs needs, or None when the estimate
    is not a GPU estimate (a CPU-only fleet, or no estimate at all). Several GPUs under FSDP (or "auto",
    which takes FSDP when a replica does not fit one GPU) split weights and optimizer state between them
    (studio/advisor/parallel.py); DDP keeps a whole replica on each."""
    if not estimate or estimate.get("device") != "cuda" or not estimate.get("total_gb"):
        return None
    peak = float(estimate["total_gb"])
    if gpus > 1 and distributed != "ddp":
        shard = parallel.sharded_gb(estimate, gpus)
        peak = min(peak, shard) if shard is not None else peak
    return peak / USABLE_FRACTION  # the planner's rule: the peak fits the usable part of the card


def job_need(config: dict) -> tuple[float | None, int]:
    """(GiB each GPU needs or None, GPUs) for a job's config: its estimate, ``gpus`` and ``distributed``."""
    count = gpus_wanted(config)
    return gpu_need_gb(config.get("estimate"), count, str(config.get("distributed") or "auto")), count


def tier_for(need_gb: float) -> str:
    """The smallest tier whose cards hold ``need_gb``; the largest tier when none does (the job then
    waits, and the submitter is told so)."""
    for name, least in TIERS:
        if least >= need_gb:
            return name
    return TIERS[-1][0]


def required_gb(need_gb: float) -> float:
    """What routing asks of a worker for a job needing ``need_gb``: the threshold of the job's tier (a card
    between the need and that threshold could hold it but does not consume the tier), or the need
    itself beyond the largest tier."""
    return max(need_gb, dict(TIERS)[tier_for(need_gb)])


def queue_for(base: str, estimate: dict | None, gpus: int = 1, distributed: str = "auto") -> str:
    """The queue a job goes to: its memory tier (times its GPU count), or ``base`` without a GPU estimate."""
    need = gpu_need_gb(estimate, gpus, distributed)
    if need is None:
        return base
    return f"{base}.{tier_for(need)}" + (f"x{gpus}" if gpus > 1 else "")


def worker_queues(base: str, gpus: list[dict]) -> list[str]:
    """The queues a worker with ``gpus`` consumes: ``base``, then each tier its smallest GPU reaches, for
    one GPU and for every multi-GPU count it can serve. A CPU-only worker consumes ``base`` alone."""
    if not gpus:
        return [base]
    smallest = min(float(g.get("memory_gb") or 0) for g in gpus)
    tiers = [name for name, least in TIERS if least <= smallest]
    return [base] + [f"{base}.{t}" + (f"x{k}" if k > 1 else "") for k in range(1, len(gpus) + 1) for t in tiers]


def consumed_queues(configured: str, gpus: list[dict]) -> list[str]:
    """Everything a worker started on ``configured`` queues (``--queues``) consumes: those, plus the memory
    tiers of the default queue when it is among them (an "interactive"-only worker takes no tiers)."""
    names = [n.strip() for n in configured.split(",") if n.strip()]
    base = default_queue()
    return list(dict.fromkeys(names + (worker_queues(base, gpus)[1:] if base in names else [])))


def can_hold(gpus: list[dict], need_gb: float, count: int = 1) -> bool:
    """Whether a worker with ``gpus`` holds a job needing ``need_gb`` on each of ``count`` GPUs."""
    sizes = sorted((float(g.get("memory_gb") or 0) for g in gpus), reverse=True)
    return len(sizes) >= count and sizes[count - 1] >= need_gb


def alive_since(now: datetime) -> datetime:
    """Workers whose last heartbeat is older than this are dead: a lease's worth of silence, the rule the
    reaper applies to their jobs."""
    s = get_settings()
    return now - timedelta(seconds=max(s.lease_seconds, 3 * s.heartbeat_seconds))


@dataclass(frozen=True)
class Placement:
    """Where a job goes and, when no alive worker can hold it, why it will wait (empty otherwise)."""

    queue: str
    waiting: str = ""


WAITS = "waits for a worker with >= "


def is_waiting(message: str | None) -> bool:
    """Whether a queued job's message says it waits for a worker big enough to hold it."""
    return bool(message) and message.startswith(WAITS)


def waits_for(need_gb: float, count: int, fleet: list[list[dict]]) -> str:
    """The sentence that says a job waits for a bigger worker, naming the largest one registered."""
    largest = max((float(g.get("memory_gb") or 0) for gpus in fleet for g in gpus), default=0.0)
    each = f" on each of {count} GPUs" if count > 1 else ""
    has = f"the largest registered has {largest:g} GB" if largest else "no worker with a GPU is alive"
    return (f"{WAITS}{need_gb:.1f} GB of GPU memory{each}; {has}. It stays queued until "
            "such a worker joins (studio workers list), or cancel it and lower the batch size or sequence length.")


def place(config: dict, fleet: list[list[dict]], base: str | None = None) -> Placement:
    """Route a job (its config with the estimate) against the alive fleet (each worker's GPU list)."""
    base = base or default_queue()
    need, count = job_need(config)
    queue = queue_for(base, config.get("estimate"), count, str(config.get("distributed") or "auto"))
    if need is None or any(queue in worker_queues(base, gpus) for gpus in fleet):
        return Placement(queue)  # some alive worker consumes its queue (and so holds it)
    return Placement(queue, waits_for(required_gb(need), count, fleet))


def refusal(config: dict, gpus: list[dict], fleet: list[list[dict]]) -> str | None:
    """Why a worker with ``gpus`` must not claim a job (None: it may). Defence in depth behind routing:
    a CPU worker trains anything it is sent; a GPU worker refuses a job its GPUs cannot hold."""
    need, count = job_need(config)
    if not gpus or need is None or can_hold(gpus, need, count):
        return None
    return waits_for(required_gb(need), count, fleet)


def alive_fleet(db, now: datetime | None = None) -> list[list[dict]]:
    """The GPU lists of the workers alive now (an empty list per CPU-only worker)."""
    since = alive_since(now or utcnow())
    return [list(w.gpus or []) for w in db.scalars(select(Worker).where(Worker.last_heartbeat >= since))]
