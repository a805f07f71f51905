"""The worker's side of the fleet: refuse a job its GPUs cannot hold, and keep ``Worker.current_job_id``
(what the Fleet tab and ``studio workers list`` show) up to date. Routing itself is studio/routing.py."""
from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from models_db import Job, Worker, session_scope
from models_db.jobs import QUEUED
from studio import routing

log = logging.getLogger("studio.worker")


def refusal(db, job_id: int, worker_id: str) -> str | None:
    """Why this worker must not claim the job (None: it may). A GPU worker refuses a job whose estimate
    its GPUs cannot hold; the job stays queued with the reason as its message, for its own queue's
    workers to take (routing normally keeps such a message away from this worker)."""
    me, job = db.get(Worker, worker_id), db.get(Job, job_id, populate_existing=True)
    if me is None or job is None or job.state != QUEUED:
        return None  # an unregistered (in-process) worker, or a job the claim will refuse with its own reason
    why = routing.refusal(job.config or {}, list(me.gpus or []), routing.alive_fleet(db))
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
