"""The kinds of job, in one table: what each is called, which Celery task carries it, what its process runs.

A job is a row in the jobs table (models_db); its kind names one entry here. The studio sends the kind's
task by name (studio/celery_app.py), the worker registers one task per kind from this table
(worker/tasks.py), and the job's own process (worker/job_process.py) imports the kind's entry point, a
``module:function`` of the worker layer that takes the job's context. The studio never imports that entry
point: it is a name here, resolved only in the worker.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    ``entry``: the worker's ``module:function`` the job's process runs (it returns the job's result dict).
    ``label``: what the Jobs tab and the CLI call it.
    ``trains``: it trains a model step by step (loss curves, throughput and the system charts apply, and
    it may span several GPUs); the other kinds run on one device and show progress, log and result.
    ``makes_version``: its success registers a model version, which is then evaluated for its comparison
    (studio/evaluations.py ``follow_up``).
    """

    name: str
    entry: str
    label: str
    trains: bool = False
    makes_version: bool = False

    @property
    def task(self) -> str:
        """The Celery task name the studio sends and the worker registers."""
        return task_name(self.name)


def task_name(kind: str) -> str:
    """The Celery task that carries ``kind`` (a job kind, or ``generate``)."""
    return f"studio.{kind}"


JOB_KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("train", "worker.recipes:train", "training", trains=True, makes_version=True),
    JobKind("export", "worker.export:run_export_job", "export"),
    JobKind("evaluate", "worker.evaluation_job:run_evaluate_job", "evaluation"),
    JobKind("combine", "worker.combine:run_combine_job", "combination", makes_version=True),
    # a few measured steps of a training configuration: no version, no checkpoint (worker/preflight.py)
    JobKind("preflight", "worker.preflight:run_preflight_job", "pre-flight"),
)}

GENERATE = "generate"  # playground / side-by-side generations: a Generation row, not a job


def kind(name: str) -> JobKind:
    """The kind called ``name``; ValueError naming the known kinds otherwise."""
    try:
        return JOB_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known kinds: {', '.join(JOB_KINDS)}") from None
