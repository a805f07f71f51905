"""The ask-and-tell loop (see the package docstring): :func:`advance` under a short lease on the sweep row, each
asked trial submitted as a training job, each finished job's result told to Optuna, and a sweep closed when its
trials are done; :func:`advance_open` and :func:`after_job` are the worker's entry points, :func:`cancel` the
person's.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import or_, update

from models_db import Job, JobState, Sweep, session_scope
from models_db import jobs as jobq
from models_db.access import acting_as, viewer_from_user
from models_db.schema import User, utcnow
from studio.jobspec import SpecError, build_train_spec
from studio.sweeps.studies import _dims, _trial_id, storage, study
from studio.sweeps.views import _get, _trial_jobs, best_trial

log = logging.getLogger("studio.sweeps")

LOCK_SECONDS = 120  # one process advances a sweep at a time; a crashed one's lease runs out
RUNNING, DONE, CANCELLED = "running", "done", "cancelled"


def _lock(sweep_id: int) -> bool:
    now = utcnow()
    with session_scope() as db:
        res = db.execute(update(Sweep).where(Sweep.id == sweep_id, or_(Sweep.lock_until.is_(None),
                                                                       Sweep.lock_until < now))
                         .values(lock_until=now + timedelta(seconds=LOCK_SECONDS)))
        return res.rowcount == 1


def _unlock(sweep_id: int) -> None:
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep_id).values(lock_until=None))


def _owner(db, sweep: Sweep):
    """Who the sweep's trials are submitted as: its owner (a worker acts for nobody), or everyone."""
    user = db.get(User, sweep.owner_id) if sweep.owner_id else None
    return viewer_from_user(user) if user is not None else None


def free_slots(db, sweep: Sweep, in_flight: int) -> int:
    """How many more trials may run now: ``parallel`` (0: as many as alive training workers), capped by the
    alive training workers, at least one (a trial waits in the queue for the first worker to come)."""
    from studio import fleet

    workers = max(len(fleet.alive_job_workers(db)), 1)
    room = min(sweep.parallel, workers) if sweep.parallel else workers
    return max(room - in_flight, 0)


def final_value(job: Job, metric: str) -> float | None:
    """The trial's value: the metric among the job's final figures, else its last recorded point."""
    value = ((job.result or {}).get("metrics") or {}).get(metric)
    if value is None:
        value = (job.result or {}).get(metric)
    if value is None:
        with session_scope() as db:
            _, latest = jobq.latest_metrics(db, job.id)
        value = latest.get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def advance(sweep_id: int) -> bool:
    """One idempotent step of the ask-and-tell loop (see the module docstring). Returns False when another
    process holds the sweep's lease (it does the same work)."""
    if not _lock(sweep_id):
        return False
    try:
        _advance(sweep_id)
    finally:
        _unlock(sweep_id)
    return True


def _advance(sweep_id: int) -> None:
    from optuna.trial import TrialState

    with session_scope() as db:
        sweep = db.get(Sweep, sweep_id)
        if sweep is None:
            return
        db.expunge(sweep)
    trials = study(sweep).get_trials(deepcopy=False)
    s = study(sweep, len(trials))
    in_flight = 0
    for t in trials:
        if t.state not in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if t.state == TrialState.WAITING:
            continue  # an enqueued (advised) trial: asked below
        job_id = t.user_attrs.get("job_id")
        if job_id is None:  # asked, then a crash before its job was recorded: submit it now (idempotent key)
            job_id = _submit(sweep, s, t)
            if job_id is None:
                continue
        with session_scope() as db:
            job = db.get(Job, job_id)
            if job is not None:
                db.expunge(job)
        if job is not None and job.state not in JobState.finished():
            in_flight += 1
            continue
        _tell(s, sweep, t, job)
    if sweep.state == RUNNING:
        asked = len([t for t in trials if t.state != TrialState.WAITING])
        with session_scope() as db:
            slots = min(free_slots(db, sweep, in_flight), sweep.trials - asked)
        for _ in range(max(slots, 0)):
            t = s.ask({k: d.distribution() for k, d in _dims(sweep).items()})
            if _submit(sweep, s, t) is not None:
                in_flight += 1
            asked += 1
        if asked >= sweep.trials and in_flight == 0:
            _close(sweep, DONE)
        else:
            _note(sweep, f"{asked} of {sweep.trials} trials asked, {in_flight} running or queued")
    elif in_flight == 0 and sweep.finished_at is None:
        _close(sweep, sweep.state)


def _submit(sweep: Sweep, s, t) -> int | None:
    """Queue trial ``t`` as a training job (its params over the sweep's fixed settings); returns the job id, or
    None when the combination is refused (the trial is told failed, with the reason)."""
    from optuna.trial import Trial, TrialState

    trial = t if isinstance(t, Trial) else Trial(s, _trial_id(sweep, t.number))
    params = dict(t.params)
    with session_scope() as db:
        viewer = _owner(db, sweep)
    try:
        with acting_as(viewer):
            from studio import operations

            spec = build_train_spec(model_id=sweep.base_model_id, dataset_id=sweep.dataset_id, method=sweep.method,
                                    settings={**sweep.settings, **params}, objective=sweep.objective)
            spec = replace(spec, sweep_id=sweep.id, trial_number=t.number)
            job, _ = operations.submit_train(spec, idempotency_key=f"sweep-{sweep.id}-trial-{t.number}")
            if sweep.shared and not job.shared:
                with session_scope() as db:
                    db.execute(update(Job).where(Job.id == job.id).values(shared=True))
    except SpecError as e:
        trial.set_user_attr("error", str(e))
        s.tell(t.number, state=TrialState.FAIL)
        return None
    trial.set_user_attr("job_id", job.id)
    return job.id


def _tell(s, sweep: Sweep, t, job: Job | None) -> None:
    """Tell Optuna how a finished trial's job ended."""
    from optuna.trial import TrialState

    if job is None:
        s.tell(t.number, state=TrialState.FAIL)
        return
    if job.state == JobState.pruned:
        s.tell(t.number, state=TrialState.PRUNED)
        return
    value = final_value(job, sweep.metric) if job.state == JobState.succeeded else None
    if value is None:
        if job.state == JobState.succeeded:
            storage().set_trial_user_attr(_trial_id(sweep, t.number), "error", f"the job recorded no {sweep.metric}")
        s.tell(t.number, state=TrialState.FAIL)
        return
    s.tell(t.number, value)


def _note(sweep: Sweep, message: str) -> None:
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep.id).values(message=message))


def _close(sweep: Sweep, state: str) -> None:
    best = best_trial(sweep.id)
    text = (f"best: trial {best['number']} with {sweep.metric} {best['value']:.4g}" if best else
            f"no trial recorded {sweep.metric}")
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep.id).values(state=state, finished_at=utcnow(), message=text))


def advance_open() -> list[int]:
    """Advance every running sweep, and settle cancelled ones (a worker's housekeeping round calls this, so
    a sweep goes on after any crash or restart). Returns the ids advanced."""
    with session_scope() as db:
        ids = [i for (i,) in db.query(Sweep.id).filter(Sweep.finished_at.is_(None)).all()]
    done = []
    for sweep_id in ids:
        try:
            if advance(sweep_id):
                done.append(sweep_id)
        except Exception:  # one sweep's trouble must not stop the others, nor the worker
            log.exception("sweep %s: could not advance", sweep_id)
    return done


def after_job(job_id: int, config: dict | None) -> None:
    """A job finished: when it was a sweep's trial, advance its sweep (the worker's finishing path)."""
    sweep_id = (config or {}).get("sweep_id")
    if not sweep_id:
        return
    try:
        advance(int(sweep_id))
    except Exception:  # the job has ended; the housekeeping round advances the sweep later
        log.exception("sweep %s: could not advance after job %s", sweep_id, job_id)


def cancel(sweep_id: int) -> str:
    """Stop a sweep: no new trials, its queued and running trial jobs cancelled. Returns its state."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        sweep.state = CANCELLED if sweep.state == RUNNING else sweep.state
        state = sweep.state
        jobs = [j.id for j in _trial_jobs(db, sweep_id) if j.state not in JobState.finished()]
    for job_id in jobs:
        with session_scope() as db:
            jobq.request_cancel(db, job_id)
    advance(sweep_id)
    return state
