"""The Celery app. Thin tasks take ids; the database is the authority on job state."""
from __future__ import annotations

from celery import Celery

from studio.settings import get_settings


def _transport_options(broker: str) -> dict:
    if broker.startswith("sqla+"):
        # kombu hands these straight to create_engine: wait on SQLite's lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    # Redis redelivers an unacked task after the visibility timeout. Claiming makes a redelivery
    # harmless, but a long timeout avoids the churn for multi-hour jobs.
    return {"visibility_timeout": 12 * 3600}


def make_app() -> Celery:
    s = get_settings()
    app = Celery("studio", broker=s.broker, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,  # a task killed mid-run is redelivered; claiming makes that harmless
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one job at a time per worker: a GPU is not shared
        task_ignore_result=True,  # outcomes live in the jobs table
        task_default_queue=s.worker_queues.split(",")[0],
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(s.broker),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_app()


def enqueue(kind: str, job_id: int, queue: str | None = None) -> None:
    """Send the task for a job by name, so callers need not import the task modules."""
    app.send_task(f"studio.{kind}", args=[job_id], queue=queue or get_settings().worker_queues.split(",")[0])
