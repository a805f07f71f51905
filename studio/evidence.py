"""Every new version carries its comparison, without torch: its evaluations against its parent's and its base's on
the same data sets (its own data set's eval split, the benchmarks pinned for its base, and any other data set
both were evaluated on), with the deltas and whether each is beyond noise. ``versions show --json`` has them as
``vs_parent`` and ``vs_base``; the Versions table's badge is :func:`forgetting` (worse than the model it was
trained from on a pinned benchmark, beyond noise).

Noise: a measure with a standard error on both sides (a benchmark's accuracy or exact match, from
lm-evaluation-harness) differs beyond noise when ``|delta| > NOISE_STDERRS x sqrt(se_a² + se_b²)``; a measure
without one (eval loss, perplexity) has ``beyond_noise`` None: the studio does not guess its spread.
"""
from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_db import BaseModel, Dataset, Evaluation, ModelVersion, session_scope
from studio import benchmarks, evaluations


def _rows(db: Session, *, version_id: int | None = None, base_model_id: int | None = None) -> dict[int, Evaluation]:
    if version_id is not None:
        where = Evaluation.version_id == version_id
    else:
        where = Evaluation.version_id.is_(None) & (Evaluation.base_model_id == base_model_id)
    return {e.dataset_id: e for e in db.scalars(select(Evaluation).where(where))}


def measure_delta(key: str, label: str, better_is: str, mine: dict, theirs: dict) -> dict | None:
    """One measure compared: both values, the delta (mine - theirs), the standard error of the delta where both
    have one, whether it is beyond noise, and whether it is better (None: no change)."""
    a, b = mine.get(key), theirs.get(key)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    delta = float(a) - float(b)
    se_a, se_b = mine.get(benchmarks.stderr_key(key)), theirs.get(benchmarks.stderr_key(key))
    stderr = math.sqrt(se_a ** 2 + se_b ** 2) if isinstance(se_a, (int, float)) and isinstance(se_b, (int, float)) \
        else None
    beyond = None if stderr is None else abs(delta) > benchmarks.NOISE_STDERRS * stderr
    if stderr == 0.0:  # both sides exact (every question right, or every one wrong): any change is real
        beyond = delta != 0
    better = None if delta == 0 else (delta < 0) == (better_is == "lower")
    return {"key": key, "label": label, "better_is": better_is, "value": a, "reference": b, "delta": delta,
            "stderr": stderr, "beyond_noise": beyond, "better": better}


def _against(db: Session, v: ModelVersion, mine: dict[int, Evaluation], theirs: dict[int, Evaluation],
             wanted: list[int], pinned: set[int], against: dict) -> dict:
    datasets, pending = [], []
    for ds_id in list(dict.fromkeys(wanted + sorted(set(mine) & set(theirs)))):
        if ds_id not in mine or ds_id not in theirs:
            pending.append(ds_id)
            continue
        ds = db.get(Dataset, ds_id)
        fmt = ds.format if ds else ""
        keys = evaluations.MEASURES.get(fmt, ()) + evaluations.MEASURES[evaluations.task_of(v)]
        measures = [m for m in (measure_delta(k, label, better, mine[ds_id].metrics, theirs[ds_id].metrics)
                                for k, label, better in dict.fromkeys(keys)) if m]
        worse = [m["key"] for m in measures if m["better"] is False and m["beyond_noise"]]
        datasets.append({"dataset_id": ds_id, "dataset": f"#{ds_id} {ds.name}" if ds else f"#{ds_id}",
                         "pinned": ds_id in pinned, "own": ds_id == v.dataset_id, "measures": measures,
                         "worse_beyond_noise": worse})
    return {**against, "datasets": datasets, "pending": pending,
            "worse_on_pinned": [d["dataset_id"] for d in datasets if d["pinned"] and d["worse_beyond_noise"]]}


def comparison(version_id: int) -> dict:
    """``{"vs_parent": {...} | None, "vs_base": {...}}`` for a version: per data set (its own, the pinned
    benchmarks, and any other both sides were evaluated on) each measure's value, reference, delta, standard
    error of the delta and whether it is beyond noise; ``pending``: wanted data sets one side has no evaluation
    on yet (queued after training, or never asked for); ``worse_on_pinned``: pinned benchmarks where it is
    worse beyond noise. ``vs_parent`` is None for a version trained from its base (``vs_base`` is that)."""
    with session_scope() as db:
        v = db.get(ModelVersion, int(version_id))
        pinned = [d.id for d in benchmarks.pins(db, v.base_model_id)]
        wanted = list(dict.fromkeys(([v.dataset_id] if v.dataset_id else []) + pinned))
        mine = _rows(db, version_id=v.id)
        base = db.get(BaseModel, v.base_model_id)
        out = {"vs_parent": None}
        if v.parent_id is not None:
            parent = db.get(ModelVersion, v.parent_id)
            out["vs_parent"] = _against(db, v, mine, _rows(db, version_id=v.parent_id), wanted, set(pinned),
                                        {"version_id": v.parent_id, "name": parent.name if parent else ""})
        out["vs_base"] = _against(db, v, mine, _rows(db, base_model_id=v.base_model_id), wanted, set(pinned),
                                  {"base_model_id": v.base_model_id, "name": base.name if base else ""})
        return out


def forgetting(version_ids: list[int]) -> dict[int, list[int]]:
    """The Versions table's badge: for each version, the pinned benchmarks on which it is worse beyond noise than
    the model it was trained from (its parent; its base for a version trained from its base)."""
    out = {}
    for vid in version_ids:
        result = comparison(vid)
        against = result["vs_parent"] or result["vs_base"]
        if against["worse_on_pinned"]:
            out[vid] = against["worse_on_pinned"]
    return out
