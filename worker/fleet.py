"""The worker's side of the fleet: refuse a job its GPUs cannot hold, re-route queued jobs when the fleet
changes, and keep ``Worker.current_job_id`` (what the Fleet tab and ``studio workers list`` show) up to
date. Routing itself is studio/routing.py."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from models_db import BaseModel, Job, Worker, session_scope
from models_db.jobs import FINISHED, QUEUED
from studio import routing

log = logging.getLogger("studio.worker")


def refusal(db, job_id: int, worker_id: str) -> str | None:
    """Why this worker must not claim the job (None: it may). A GPU worker refuses a job whose estimate
    its GPUs cannot hold; the job stays queued with the reason as its message, for its own queue's
    workers to take (routing normally keeps such a message away from this worker)."""
    me, job = db.get(Worker, worker_id), db.get(Job, job_id, populate_existing=True)
    if me is None or job is None or job.state != QUEUED:
        return None  # an unregistered (in-process) worker, or a job the claim will refuse with its own reason
    config, mine = dict(job.config or {}), list(me.gpus or [])
    if mine and _cpu_estimate(config):  # estimated for a CPU-only fleet: check it against these GPUs
        config["estimate"] = gpu_estimate(db, job, [float(g.get("memory_gb") or 0) for g in mine]) or config["estimate"]
    why = routing.refusal(config, mine, routing.alive_fleet(db))
    if why:
        db.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED).values(message=why))
    return why


def mark_current(worker_id: str, job_id: int | None) -> None:
    """Record the job this worker runs (None when it is done). Bookkeeping only: a database hiccup is
    logged, never fatal, since the job's own row says where it runs."""
    try:
        with session_scope() as db:
            db.execute(update(Worker).where(Worker.id == worker_id).values(current_job_id=job_id))
    except OperationalError as e:
        log.warning("worker %s: could not record its current job %s: %s", worker_id, job_id, e)


def _cpu_estimate(config: dict) -> bool:
    return (config.get("estimate") or {}).get("device") == "cpu"


def gpu_estimate(db, job: Job, sizes: list[float]) -> dict | None:
    """The advisor's estimate of a training job on GPUs of ``sizes`` GiB (studio.advisor.jobcost, as submit
    makes it), or None when the model's config cannot be read."""
    from studio.advisor import jobcost, sources

    base = db.get(BaseModel, job.base_model_id) if job.base_model_id else None
    if base is None or not sizes:
        return None
    try:
        return jobcost.job_estimate(sources.model_config(base), job.config or {}, sizes)
    except (ValueError, KeyError) as e:
        log.warning("job %s: no GPU estimate (%s)", job.id, e)
        return None


@dataclass(frozen=True)
class Rerouted:
    """A queued job moved to another queue; ``send``: its task goes there now (False while it waits for
    its predecessor, whose end sends it)."""

    job_id: int
    kind: str
    old: str
    queue: str
    note: str
    send: bool


def reroute_queued(db) -> list[Rerouted]:
    """Queued training jobs whose queue no longer fits the alive fleet, moved to the one it gives now.

    A job submitted to a CPU-only fleet has a CPU estimate and sits on the default queue: once GPU workers
    are alive it is estimated again on their GPUs and moved to its tier when one of them holds it (else
    it stays where a CPU worker takes it, and a GPU worker too small refuses it). A job with a GPU estimate
    follows the fleet: a worker joining that holds it gets it offered, and "waits for" messages clear.
    Each move is one conditional UPDATE on the queue it read, so of several workers sweeping one moves it."""
    fleet = routing.alive_fleet(db)
    sizes = [float(g.get("memory_gb") or 0) for gpus in fleet for g in gpus]
    base = routing.default_queue()
    moved = []
    for job in db.scalars(select(Job).where(Job.state == QUEUED, Job.kind == "train", Job.cancel_requested.is_(False))):
        config, old, note = dict(job.config or {}), job.queue or base, ""
        if _cpu_estimate(config):
            if not sizes:
                continue
            est = gpu_estimate(db, job, sizes)
            if est is None or est.get("device") != "cuda" or routing.place({**config, "estimate": est}, fleet, base).waiting:
                continue  # no GPU worker holds it: it stays on the default queue, for a CPU worker
            config["estimate"] = est
            note = "GPU workers joined since it was submitted to a CPU-only fleet; estimated again on their GPUs"
        placed = routing.place(config, fleet, base)
        message, need = job.message, routing.job_need(config)[0]
        if placed.queue != old:
            per_gpu = f" (needs {need:.1f} GB per GPU)" if need is not None else ""
            note = f"re-routed from {old} to {placed.queue}{per_gpu}: {note or 'the fleet changed'}"
            message = placed.waiting or note
        elif routing.is_waiting(job.message) and not placed.waiting:
            message = ""  # a worker that holds it joined, and consumes its queue already
        elif routing.is_waiting(job.message) and placed.waiting != job.message:
            message = placed.waiting  # the largest worker named changed
        if (placed.queue, message, config) == (old, job.message, job.config):
            continue
        res = db.execute(update(Job).where(Job.id == job.id, Job.state == QUEUED, Job.queue.is_not_distinct_from(job.queue))
                         .values(queue=placed.queue, message=message, config=config))
        if res.rowcount == 1 and placed.queue != old:
            before = db.get(Job, job.after_job_id) if job.after_job_id else None
            moved.append(Rerouted(job.id, job.kind, old, placed.queue, note,
                                  send=before is None or before.state in FINISHED))
    return moved
