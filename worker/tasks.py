"""Celery tasks: thin, they take a job id and hand it to the runner."""
from __future__ import annotations

from worker.celery_app import app


@app.task(name="studio.train")
def train(job_id: int) -> str:
    """Run a training job (claims it first; a duplicate delivery does nothing)."""
    from worker.runner import run_job

    return run_job(job_id)


@app.task(name="studio.export")
def export(job_id: int) -> str:
    """Build an export (merged model or adapter zip) for a model version."""
    from worker.runner import run_job

    return run_job(job_id)
