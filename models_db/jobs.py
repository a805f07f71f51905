"""The job lifecycle. Every transition is one conditional UPDATE, so the database stays the authority
even when the broker redelivers a message or a worker disappears (see docs/reliability.md)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models_db.schema import Job, JobState, Metric, utcnow

RUNNING = JobState.running.value
QUEUED = JobState.queued.value


class StaleFence(RuntimeError):
    """A write came from a worker whose claim on the job is no longer current."""


@dataclass(frozen=True)
class Claim:
    job_id: int
    fence: int
    attempt: int


def create_job(session: Session, *, kind: str, config: dict, idempotency_key: str | None = None,
               max_attempts: int = 3, **links) -> tuple[Job, bool]:
    """Insert a queued job; with an idempotency key, a repeat returns the first job (created=False)."""
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing:
            return existing, False
    job = Job(kind=kind, config=config, idempotency_key=idempotency_key, max_attempts=max_attempts, **links)
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:  # a concurrent twin won the unique key
        return session.scalar(select(Job).where(Job.idempotency_key == idempotency_key)), False
    return job, True


def claim(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> Claim | None:
    """Take a queued job for this worker. Returns None if someone else has it or it is finished."""
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == QUEUED, Job.cancel_requested.is_(False))
        .values(state=RUNNING, fence=Job.fence + 1, attempt=Job.attempt + 1, worker_id=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds), started_at=func.coalesce(Job.started_at, now),
                message="starting", error=None)
    )
    if res.rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    return Claim(job_id, job.fence, job.attempt)


def _fenced(job_id: int, fence: int):
    return update(Job).where(Job.id == job_id, Job.fence == fence, Job.state == RUNNING)


def heartbeat(session: Session, claim: Claim, lease_seconds: float) -> bool:
    """Extend the lease. Returns whether a cancel was requested. Raises StaleFence if the claim is gone."""
    res = session.execute(
        _fenced(claim.job_id, claim.fence).values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    )
    if res.rowcount != 1:
        raise StaleFence(f"job {claim.job_id}: claim {claim.fence} is no longer current")
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id)))


def report(session: Session, claim: Claim, *, metrics: list[tuple[int, str, float]] = (), **fields) -> None:
    """Write progress fields (step, max_steps, message, result) and metric points, fenced, in one go."""
    res = session.execute(_fenced(claim.job_id, claim.fence).values(updated_at=utcnow(), **fields))
    if res.rowcount != 1:
        raise StaleFence(f"job {claim.job_id}: claim {claim.fence} is no longer current")
    if metrics:
        now = utcnow()
        session.add_all(
            Metric(job_id=claim.job_id, attempt=claim.attempt, step=s, name=n, value=v, time=now) for s, n, v in metrics
        )


def finish(session: Session, claim: Claim, state: str, *, error: str | None = None, **fields) -> bool:
    """Move a running job to a final state (or back to queued for a retry). Fenced."""
    res = session.execute(
        _fenced(claim.job_id, claim.fence).values(state=state, error=error, finished_at=utcnow()
                                                  if state in JobState.finished() else None,
                                                  lease_expires_at=None, **fields)
    )
    return res.rowcount == 1


def request_cancel(session: Session, job_id: int) -> str:
    """Cancel a job: a queued one is cancelled at once, a running one when its worker sees the flag."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.state == QUEUED)
        .values(state=JobState.cancelled.value, cancel_requested=True, finished_at=utcnow(), message="cancelled")
    )
    session.execute(
        update(Job).where(Job.id == job_id, Job.state.in_([RUNNING, JobState.interrupted.value]))
        .values(cancel_requested=True, message="cancelling")
    )
    return session.scalar(select(Job.state).where(Job.id == job_id)) or "missing"


def reap_expired(session: Session, now: datetime | None = None) -> list[tuple[int, str]]:
    """Jobs whose lease expired lost their worker: re-queue them (bumping the fence so the lost
    worker's late writes are refused), or fail them once out of attempts. Returns (id, new state)."""
    now = now or utcnow()
    out: list[tuple[int, str]] = []
    for job in session.scalars(select(Job).where(Job.state == RUNNING, Job.lease_expires_at < now)).all():
        if job.cancel_requested:
            new, msg = JobState.cancelled.value, "cancelled (its worker was lost)"
        elif job.attempt >= job.max_attempts:
            new, msg = JobState.failed.value, f"worker lost on attempt {job.attempt} of {job.max_attempts}; giving up"
        else:
            new, msg = QUEUED, f"worker lost during attempt {job.attempt}; re-queued to resume from its last checkpoint"
        res = session.execute(
            update(Job).where(Job.id == job.id, Job.fence == job.fence, Job.state == RUNNING)
            .values(state=new, fence=Job.fence + 1, lease_expires_at=None, message=msg,
                    error=msg if new == JobState.failed.value else None,
                    finished_at=now if new != QUEUED else None)
        )
        if res.rowcount == 1:
            out.append((job.id, new))
    return out


def metrics_since(session: Session, job_id: int, after_id: int = 0) -> list[Metric]:
    """Metric points of a job with id > after_id (the UI polls only new points)."""
    return list(session.scalars(select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id)))


def succeed(session: Session, claim: Claim, *, result: dict, version: dict | None = None) -> int | None:
    """Finish a job as succeeded and register its model version in the same transaction:
    a stale claim raises, and the version insert rolls back with it."""
    from models_db.schema import ModelVersion

    version_id = None
    if version is not None:
        row = ModelVersion(job_id=claim.job_id, **version)
        session.add(row)
        session.flush()
        version_id = row.id
        result = {**result, "version_id": version_id}
    if not finish(session, claim, JobState.succeeded.value, message="done", result=result):
        raise StaleFence(f"job {claim.job_id}: claim {claim.fence} is no longer current")
    return version_id
