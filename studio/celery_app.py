"""The Celery app: the studio sends tasks on it by name; the worker registers their bodies on the same app
(worker/tasks.py). Thin tasks take ids; the database is the authority on job state."""
from __future__ import annotations

from functools import lru_cache

from celery import Celery

from studio.jobkinds import task_name
from studio.settings import get_settings

# Redis redelivers an unacked task after its visibility timeout. Claiming makes a redelivery harmless
# (docs/reliability.md), but a long timeout avoids the churn for multi-hour jobs.
VISIBILITY_TIMEOUT_S = 12 * 3600


def _transport_options(broker: str) -> dict:
    if broker.startswith("sqla+"):
        # kombu hands these straight to create_engine: wait on SQLite's lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    # STUDIO_BROKER_TRANSPORT_OPTIONS (JSON) overrides kombu's Redis options, e.g. the fault tests'
    # {"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}.
    return {"visibility_timeout": VISIBILITY_TIMEOUT_S, **get_settings().broker_transport_options}


def make_app(broker: str | None = None) -> Celery:
    s = get_settings()
    broker = broker or s.broker
    app = Celery("studio", broker=broker)  # the worker registers the task bodies on it (worker/tasks.py)
    app.conf.update(
        task_acks_late=True,  # a task killed mid-run is redelivered; claiming makes that harmless
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one job at a time per worker: a GPU is not shared
        task_ignore_result=True,  # outcomes live in the jobs table
        task_default_queue=s.worker_queues.split(",")[0],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker restart, however long
        broker_transport_options=_transport_options(broker),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_app()


@lru_cache(maxsize=4)
def _sender(broker: str) -> Celery:
    return app if broker == app.conf.broker_url else make_app(broker)


def enqueue(kind: str, job_id: int, queue: str | None = None) -> None:
    """Send the task for a job by name, so callers need not import the task modules.

    Uses the broker the current settings name (a process whose settings changed after import, as
    tests do, still sends to the right one). Raises kombu's OperationalError when the broker is
    unreachable; the job stays queued in the database and a worker's sweep sends it later."""
    s = get_settings()
    _sender(s.broker).send_task(task_name(kind), args=[job_id], queue=queue or s.worker_queues.split(",")[0])
