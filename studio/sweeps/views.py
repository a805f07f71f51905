"""Reading a sweep: the JSON that ``studio sweep show/list --json`` prints and the Sweeps tab draws (each trial
with its job's state, the best trial, the parameter importances), and promoting the best trial's version.
"""
from __future__ import annotations

import logging

from models_db import Dataset, Job, Sweep, session_scope
from models_db import queries as q
from models_db.access import hidden_reason
from studio.sweeps.space import Dim, SweepError
from studio.sweeps.studies import study

log = logging.getLogger("studio.sweeps")


def _get(db, sweep_id: int) -> Sweep:
    sweep = db.get(Sweep, sweep_id)
    if sweep is None:
        raise SweepError(hidden_reason(db, Sweep, sweep_id) or f"sweep {sweep_id} does not exist (studio sweep list)")
    return sweep


def _trial_jobs(db, sweep_id: int) -> list[Job]:
    """The sweep's trial jobs the viewer may see, by their idempotency keys (``sweep-ID-trial-N``)."""
    return list(db.query(Job).filter(Job.idempotency_key.like(f"sweep-{sweep_id}-trial-%")).order_by(Job.id))


def trials_json(sweep: Sweep) -> list[dict]:
    """Each trial: number, params, state (its job's, or Optuna's before it has one), the metric, job and version."""
    from optuna.trial import TrialState

    with session_scope() as db:
        jobs = {j.id: j for j in _trial_jobs(db, sweep.id)}
        for j in jobs.values():
            db.expunge(j)
    out = []
    for t in study(sweep).get_trials(deepcopy=False):
        job = jobs.get(t.user_attrs.get("job_id"))
        if t.user_attrs.get("job_id") is not None and job is None:
            continue  # a job the viewer may not see
        state = job.state if job is not None else {TrialState.WAITING: "waiting", TrialState.FAIL: "failed",
                                                   TrialState.RUNNING: "asking"}.get(t.state, t.state.name.lower())
        value = t.value if t.state == TrialState.COMPLETE else None
        out.append({"number": t.number, "params": dict(t.params), "state": str(state), sweep.metric: value,
                    "value": value, "job_id": job.id if job else None,
                    "version_id": (job.result or {}).get("version_id") if job else None,
                    "step": job.step if job else 0, "max_steps": job.max_steps if job else 0,
                    "error": t.user_attrs.get("error") or (job.error if job else None),
                    "seeded_from": t.user_attrs.get("seeded_from")})
    return out


def _best(sweep: Sweep, trials: list[dict]) -> dict | None:
    done = [t for t in trials if t["value"] is not None]
    if not done:
        return None
    pick = min if sweep.direction == "minimize" else max
    return pick(done, key=lambda t: t["value"])


def best_trial(sweep_id: int) -> dict | None:
    """The finished trial with the best metric (lowest when minimizing), or None."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
    return _best(sweep, trials_json(sweep))


def sweep_json(sweep_id: int) -> dict:
    """The sweep as ``studio sweep show --json`` prints it: settings, ``trials`` and ``best``."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
        base = q.model_by_ref(db, sweep.base_model_id)
        ds = db.get(Dataset, sweep.dataset_id)
        names = (base.name if base else None, ds.name if ds else None)
    trials = trials_json(sweep)
    return {"id": sweep.id, "state": sweep.state, "message": sweep.message, "study": sweep.study_name,
            "model_id": sweep.base_model_id, "model": names[0], "dataset_id": sweep.dataset_id, "dataset": names[1],
            "method": sweep.method, "objective": sweep.objective, "metric": sweep.metric,
            "direction": sweep.direction, "sampler": sweep.sampler, "pruner": sweep.pruner,
            "trials_wanted": sweep.trials, "parallel": sweep.parallel,
            "space": {k: Dim.from_json(k, d).text() for k, d in sweep.space.items()}, "settings": sweep.settings,
            "seed": sweep.seed, "created_at": sweep.created_at.isoformat() if sweep.created_at else None,
            "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
            "trials": trials, "best": _best(sweep, trials)}


def list_sweeps() -> list[dict]:
    """Every sweep the viewer may see, newest first (no trials: ``sweep_json`` has them)."""
    with session_scope() as db:
        rows = db.query(Sweep).order_by(Sweep.id.desc()).limit(200).all()
        return [{"id": r.id, "state": r.state, "method": r.method, "metric": r.metric, "direction": r.direction,
                 "sampler": r.sampler, "trials_wanted": r.trials, "model_id": r.base_model_id,
                 "dataset_id": r.dataset_id, "message": r.message,
                 "space": {k: Dim.from_json(k, d).text() for k, d in r.space.items()}} for r in rows]


def importances(sweep_id: int) -> dict[str, float]:
    """How much each searched setting explains the metric, by Optuna's PED-ANOVA (no scikit-learn needed);
    {} until at least two trials have finished with a value."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
    s = study(sweep)
    complete = [t for t in s.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(s, evaluator=PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        log.info("sweep %s: no importances yet: %s", sweep_id, e)
        return {}


def promote_best(sweep_id: int, tag: str = "best") -> dict:
    """Tag the best trial's version (studio/versions.py tags), keeping its other tags. Returns the best trial."""
    from studio import versions

    best = best_trial(sweep_id)
    if best is None or best.get("version_id") is None:
        raise SweepError(f"sweep {sweep_id} has no finished trial with a version yet: wait for one to succeed")
    tags = versions.parse_tags(tag)
    with session_scope() as db:
        v = versions.get(db, best["version_id"])
        current = list(v.tags or [])
    versions.update(best["version_id"], tags=list(dict.fromkeys([*current, *tags, f"sweep-{sweep_id}"])))
    return best
