"""Scale out: two workers on one machine (CPU), against real Redis and Postgres, take two jobs in parallel.
Each job runs exactly once, on its own worker, at the same time as the other, and each worker records
the job it runs (``Worker.current_job_id``, what the Fleet tab and ``studio workers list`` show)."""
from sqlalchemy import select

from models_db import Job, Worker, session_scope
from studio import fleet, operations
from tests.cli import wait_until
from tests.faults.conftest import worker_id


def active_jobs() -> list[int]:
    with session_scope() as db:
        return list(db.scalars(select(Job.id).where(Job.state.in_(("queued", "running")))))


def current_jobs(ids: list[str]) -> dict[str, int | None]:
    with session_scope() as db:
        return {i: db.get(Worker, i, populate_existing=True).current_job_id for i in ids}


def test_two_workers_take_two_jobs_in_parallel_each_exactly_once(services_studio):
    s = services_studio
    workers = [worker_id(s.start_worker()), worker_id(s.start_worker())]
    jobs = [s.submit(max_steps=12, dataset_id=s.unsplit_dataset_id) for _ in range(2)]  # each queues an evaluation

    # both run at once, each on its own worker, which records it as its current job
    wait_until(lambda: all(s.job(j).state == "running" for j in jobs), timeout=120, every=0.1)
    running = {s.job(j).worker_id: j for j in jobs}
    assert sorted(running) == sorted(workers)
    wait_until(lambda: current_jobs(workers) == running, timeout=10, every=0.1)
    with session_scope() as db:
        shown = {w["id"]: w for w in fleet.list_workers(db)}
    assert all(shown[w]["alive"] and shown[w]["current_job_id"] == running[w] for w in workers)

    done = [s.wait_state(j, "succeeded", "failed", timeout=300) for j in jobs]
    assert [j.state for j in done] == ["succeeded", "succeeded"], [(j.error, s.log(j.id)[-2000:]) for j in done]
    for job in done:  # exactly once: one attempt, on the worker that started it, one version
        assert [(a["attempt"], a["worker"], a["outcome"]) for a in job.history] == [(1, job.worker_id, "succeeded")]
    assert sorted(s.versions()) == sorted(jobs)
    a, b = done
    assert a.worker_id != b.worker_id
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # the two runs overlapped
    # each worker clears its record at the end: the train job is gone from it at once (a follow-up
    # evaluate job may have replaced it; cancelling that ends it, and the record is cleared)
    wait_until(lambda: not set(current_jobs(workers).values()) & set(jobs), timeout=10, every=0.1)
    for job_id in active_jobs():
        operations.cancel_job(job_id)
    wait_until(lambda: current_jobs(workers) == {w: None for w in workers}, timeout=60, every=0.1)
