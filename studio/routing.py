"""Routing by GPU memory: which Celery queue a job goes to, and which queues a worker consumes.

Queues are named by memory tier. A GPU worker consumes the default queue (``<base>``, the first of
``STUDIO_WORKER_QUEUES``) plus ``<base>.mem<T>`` for every tier threshold T its smallest GPU reaches; with
n GPUs also ``<base>.mem<T>x<k>`` for k = 2..n (multi-GPU jobs). Anything without a GPU estimate (a
CPU-only fleet, an export, a job without an estimate) stays on the default queue, which every worker
consumes.

The headroom rule: a job needs ``estimate / USABLE_FRACTION`` GiB on each GPU (0.97, the advisor's own
rule: its peak must fit 97% of what the card reports, the rest is the CUDA context and fragmentation).
A tier is named after its threshold, the GiB ``torch.cuda`` reports (an "80 GB" H100 reports 79.2, a
"24 GB" L4 22.0 and a 4090 23.6), and the thresholds sit just under what common cards report, so cards
sold at the same size but reporting different memory land in different tiers.

A job goes to a tier chosen against the alive fleet: one that every alive worker able to hold it consumes
and, whenever the thresholds separate their sizes, no worker too small for it does. With no alive
worker able to hold it, the smallest tier at or above its need, where it waits; the sweep re-routes it
when the fleet changes (worker/fleet.py). A worker still refuses a job too big for its GPUs.

    queue_for("gpu", {"device": "cuda", "total_gb": 20.0}, 1)      # 'gpu.mem21.9'
    place({"estimate": {"device": "cuda", "total_gb": 22.5}}, [[{"memory_gb": 22.0}], [{"memory_gb": 23.6}]])
    # Placement('gpu.mem23.5'): the 4090 holds its 23.2 GiB, the L4 does not
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from models_db import GenerationState, Worker
from models_db.schema import utcnow
from studio.advisor import parallel
from studio.advisor.plan import USABLE_FRACTION
from studio.settings import get_settings

# tier thresholds: GiB as torch reports them, each just under the least a common card reports, so a card
# consumes the tier of its own size: 4/6/8 GB, 10 (3080, MIG 1g.10gb), 11 (2080 Ti), 12, 16 (T4 14.6;
# V100, A4000, 4080 15.6-15.8), 20 (A4500, MIG 2g.20gb), 24 (L4, A10 22.0; 3090, 4090, A5000 23.6-23.7),
# 32 (5090, V100), 40 (A100), 48 (L40S, A40 44.4; A6000 47.5), 64 (MI210), 80 (A100, H100 79.2),
# 94/96 (H100 NVL, GH200), 141 (H200 139.8), 180/192 (B200 179, MI300X 192), 256 (MI325X)
THRESHOLDS: tuple[float, ...] = (3.5, 5.5, 7.5, 9.5, 10.5, 11.5, 14.5, 15.5, 19.5, 21.9, 23.5, 31.0, 39.0, 44.0,
                                 47.0, 63.5, 79.0, 93.0, 139.0, 178.0, 191.0, 255.0)
TIERS: tuple[tuple[str, float], ...] = tuple((f"mem{t:g}", t) for t in THRESHOLDS)  # (name, threshold)


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


def tier_for(need_gb: float, fleet_sizes: list[float] | tuple[float, ...] = ()) -> str:
    """The tier for a job needing ``need_gb`` on each GPU, given the fleet's sizes (``worker_size`` of each
    alive worker with enough GPUs). When some worker holds it: a threshold above every worker too small
    for it and at most the smallest that holds it, so the job reaches all of these and none of those (at
    or above the need when one is, so a small worker joining later does not see it either); when no
    threshold lies between two sizes that close, the largest at most the smallest holder (every holder
    sees it, the few too small refuse it). When none holds it: the smallest tier at or above the need, or
    the largest when none is; it waits there, and the sweep re-routes it once the fleet changes."""
    holders = [s for s in fleet_sizes if s >= need_gb]
    if holders:
        too_small = max((s for s in fleet_sizes if s < need_gb), default=0.0)
        between = [t for t in THRESHOLDS if too_small < t <= min(holders)]
        above = [t for t in between if t >= need_gb]
        reach = [t for t in THRESHOLDS if t <= min(holders)]
        pick = min(above) if above else max(between) if between else max(reach) if reach else None
        if pick is not None:
            return f"mem{pick:g}"
    for name, least in TIERS:
        if least >= need_gb:
            return name
    return TIERS[-1][0]


def worker_size(gpus: list[dict], count: int = 1) -> float | None:
    """What a worker offers a ``count``-GPU job as routing sees it: its smallest GPU (the tiers it consumes
    follow that one); None for a worker with fewer GPUs, a CPU-only one included."""
    if not gpus or len(gpus) < count:
        return None
    return min(float(g.get("memory_gb") or 0) for g in gpus)


def queue_for(base: str, estimate: dict | None, gpus: int = 1, distributed: str = "auto",
              fleet: list[list[dict]] | None = None) -> str:
    """The queue a job goes to: its memory tier against ``fleet`` (the alive workers' GPU lists; none: the
    smallest tier at or above its need) times its GPU count, or ``base`` without a GPU estimate."""
    need = gpu_need_gb(estimate, gpus, distributed)
    if need is None:
        return base
    sizes = [s for s in (worker_size(g, gpus) for g in fleet or []) if s is not None]
    return f"{base}.{tier_for(need, sizes)}" + (f"x{gpus}" if gpus > 1 else "")


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
    queue = queue_for(base, config.get("estimate"), count, str(config.get("distributed") or "auto"), fleet)
    if need is None or any(takes(gpus, queue, need, count, base) for gpus in fleet):
        return Placement(queue)  # some alive worker consumes its queue and holds it
    return Placement(queue, waits_for(need, count, fleet))


def takes(gpus: list[dict], queue: str, need_gb: float, count: int, base: str) -> bool:
    """Whether a worker with ``gpus`` consumes ``queue`` and holds a job needing ``need_gb`` per GPU."""
    size = worker_size(gpus, count)
    return size is not None and size >= need_gb and queue in worker_queues(base, gpus)


def refusal(config: dict, gpus: list[dict], fleet: list[list[dict]]) -> str | None:
    """Why a worker with ``gpus`` must not claim a job (None: it may). Defence in depth behind routing:
    a CPU worker trains anything it is sent; a GPU worker refuses a job its GPUs cannot hold."""
    need, count = job_need(config)
    if not gpus or need is None or can_hold(gpus, need, count):
        return None
    return waits_for(need, count, fleet)


def alive_fleet(db, now: datetime | None = None) -> list[list[dict]]:
    """The GPU lists of the workers alive now (an empty list per CPU-only worker)."""
    since = alive_since(now or utcnow())
    return [list(w.gpus or []) for w in db.scalars(select(Worker).where(Worker.last_heartbeat >= since))]


def side_queue(db, fits_beside: bool) -> tuple[str, str]:
    """Where an export or evaluation goes. In embedded mode (one machine: a training worker and an
    interactive one) it need not wait hours behind a long training job: when every training worker is busy,
    the interactive worker is alive and idle, and the machine has the memory (``fits_beside``, measured on
    its free RAM now, the training job's share already taken), it runs there, beside the training job.
    Returns (queue, where it runs in words; '' for the usual queue)."""
    from models_db import Generation

    s, default = get_settings(), default_queue()
    if not s.broker.startswith("sqla+") or not fits_beside:
        return default, ""
    alive = list(db.scalars(select(Worker).where(Worker.last_heartbeat >= alive_since(utcnow()))))
    trainers = [w for w in alive if default in (w.queues or "").split(",")]
    side = [w for w in alive if (w.queues or "").split(",") == [s.interactive_queue] and w.current_job_id is None]
    if not trainers or any(w.current_job_id is None for w in trainers) or not side:
        return default, ""  # a training worker is free (or no interactive worker): the usual queue is quick
    chatting = db.scalar(select(Generation.id).where(Generation.state == GenerationState.running).limit(1))
    if chatting is not None:
        return default, ""
    busy = ", ".join(f"#{w.current_job_id}" for w in trainers)
    return s.interactive_queue, f"runs on the interactive worker, beside training job {busy}"
