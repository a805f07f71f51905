"""The job lifecycle on SQLite and on Postgres: claims are exclusive, stale claims cannot write,
the reaper re-queues lost jobs and fences out their old worker, cancel sticks, keys deduplicate."""
from datetime import timedelta

import pytest
from sqlalchemy import select

from models_db import Job, JobState, Metric, session_scope
from models_db import jobs as jobq
from models_db.schema import utcnow


def _new_job(**kw) -> int:
    with session_scope() as db:
        job, created = jobq.create_job(db, kind="train", config={"x": 1}, **kw)
        assert created
        return job.id


def test_claim_is_exclusive_and_fenced(backend):
    job_id = _new_job()
    with session_scope() as db:
        first = jobq.claim(db, job_id, "w1", 60)
    with session_scope() as db:
        assert jobq.claim(db, job_id, "w2", 60) is None  # a redelivered message finds it taken
    assert first.attempt == 1 and first.fence == 1
    with session_scope() as db:
        jobq.report(db, first, step=3, metrics=[(3, "loss", 1.5)])
    with session_scope() as db:
        assert db.get(Job, job_id).step == 3
        assert db.scalar(select(Metric.value).where(Metric.job_id == job_id)) == 1.5


def test_reaper_requeues_and_refuses_the_lost_workers_writes(backend):
    job_id = _new_job()
    with session_scope() as db:
        old = jobq.claim(db, job_id, "w1", 60)
    with session_scope() as db:
        reaped = jobq.reap_expired(db, now=utcnow() + timedelta(seconds=120))
    assert reaped == [(job_id, "queued")]
    with pytest.raises(jobq.StaleFence):
        with session_scope() as db:
            jobq.report(db, old, step=9, metrics=[(9, "loss", 0.1)])
    with session_scope() as db:  # the refused write left nothing behind
        assert db.get(Job, job_id).step == 0
        assert db.scalar(select(Metric).where(Metric.job_id == job_id)) is None
        new = jobq.claim(db, job_id, "w2", 60)
    assert new.attempt == 2 and new.fence > old.fence


def test_reaper_fails_a_job_out_of_attempts(backend):
    job_id = _new_job(max_attempts=1)
    with session_scope() as db:
        jobq.claim(db, job_id, "w1", 1)
    with session_scope() as db:
        assert jobq.reap_expired(db, now=utcnow() + timedelta(seconds=5)) == [(job_id, "failed")]
        assert "giving up" in db.get(Job, job_id).error


def test_cancel_queued_never_runs_and_running_is_flagged(backend):
    queued, running = _new_job(), _new_job()
    with session_scope() as db:
        claim = jobq.claim(db, running, "w1", 60)
    with session_scope() as db:
        assert jobq.request_cancel(db, queued) == "cancelled"
        assert jobq.request_cancel(db, running) == "running"
    with session_scope() as db:
        assert jobq.claim(db, queued, "w1", 60) is None
        assert jobq.heartbeat(db, claim, 60) is True  # the worker sees the request on its next beat


def test_idempotency_key_gives_one_job(backend):
    with session_scope() as db:
        a, created_a = jobq.create_job(db, kind="train", config={}, idempotency_key="k1")
    with session_scope() as db:
        b, created_b = jobq.create_job(db, kind="train", config={}, idempotency_key="k1")
    assert created_a and not created_b and a.id == b.id


def test_succeed_registers_version_atomically(backend):
    from models_db import BaseModel, ModelVersion

    with session_scope() as db:
        base = BaseModel(name="m", path="/x", source="/x")
        db.add(base)
        db.flush()
        base_id = base.id
    job_id = _new_job()
    with session_scope() as db:
        claim = jobq.claim(db, job_id, "w1", 60)
    with session_scope() as db:
        jobq.reap_expired(db, now=utcnow() + timedelta(seconds=120))  # claim goes stale
    with pytest.raises(jobq.StaleFence):
        with session_scope() as db:
            jobq.succeed(db, claim, result={}, version={"name": "v", "base_model_id": base_id, "method": "lora"})
    with session_scope() as db:
        assert db.scalar(select(ModelVersion)) is None  # rolled back with the refused transition


def test_one_transition_table_guards_every_finish(backend):
    """A finished job never moves again, and the moves the code makes are the table's."""
    for old, moves in jobq.TRANSITIONS.items():
        for new in JobState:
            if new in moves:
                jobq.check_transition(old.value, new.value)
            else:
                with pytest.raises(jobq.IllegalTransition):
                    jobq.check_transition(old.value, new.value)
    assert all(not jobq.TRANSITIONS[s] for s in (JobState.succeeded, JobState.failed, JobState.cancelled))
    assert set(jobq.TRANSITIONS) == set(JobState)


def test_retry_or_fail_is_the_one_decision_for_the_supervisor_and_the_reaper(backend):
    job_id = _new_job(max_attempts=2)
    with session_scope() as db:
        jobq.claim(db, job_id, "w1", 1)
        job = db.get(Job, job_id)
        assert jobq.retry_or_fail(job, retry="again", give_up="no more") == jobq.Verdict(JobState.queued, "again")
        job.attempt = 2
        assert jobq.retry_or_fail(job, retry="again", give_up="no more") == \
            jobq.Verdict(JobState.failed, "no more", "no more")
