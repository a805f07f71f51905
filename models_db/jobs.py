"""The job lifecycle. Every transition is one conditional UPDATE, so the database stays the authority
even when the broker redelivers a message or a worker disappears (see docs/reliability.md)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from models_db.schema import Job, JobState, Metric, utcnow

RUNNING = JobState.running.value
QUEUED = JobState.queued.value
FINISHED = sorted(JobState.finished())

# Every move a job may make, and the one function that makes each. A finished job never moves again.
TRANSITIONS: dict[JobState, dict[JobState, str]] = {
    JobState.queued: {JobState.running: "claim", JobState.cancelled: "request_cancel"},
    JobState.running: {
        JobState.succeeded: "succeed",
        JobState.failed: "finish (the job's process, or retry_or_fail once out of attempts)",
        JobState.cancelled: "finish (its worker saw the cancel) or reap_expired",
        JobState.queued: "retry_or_fail (another attempt: its process died or its worker was lost)",
        JobState.pruned: "finish (the job's process: its sweep's pruner stopped the trial; studio/sweeps.py)",
    },
    JobState.succeeded: {}, JobState.failed: {}, JobState.cancelled: {}, JobState.pruned: {},
}
ATTEMPT_INTERRUPTED = "interrupted"  # a history entry's outcome when the attempt ended in a retry
ATTEMPT_LOST = "lost"  # ... when its worker was lost (its lease expired)


class IllegalTransition(RuntimeError):
    """A move TRANSITIONS does not allow (a bug, never a user error)."""


def check_transition(old: str, new: str) -> None:
    if JobState(new) not in TRANSITIONS[JobState(old)]:
        raise IllegalTransition(f"a job cannot go from {old} to {new}")


@dataclass(frozen=True)
class Verdict:
    """What becomes of a job whose attempt ended without its own say: its new state, message and error."""

    state: JobState
    message: str
    error: str | None = None


def retry_or_fail(job: Job, *, retry: str, give_up: str) -> Verdict:
    """The one decision after an attempt ended abnormally (its process died, its worker was lost), made
    for the supervisor (worker/supervisor.py) and the reaper alike: queued again while attempts remain, so it
    resumes from its last checkpoint; failed with ``give_up`` as its error once they are spent."""
    if job.attempt < job.max_attempts:
        return Verdict(JobState.queued, retry)
    return Verdict(JobState.failed, give_up, give_up)


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


def _predecessor_finished():
    """SQL: the job has no predecessor, or its predecessor has finished (whatever the outcome)."""
    before = aliased(Job)
    return or_(Job.after_job_id.is_(None),
               exists().where(before.id == Job.after_job_id, before.state.in_(FINISHED)))


def claim(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> Claim | None:
    """Take a queued job for this worker. Returns None if someone else has it, it is finished or
    cancelled, or it waits for a predecessor that has not finished (``why_not_claimed`` says which)."""
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == QUEUED, Job.cancel_requested.is_(False), _predecessor_finished())
        .values(state=RUNNING, fence=Job.fence + 1, attempt=Job.attempt + 1, worker_id=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds), started_at=func.coalesce(Job.started_at, now),
                message="starting", error=None, resume_step=0)
    )
    if res.rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    entry = {"attempt": job.attempt, "worker": worker_id, "started_at": now.isoformat(timespec="seconds"),
             "outcome": RUNNING}
    session.execute(update(Job).where(Job.id == job_id, Job.fence == job.fence)
                    .values(history=[*(job.history or []), entry]))
    return Claim(job_id, job.fence, job.attempt)


def why_not_claimed(session: Session, job_id: int) -> str:
    """Why ``claim`` refused a job, in words (worker logs and tests read it)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return "it does not exist"
    if job.state == RUNNING:
        return f"it is already running (attempt {job.attempt} on {job.worker_id})"
    if job.state != QUEUED:
        return f"it is {job.state}"
    if job.cancel_requested:
        return "it was cancelled"
    before = session.get(Job, job.after_job_id) if job.after_job_id else None
    if before is not None and before.state not in FINISHED:
        return f"it waits for job {before.id} ({before.state}) to finish"
    return "it changed meanwhile"


def _close_attempt(job: Job, outcome: str, reason: str | None, now) -> list[dict]:
    """The job's history with its current attempt closed: outcome, reason, resume point, last step."""
    history = [dict(h) for h in (job.history or [])]
    if history and history[-1].get("attempt") == job.attempt:
        history[-1].update(outcome=outcome, reason=reason, ended_at=now.isoformat(timespec="seconds"),
                           resumed_from=job.resume_step, reached_step=job.step)
    return history


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
    """Move a running job to a final state (or back to queued for a retry), closing the attempt in its
    history. Fenced: returns False, writing nothing, when the claim is no longer current."""
    job = session.get(Job, claim.job_id, populate_existing=True)
    if job is None or job.fence != claim.fence or job.state != RUNNING:
        return False
    check_transition(job.state, state)
    now = utcnow()
    outcome = ATTEMPT_INTERRUPTED if state == QUEUED else str(state)
    reason = error or (fields.get("message") if state == QUEUED else None)
    res = session.execute(
        _fenced(claim.job_id, claim.fence).values(
            state=state, error=error, finished_at=now if state in JobState.finished() else None,
            lease_expires_at=None, history=_close_attempt(job, outcome, reason, now), **fields)
    )
    return res.rowcount == 1


def record_pid(session: Session, claim: Claim, pid: int) -> None:
    """Note the training process of the current attempt in its history entry (for operators and tests)."""
    job = session.get(Job, claim.job_id, populate_existing=True)
    history = [dict(h) for h in (job.history or [])]
    if history and history[-1].get("attempt") == claim.attempt:
        history[-1]["pid"] = pid
        report(session, claim, history=history)


def request_cancel(session: Session, job_id: int) -> str:
    """Cancel a job: a queued one is cancelled at once, a running one when its worker sees the flag."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.state == QUEUED)
        .values(state=JobState.cancelled.value, cancel_requested=True, finished_at=utcnow(), message="cancelled")
    )
    session.execute(
        update(Job).where(Job.id == job_id, Job.state == RUNNING)
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
            verdict = Verdict(JobState.cancelled, "cancelled (its worker was lost)")
        else:
            verdict = retry_or_fail(
                job, retry=f"worker lost during attempt {job.attempt}; re-queued to resume from its last checkpoint",
                give_up=f"worker lost on attempt {job.attempt} of {job.max_attempts}; giving up")
        new, msg = verdict.state.value, verdict.message
        res = session.execute(
            update(Job).where(Job.id == job.id, Job.fence == job.fence, Job.state == RUNNING)
            .values(state=new, fence=Job.fence + 1, lease_expires_at=None, message=msg, error=verdict.error,
                    finished_at=now if new != QUEUED else None, history=_close_attempt(job, ATTEMPT_LOST, msg, now))
        )
        if res.rowcount == 1:
            out.append((job.id, new))
    return out


def take_resendable(session: Session, *, lost_after: float | None, now: datetime | None = None) -> list[tuple[int, str]]:
    """Queued jobs whose task message must be sent (again), as (id, kind); each is stamped so that only
    one worker sends it:

    * released: it waited for a predecessor that has finished since the job was last touched
      (its earlier message was refused and dropped);
    * lost: nothing touched it for ``lost_after`` seconds (None: skip this check). A broker restart
      or a hard kill can lose a message; a duplicate is harmless, as only one claim can win."""
    now = now or utcnow()
    before = aliased(Job)
    rows = session.execute(
        select(Job.id, Job.kind, Job.updated_at, before.state, before.finished_at)
        .outerjoin(before, before.id == Job.after_job_id)
        .where(Job.state == QUEUED, Job.cancel_requested.is_(False)).order_by(Job.id)
    ).all()
    out = []
    for job_id, kind, touched, before_state, before_finished in rows:
        if before_state is not None and before_state not in FINISHED:
            continue  # still waiting: sending it now would only be refused
        released = before_finished is not None and touched < before_finished
        lost = lost_after is not None and touched < now - timedelta(seconds=lost_after)
        if not (released or lost):
            continue
        res = session.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED, Job.updated_at == touched)
                              .values(updated_at=now))
        if res.rowcount == 1:
            out.append((job_id, kind))
    return out


def metrics_since(session: Session, job_id: int, after_id: int = 0) -> list[Metric]:
    """Metric points of a job with id > after_id (the UI polls only new points)."""
    return list(session.scalars(select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id)))


def metric_rows_since(session: Session, job_id: int, after_id: int = 0, *, upto: int | None = None,
                      names: tuple[str, ...] | None = None) -> list:
    """Like ``metrics_since`` as plain rows (id, step, name, value, attempt, time) through Core, several
    times faster than ORM objects for a long job's first read; only ``names`` when given, only ids up to
    ``upto`` when given. Uses the (job_id, id) index."""
    t = Metric.__table__
    query = select(t.c.id, t.c.step, t.c.name, t.c.value, t.c.attempt, t.c.time).where(
        t.c.job_id == job_id, t.c.id > after_id).order_by(t.c.id)
    if upto is not None:
        query = query.where(t.c.id <= upto)
    if names is not None:
        query = query.where(t.c.name.in_(names))
    return session.connection().execute(query).all()


def has_metrics(session: Session, job_id: int, names) -> bool:
    """Whether the job has any point of ``names`` (stops at the first: cheap on a long job)."""
    t = Metric.__table__
    query = select(t.c.id).where(t.c.job_id == job_id, t.c.name.in_(tuple(names))).limit(1)
    return session.connection().execute(query).first() is not None


def latest_metrics(session: Session, job_id: int) -> tuple[int, dict[str, float]]:
    """(the job's newest metric id, or 0; the newest value of each metric name)."""
    t = Metric.__table__
    newest = select(func.max(t.c.id)).where(t.c.job_id == job_id).group_by(t.c.name)
    rows = session.connection().execute(select(t.c.id, t.c.name, t.c.value).where(t.c.id.in_(newest))).all()
    return max((r.id for r in rows), default=0), {r.name: r.value for r in rows}


def succeed(session: Session, claim: Claim, *, result: dict, version: dict | None = None) -> int | None:
    """Finish a job as succeeded and register its model version in the same transaction:
    a stale claim raises, and the version insert rolls back with it.

    Its lineage is written as VersionParent rows, the one source of truth for parents: ``version["parents"]``
    ([[id, weight], ...], a combined version, first parent first) or else its ``parent_id`` with weight 1."""
    from models_db.schema import ModelVersion

    version_id = None
    if version is not None:
        version = dict(version)
        parent_id = version.pop("parent_id", None)
        parents = version.pop("parents", None) or ([[parent_id, 1.0]] if parent_id else [])
        row = ModelVersion(job_id=claim.job_id, **version)
        row.parents = parents
        session.add(row)
        session.flush()
        version_id = row.id
        result = {**result, "version_id": version_id}
    if not finish(session, claim, JobState.succeeded.value, message="done", result=result):
        raise StaleFence(f"job {claim.job_id}: claim {claim.fence} is no longer current")
    return version_id
