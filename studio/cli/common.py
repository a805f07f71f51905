"""What every command shares: the user-error type, --json output, waiting on a job with a progress bar."""
from __future__ import annotations

import json
import sys
import time

from models_db import Job, JobState, session_scope
from studio.progress import Bar


class CliError(Exception):
    """A user error: printed on stderr without a stack trace."""


def emit(args, obj: dict, text: str) -> None:
    print(json.dumps(obj, default=str) if args.json else text)


def wait_for(job_id: int, *, quiet: bool = False, poll: float = 1.0) -> Job:
    """Block until the job finishes, drawing a progress bar on stderr; while queued, the bar says what the job
    waits behind and when that ends (studio.operations.waiting_for), never a bare "queued"."""
    from studio.operations import waiting_for

    bar = Bar(stream=sys.stderr)
    while True:
        with session_scope() as db:
            job = db.get(Job, job_id)
        why = waiting_for(job_id) if job.state == JobState.queued else job.message
        bar.update(job.step, job.max_steps, f"{job.state}: {why or ''}")
        if job.state in JobState.finished():  # succeeded, failed, cancelled or pruned (a sweep's trial)
            bar.close()
            return job
        time.sleep(poll)


def _job_line(j: Job, position: int | None = None) -> str:
    extra = f" -> version {j.result.get('version_id')}" if (j.result or {}).get("version_id") else ""
    if position:
        extra += f" (position {position} in the queue{f', after job {j.after_job_id}' if j.after_job_id else ''})"
    err = f"\n  {j.error}" if j.error else ""
    return f"job {j.id} [{j.kind}] {j.state} step {j.step}/{j.max_steps} attempt {j.attempt}{extra}{err}"

