"""The worker process: a Celery solo-pool consumer plus a housekeeping thread: a registration heartbeat
(so the studio knows the fleet, its GPUs and its RAM), and, on training workers only, the reaper
(re-queues jobs whose lease expired) and the sweep (sends jobs whose predecessor finished, and re-sends
queued jobs whose message was lost)."""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading

from celery import signals
from sqlalchemy import select, update

from models_db import Job, JobState, Worker, session_scope
from models_db import jobs as jobq
from models_db.schema import utcnow
from studio import fleet, routing, sweeps
from studio.celery_app import app, enqueue
from studio.settings import get_settings
from worker import supervisor, tasks  # noqa: F401  tasks registers the task bodies on the app
from worker.fleet import reroute_queued
from worker.supervisor import WORKER_ID

log = logging.getLogger("studio.worker")
_stop = threading.Event()
GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")


def detect_gpus() -> list[dict]:
    """The GPUs this worker may use (honours CUDA_VISIBLE_DEVICES)."""
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_DRIVER_FILES):
        return []  # no NVIDIA or ROCm driver: skip importing torch, which takes seconds
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())]


def ram() -> tuple[int, int]:
    """(total, available) bytes of this machine's RAM: what a merged export, which runs on the CPU, may use."""
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def register(gpus: list[dict], queues: str | None = None) -> None:
    """Record this worker, its GPUs, its RAM and the queues it was started on (memory tiers follow from the GPUs)."""
    with session_scope() as db:
        row = db.get(Worker, WORKER_ID) or Worker(id=WORKER_ID, host=socket.gethostname())
        row.gpus, row.queues, row.last_heartbeat = gpus, queues or get_settings().worker_queues, utcnow()
        row.ram_total, row.ram_available = ram()
        db.add(row)


def runs_reaper(queues: str | None) -> bool:
    """Whether a worker started on ``queues`` runs the reaper and the sweep: a training worker (it takes
    jobs from the default queue), never the interactive one. `studio serve` starts both kinds; one kind
    reaping keeps the interactive worker on generations and the housekeeping in one place."""
    return fleet.takes_jobs(queues or get_settings().worker_queues)


def heartbeat(reap: bool) -> None:
    """One housekeeping round: the heartbeat with the RAM available now, then (training workers) the reaper."""
    with session_scope() as db:
        db.execute(update(Worker).where(Worker.id == WORKER_ID).values(last_heartbeat=utcnow(), ram_available=ram()[1]))
    if reap:
        reap_once()


def resend_after_s() -> float:
    """Seconds a queued job may sit untouched (and this worker idle) before its message counts as lost."""
    return get_settings().resend_seconds


def reap_once() -> list[tuple[int, str]]:
    """Re-queue jobs whose worker vanished, re-route queued jobs the fleet no longer fits, send jobs whose
    predecessor has finished, and, from an idle worker, re-send queued jobs whose message may be lost.
    Returns the reaped (id, new state)."""
    idle = supervisor.idle_seconds() >= resend_after_s()
    with session_scope() as db:
        moved = reroute_queued(db)  # first, so that what is sent below goes to the queues moved to
        reaped = jobq.reap_expired(db)
        due = jobq.take_resendable(db, lost_after=resend_after_s() if idle else None)
        ids = [i for i, _ in reaped] + [i for i, _ in due]
        # every (re-)send goes to the job's own queue: its memory tier (studio/routing.py)
        queues = {i: q for i, q in db.execute(select(Job.id, Job.queue).where(Job.id.in_(ids))).all()}
        kinds = dict(db.execute(select(Job.id, Job.kind).where(Job.id.in_([i for i, _ in reaped]))).all())
    for m in moved:  # the job's log says why it moved; its message says so too (worker/fleet.py)
        log.info("job %s: %s", m.job_id, m.note)
        with open(supervisor.job_dir(m.job_id) / "log.txt", "a") as out:
            out.write(f"--- {utcnow():%Y-%m-%d %H:%M:%S} {m.note} ---\n")
        if m.send:
            enqueue(m.kind, m.job_id, m.queue)
    for job_id, state in reaped:
        log.warning("job %s: lease expired, now %s", job_id, state)
    for job_id, kind in [(i, kinds[i]) for i, state in reaped if state == JobState.queued] + due:
        log.info("job %s: sending its task to %s", job_id, queues.get(job_id) or "the default queue")
        enqueue(kind, job_id, queues.get(job_id))
    sweeps.advance_open()  # a trial that ended without its process's say (a crash, a lost worker, a restart)
    return reaped


def _housekeeping(reap: bool) -> None:
    s = get_settings()
    while not _stop.wait(s.heartbeat_seconds):
        try:
            heartbeat(reap)
        except Exception:
            log.exception("housekeeping failed; retrying")


_started = {"gpus": None, "queues": None}  # what main() detected and was asked for, registered once ready


@signals.worker_ready.connect
def _on_ready(**_):
    gpus = detect_gpus() if _started["gpus"] is None else _started["gpus"]
    register(gpus, _started["queues"])
    threading.Thread(target=_housekeeping, args=(runs_reaper(_started["queues"]),), name="housekeeping",
                     daemon=True).start()
    log.info("worker %s ready with %s", WORKER_ID, ", ".join(g["name"] for g in gpus) or "CPU only")


@signals.worker_shutdown.connect
def _on_shutdown(**_):
    _stop.set()


def main(queues: str | None = None, gpus: str | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process (``studio worker``)."""
    from models_db.schema_wait import wait_for_schema

    # the studio migrates at startup; a worker waits for that schema, and never migrates itself
    wait_for_schema(get_settings().db_url, get_settings().schema_wait_seconds)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    queues = queues or get_settings().worker_queues
    gpus_found = _started["gpus"] = detect_gpus()
    _started["queues"] = queues
    # plus the memory tiers this worker's GPUs reach, so training jobs routed by their estimate find it
    consumed = ",".join(routing.consumed_queues(queues, gpus_found))
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", consumed, f"--loglevel={loglevel}",
                     "-n", f"studio-{WORKER_ID}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"])
