"""Creating a sweep: every setting checked (the space, the metric, the sampler's needs) before anything is stored
or queued, the sweep's row and study recorded, its first trial seeded with the advisor's settings, and the first
step of the loop taken.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import uuid

from models_db import Dataset, Sweep, session_scope
from models_db import queries as q
from models_db.access import hidden_reason
from studio import methods
from studio.jobspec import TRAINING, build_train_spec
from studio.sweeps.loop import RUNNING, advance
from studio.sweeps.space import (Dim, SweepError, _evaluates, check_dim, default_direction, parse_dim,
                                 recorded_metrics)
from studio.sweeps.studies import study

log = logging.getLogger("studio.sweeps")

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("minimize", "maximize")
MAX_TRIALS = 500


def advised_start(model_id: int, dataset_id: int, method: str, dims: dict[str, Dim]) -> dict:
    """The first trial: the advisor's suggested settings where they lie inside the space (the method's own
    defaults when the advisor recommends another method). Returns {"from", "params"}."""
    advised, source = {}, "advisor"
    try:
        from studio.advisor import advise
        from studio.advisor.sources import studio_inputs

        inputs, _ = studio_inputs(model=str(model_id), dataset=dataset_id)
        advice = advise(inputs)
        if advice.method == method:
            advised = dict(advice.hyperparameters)
        else:
            source = f"{method}'s defaults (the advisor recommends {advice.method})"
    except Exception as e:  # noqa: BLE001 - advice is a seed, never a reason to refuse a sweep
        log.info("no advice to seed the sweep: %s", e)
        source = f"{method}'s defaults"
    spec = methods.get(method)
    fallback = {**{k: knob.default for k, knob in TRAINING.items()}, **dict(spec.default_training),
                **{f.name: f.default for f in dataclasses.fields(spec.params)}}
    params = {}
    for key, dim in dims.items():
        value = advised.get(key, fallback.get(key))
        if value is not None and dim.holds(value):
            params[key] = int(value) if dim.kind == "int" else float(value) if dim.kind != "choice" else value
    return {"from": source, "params": params}


def create(*, model: str | int, dataset_id: int, method: str, space: list[str] | dict[str, Dim], trials: int,
           metric: str = "eval_loss", direction: str | None = None, sampler: str = "tpe", pruner: str = "median",
           parallel: int = 0, settings: dict | None = None, objective: str | None = None,
           seed_from_advisor: bool = True) -> int:
    """Check everything, record the sweep and its study, seed it with the advised settings and queue its first
    trials. Bad input raises SweepError before anything is stored or queued. Returns the sweep's id."""
    settings = dict(settings or {})
    if not isinstance(trials, int) or trials < 1:
        raise SweepError(f"--trials {trials}: a sweep needs at least 1 trial")
    if trials > MAX_TRIALS:
        raise SweepError(f"--trials {trials}: at most {MAX_TRIALS} trials per sweep")
    if sampler not in SAMPLERS:
        raise SweepError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise SweepError(f"--pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    if parallel < 0:
        raise SweepError(f"--parallel {parallel}: give 0 (as many as free workers) or a positive number")
    dims = space if isinstance(space, dict) else {}
    if not isinstance(space, dict):
        for text in space:
            dim = parse_dim(text)
            if dim.key in dims:
                raise SweepError(f"--space {dim.key} is given twice; give each setting once")
            dims[dim.key] = dim
    if not dims:
        raise SweepError("a sweep needs a search space: add --space KEY=KIND:ARGS, e.g. "
                         "--space learning_rate=loguniform:1e-5:1e-3")
    both = sorted(set(dims) & set(settings))
    if both:
        raise SweepError(f"{both[0]} is both searched (--space) and fixed (--set); keep one")
    with session_scope() as db:
        base = q.model_by_ref(db, model)
        if base is None:
            raise SweepError(f"model {model!r} does not exist (studio models list)")
        ds = db.get(Dataset, dataset_id)
        if ds is None:
            raise SweepError(hidden_reason(db, Dataset, dataset_id) or
                             f"dataset {dataset_id} does not exist (studio dataset list)")
        model_id, rows = base.id, ds.rows
        db.expunge(ds)
    fixed = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings=settings,
                             objective=objective)  # the --set values alone (SpecError says what is wrong)
    objective = fixed.objective
    dims = {k: check_dim(d, model_id=model_id, dataset_id=dataset_id, method=method, objective=objective,
                         settings=settings) for k, d in dims.items()}
    recorded = recorded_metrics(objective, _evaluates(ds, fixed))
    if metric not in recorded:
        why = ""
        if metric.startswith("eval_") or metric == "perplexity":
            if not _evaluates(ds, fixed):
                why = (f" Dataset {dataset_id} holds out no eval rows ({rows} rows, eval_split {fixed.eval_split:g}): "
                       "add --set eval_split=0.2, or store a split with the data set.")
        raise SweepError(f"--metric {metric}: a {method} job on dataset {dataset_id} does not record it; it "
                         f"records {', '.join(recorded)}.{why}")
    direction = direction or default_direction(metric)
    if direction not in DIRECTIONS:
        raise SweepError(f"--direction {direction!r}: use minimize or maximize")
    if sampler == "grid":
        continuous = [d.key for d in dims.values() if d.grid() is None]
        if continuous:
            raise SweepError(f"--sampler grid: {continuous[0]} is a continuous range; give it as choice:A,B,C "
                             "(or int:LOW:HIGH) to search a grid")
        points = math.prod(len(d.grid()) for d in dims.values())
        if trials > points:
            raise SweepError(f"--trials {trials}: the grid has only {points} points; ask for at most {points}")
    seed = advised_start(model_id, dataset_id, method, dims) if seed_from_advisor else {"from": "", "params": {}}
    with session_scope() as db:
        row = Sweep(study_name=f"studio-sweep-{uuid.uuid4().hex[:12]}", base_model_id=model_id, dataset_id=dataset_id,
                    method=method, objective=objective, space={k: d.to_json() for k, d in dims.items()},
                    settings=settings, metric=metric, direction=direction, sampler=sampler, pruner=pruner,
                    trials=trials, parallel=parallel, seed=seed, state=RUNNING, message="starting")
        db.add(row)
        db.flush()
        sweep_id = row.id
        db.expunge(row)
    s = study(row)  # after the commit: on SQLite, Optuna's own connection waits for no open transaction of ours
    s.set_user_attr("sweep_id", sweep_id)
    if seed["params"]:
        s.enqueue_trial(seed["params"], user_attrs={"seeded_from": seed["from"]}, skip_if_exists=True)
    advance(sweep_id)
    return sweep_id
