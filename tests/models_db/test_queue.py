"""The visible queue on SQLite and Postgres: "start after job N" is honoured by the claim, the sweep
sends a waiting job once its predecessor finishes (and re-sends lost messages), positions are first
come first served, and every attempt is recorded with how it ended."""
from datetime import timedelta

from models_db import Job, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from models_db.schema import utcnow


def _new_job(**kw) -> int:
    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={}, **kw)
        return job.id


def test_a_job_waits_for_its_predecessor_and_is_sent_once_it_finishes(backend):
    first = _new_job()
    second = _new_job(after_job_id=first)
    with session_scope() as db:
        assert q.queue_positions(db) == {first: 1, second: 2}
        assert jobq.claim(db, second, "w1", 60) is None
        assert jobq.why_not_claimed(db, second) == f"it waits for job {first} (queued) to finish"
        assert jobq.take_resendable(db, lost_after=None) == []  # nothing to send while it waits
        claim = jobq.claim(db, first, "w1", 60)
    with session_scope() as db:
        assert q.queue_positions(db) == {second: 1}
        assert jobq.claim(db, second, "w2", 60) is None
        assert jobq.finish(db, claim, "failed", error="boom")  # any end releases the next job
    with session_scope() as db:
        assert jobq.take_resendable(db, lost_after=None) == [(second, "train")]
    with session_scope() as db:
        assert jobq.take_resendable(db, lost_after=None) == []  # sent once, by one worker
        assert jobq.claim(db, second, "w2", 60) is not None


def test_lost_messages_are_resent_only_after_the_quiet_period(backend):
    job_id = _new_job()
    with session_scope() as db:
        assert jobq.take_resendable(db, lost_after=60) == []
        assert jobq.take_resendable(db, lost_after=60, now=utcnow() + timedelta(seconds=61)) == [(job_id, "train")]
    with session_scope() as db:  # stamped: the next sweep waits another period
        assert jobq.take_resendable(db, lost_after=60, now=utcnow() + timedelta(seconds=30)) == []
        jobq.request_cancel(db, job_id)
    with session_scope() as db:
        assert jobq.take_resendable(db, lost_after=0, now=utcnow() + timedelta(hours=1)) == []


def test_history_records_each_attempt_its_resume_point_and_end(backend):
    job_id = _new_job()
    with session_scope() as db:
        first = jobq.claim(db, job_id, "w1", 60)
    with session_scope() as db:
        jobq.record_pid(db, first, 1234)
        jobq.report(db, first, step=12)
    with session_scope() as db:  # the worker vanished
        jobq.reap_expired(db, now=utcnow() + timedelta(seconds=120))
    with session_scope() as db:
        second = jobq.claim(db, job_id, "w2", 60)
    with session_scope() as db:
        jobq.report(db, second, step=20, resume_step=10)
        assert not jobq.finish(db, first, "succeeded")  # the lost worker's end is refused
        assert jobq.finish(db, second, "succeeded", message="done")
    with session_scope() as db:
        job = db.get(Job, job_id)
        a, b = job.history
    assert (a["attempt"], a["worker"], a["pid"], a["outcome"], a["reached_step"]) == (1, "w1", 1234, "lost", 12)
    assert "re-queued" in a["reason"]
    assert (b["attempt"], b["worker"], b["outcome"], b["resumed_from"], b["reached_step"]) == (2, "w2", "succeeded", 10, 20)
