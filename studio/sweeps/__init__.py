"""Hyper-parameter sweeps: Optuna searches, the queue trains.

A sweep is a row in ``sweeps`` (what to search, on which model and data, for which metric) plus an Optuna study
stored in the studio's own database (Optuna's RDB storage on the same SQLAlchemy URL, in Optuna's own tables), so
it survives a restart of the studio and its workers. Each trial is a normal training job submitted through
``operations.submit_train`` (routing, resume, cancel, lineage and the Jobs tab all apply); its config carries
``sweep_id`` and ``trial_number``.

Ask and tell: :func:`advance` tells Optuna the result of every trial whose job has finished, then asks for as many
new trials as there are free slots (the sweep's ``parallel``, capped by the alive training workers, at least one)
until the wanted number has been asked. It is idempotent and takes a short lease on the sweep row, so the worker's
finishing path and its housekeeping may both call it (worker/job_process.py, worker/consumer.py): a crash anywhere
only delays the next step. A trial job's evaluations feed Optuna's pruner (:class:`TrialReport`, called from the
worker's callback); a pruned trial's job ends ``pruned``.

The package, by responsibility (each module imports only those above it; callers use ``sweeps.X`` from here):

- ``space``: ``--space`` specs parsed and checked (:class:`Dim`, :func:`parse_dim`, :func:`check_dim`), the metrics
  a job records, :class:`SweepError`;
- ``studies``: Optuna's storage on the studio's database and a sweep's study (sampler, pruner);
- ``pruning``: the training process's reports to the pruner (:class:`TrialReport`, :class:`Pruned`);
- ``views``: the JSON the CLI and the Sweeps tab show, the best trial, importances, promoting the best version;
- ``loop``: the ask-and-tell step (:func:`advance`) under its lease, its worker entry points, :func:`cancel`;
- ``creation``: :func:`create`, checking everything before a sweep is stored, seeded from the advisor.

Nothing here imports torch.
"""
from __future__ import annotations

from studio.sweeps.space import (KINDS, Dim, SweepError, check_dim, default_direction, field_type, parse_dim,
                                 recorded_metrics)
from studio.sweeps.studies import PRUNE_AFTER_TRIALS, optuna_tables, reset_storages, storage, study
from studio.sweeps.pruning import Pruned, TrialReport
from studio.sweeps.views import (_trial_jobs as _trial_jobs, best_trial, importances, list_sweeps, promote_best,
                                 sweep_json, trials_json)
from studio.sweeps.loop import (CANCELLED, DONE, LOCK_SECONDS, RUNNING, advance, advance_open, after_job, cancel,
                                final_value, free_slots)
from studio.sweeps.creation import DIRECTIONS, MAX_TRIALS, PRUNERS, SAMPLERS, advised_start, create

__all__ = [
    "CANCELLED", "DIRECTIONS", "DONE", "KINDS", "LOCK_SECONDS", "MAX_TRIALS", "PRUNERS", "PRUNE_AFTER_TRIALS",
    "RUNNING", "SAMPLERS", "Dim", "Pruned", "SweepError", "TrialReport", "advance", "advance_open", "advised_start",
    "after_job", "best_trial", "cancel", "check_dim", "create", "default_direction", "field_type", "final_value",
    "free_slots", "importances", "list_sweeps", "optuna_tables", "parse_dim", "promote_best", "recorded_metrics",
    "reset_storages", "storage", "study", "sweep_json", "trials_json",
]
