"""Celery tasks, one per job kind of studio/jobkinds.py plus generations: thin, they take a row's id and
hand it to the runner, which claims it first (a duplicate delivery does nothing)."""
from __future__ import annotations

from studio.celery_app import app
from studio.jobkinds import GENERATE, JOB_KINDS, JobKind, task_name


def _job_task(kind: JobKind):
    """The task for ``kind``: the runner claims the job and runs the kind's entry point in its own process."""
    def run(job_id: int) -> str:
        from worker.supervisor import run_job

        return run_job(job_id)

    run.__name__ = run.__qualname__ = kind.name
    run.__doc__ = f"Run a {kind.label} job."
    return app.task(name=kind.task)(run)


TASKS = {name: _job_task(kind) for name, kind in JOB_KINDS.items()}


@app.task(name=task_name(GENERATE))
def generate(generation_id: int) -> str:
    """Stream one playground / side-by-side generation into its row (claimed first, like a job)."""
    from worker.generate import run_generation

    return run_generation(generation_id)
