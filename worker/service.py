"""The worker process: a Celery solo-pool consumer plus two housekeeping threads: a registration
heartbeat (so the studio knows the fleet and its GPUs) and the reaper (re-queues jobs whose lease expired)."""
from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from celery import signals
from sqlalchemy import select, update

from models_db import Job, Worker, session_scope
from models_db import jobs as jobq
from models_db.schema import utcnow
from studio.settings import get_settings
from worker.celery_app import app, enqueue
from worker.runner import WORKER_ID

log = logging.getLogger("studio.worker")
_stop = threading.Event()


def detect_gpus() -> list[dict]:
    """The GPUs this worker may use (honours CUDA_VISIBLE_DEVICES)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())]


def register(gpus: list[dict]) -> None:
    with session_scope() as db:
        row = db.get(Worker, WORKER_ID) or Worker(id=WORKER_ID, host=socket.gethostname())
        row.gpus, row.queues, row.last_heartbeat = gpus, get_settings().worker_queues, utcnow()
        db.add(row)


def reap_once() -> list[tuple[int, str]]:
    """Re-queue jobs whose worker vanished, and re-send queued jobs whose message may be lost
    (a duplicate message is harmless: only one claim can win)."""
    with session_scope() as db:
        reaped = jobq.reap_expired(db)
        stale = utcnow() - timedelta(minutes=10)
        lost = list(db.scalars(select(Job).where(Job.state == "queued", Job.updated_at < stale)))
        for job in lost:
            db.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow()))
    for job_id, state in reaped:
        log.warning("job %s: lease expired, now %s", job_id, state)
    with session_scope() as db:
        kinds = {j.id: j.kind for j in db.scalars(select(Job).where(Job.id.in_([i for i, s in reaped] + [j.id for j in lost])))}
    for job_id, state in reaped:
        if state == "queued":
            enqueue(kinds[job_id], job_id)
    for job in lost:
        enqueue(kinds[job.id], job.id)
    return reaped


def _housekeeping() -> None:
    s = get_settings()
    while not _stop.wait(s.heartbeat_seconds):
        try:
            with session_scope() as db:
                db.execute(update(Worker).where(Worker.id == WORKER_ID).values(last_heartbeat=utcnow()))
            reap_once()
        except Exception:  # noqa: BLE001 - housekeeping must outlive a database hiccup
            log.exception("housekeeping failed; retrying")


@signals.worker_ready.connect
def _on_ready(**_):
    gpus = detect_gpus()
    register(gpus)
    threading.Thread(target=_housekeeping, name="housekeeping", daemon=True).start()
    log.info("worker %s ready with %s", WORKER_ID, ", ".join(g["name"] for g in gpus) or "CPU only")


@signals.worker_shutdown.connect
def _on_shutdown(**_):
    _stop.set()


def main(queues: str | None = None, gpus: str | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process (``studio worker``)."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    queues = queues or get_settings().worker_queues
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", queues, f"--loglevel={loglevel}",
                     "-n", f"studio-{WORKER_ID}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"])
