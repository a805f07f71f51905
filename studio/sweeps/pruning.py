"""The worker's side of a sweep: a trial's evaluations reported to its study from the training process, and
:class:`Pruned`, which ends the trial's job as ``pruned`` when Optuna's pruner says so.
"""
from __future__ import annotations

import logging
import math

from models_db import Sweep, session_scope
from studio.sweeps.studies import _trial_id, study

log = logging.getLogger("studio.sweeps")


class Pruned(Exception):
    """Raised in a trial's training process when Optuna's pruner stops it; its job ends ``pruned``."""


class TrialReport:
    """A sweep trial's evaluations, reported to its study from the training process (worker/callbacks.py):
    each is an intermediate value; when the pruner says so, :class:`Pruned` ends the job as ``pruned``."""

    def __init__(self, sweep: Sweep, number: int):
        self.sweep, self.number = sweep, number
        self._trial = None

    @classmethod
    def for_config(cls, config: dict | None) -> TrialReport | None:
        """The reporter of a sweep's trial job (None for any other job, or a sweep without an eval metric)."""
        config = config or {}
        if config.get("sweep_id") is None or config.get("trial_number") is None:
            return None
        with session_scope() as db:
            sweep = db.get(Sweep, int(config["sweep_id"]))
            if sweep is None:
                return None
            db.expunge(sweep)
        if not sweep.metric.startswith("eval_") or sweep.pruner == "none":
            return None
        return cls(sweep, int(config["trial_number"]))

    def trial(self):
        if self._trial is None:
            from optuna.trial import Trial

            self._trial = Trial(study(self.sweep), _trial_id(self.sweep, self.number))
        return self._trial

    def evaluated(self, step: int, metrics: dict) -> None:
        """Report the sweep's metric at ``step``; raise :class:`Pruned` when the pruner stops the trial."""
        value = metrics.get(self.sweep.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        try:
            trial = self.trial()
            trial.report(float(value), step)
            prune = trial.should_prune()
        except Exception as e:  # noqa: BLE001 - the study's trouble never fails the training
            log.warning("sweep %s trial %s: could not report step %s: %s", self.sweep.id, self.number, step, e)
            return
        if prune:
            raise Pruned(f"pruned at step {step}: {self.sweep.metric} {value:.4g} is worse than the median of the "
                         f"earlier trials of sweep {self.sweep.id} at this step")
