"""Celery tasks: thin, they take a job id and hand it to the runner."""
from __future__ import annotations

from worker.celery_app import app


@app.task(name="studio.train")
def train(job_id: int) -> str:
    """Run a training job (claims it first; a duplicate delivery does nothing)."""
    from worker.runner import run_job

    return run_job(job_id)


@app.task(name="studio.generate")
def generate(generation_id: int) -> str:
    """Stream one playground / side-by-side generation into its row (claimed first, like a job)."""
    from worker.generate import run_generation

    return run_generation(generation_id)


@app.task(name="studio.export")
def export(job_id: int) -> str:
    """Build an export (merged model or adapter zip) for a model version."""
    from worker.runner import run_job

    return run_job(job_id)


@app.task(name="studio.evaluate")
def evaluate(job_id: int) -> str:
    """Evaluate a model version on a data set version (one Evaluation row)."""
    from worker.runner import run_job

    return run_job(job_id)


@app.task(name="studio.combine")
def combine(job_id: int) -> str:
    """Combine several LoRA versions of one base into a new version (peft's add_weighted_adapter)."""
    from worker.runner import run_job

    return run_job(job_id)
