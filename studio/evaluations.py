"""Evaluations of model versions on data set versions, without torch: the checks before an ``evaluate``
job is queued, the rows it leaves (one per version x data set, upserted), and the tables the Versions
tab and ``studio versions compare`` show. The numbers themselves come from a worker (worker/evaluation_job.py).

What is measured: eval loss and perplexity for a causal LM, accuracy, macro F1 and eval loss for a
classifier; on the data set's stored eval split, or on its training rows when it has none (``split``
says which)."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_db import Dataset, Evaluation, Job, JobState, ModelVersion, session_scope
from models_db import jobs as jobq
from studio.jobspec import SpecError

log = logging.getLogger("studio")

# what each task measures, in display order: (key, label, "lower"|"higher" is better)
MEASURES = {
    "causal_lm": (("eval_loss", "eval loss", "lower"), ("perplexity", "perplexity", "lower")),
    "seq_cls": (("accuracy", "accuracy", "higher"), ("f1", "macro F1", "higher"), ("eval_loss", "eval loss", "lower")),
}


def task_of(v: ModelVersion) -> str:
    """The task a version was trained for (versions from before tasks existed are causal LMs)."""
    return (v.config or {}).get("task") or "causal_lm"


def check_pair(v: ModelVersion, ds: Dataset) -> None:
    """Refuse a data set the version cannot be measured on: a format of another task, or (a classifier)
    other labels than its head's. The message says what fits instead."""
    from studio.operations import TASK_FORMATS

    task = task_of(v)
    if ds.format not in TASK_FORMATS[task]:
        wanted = " or ".join(TASK_FORMATS[task])
        raise SpecError(f"dataset {ds.id} is {ds.format} data, but version {v.id} is a {task} model, which is "
                        f"evaluated on {wanted} data; pick a data set of that format.")
    if task == "seq_cls":
        theirs, ours = sorted(v.config.get("labels") or []), sorted((ds.stats or {}).get("labels") or {})
        if theirs != ours:
            raise SpecError(f"version {v.id} classifies {', '.join(theirs)} but dataset {ds.id} has the labels "
                            f"{', '.join(ours)}; evaluate it on data with exactly its labels.")


def _fits_here(db, version: ModelVersion) -> bool:
    """Whether this machine's free RAM holds the version for an evaluation (the base in float32 plus its
    lineage, as a merged export would load it): the condition for running it beside a training job."""
    from pathlib import Path

    from models_db import BaseModel
    from studio import exports

    base = db.get(BaseModel, version.base_model_id)
    if base is None or not Path(base.path, "config.json").exists():
        return False
    return exports.estimate(exports.get_format("merged"), Path(base.path), exports.lineage_dirs(version)).fits


def submit_evaluate(version_id: int, dataset_id: int) -> tuple[Job, bool]:
    """Check the pair and queue an ``evaluate`` job; one already queued or running for it is reused.
    Returns (job, created)."""
    from studio import operations, routing

    config = {"version_id": int(version_id), "dataset_id": int(dataset_id)}
    with session_scope() as db:
        v = db.get(ModelVersion, config["version_id"])
        if v is None:
            raise SpecError(f"version {version_id} does not exist (studio versions list)")
        ds = db.get(Dataset, config["dataset_id"])
        if ds is None:
            raise SpecError(f"dataset {dataset_id} does not exist (studio dataset list)")
        check_pair(v, ds)
        for old in db.scalars(select(Job).where(Job.kind == "evaluate", Job.state.in_((JobState.queued, JobState.running)))):
            if old.config == config:
                return old, False
        queue, where = routing.side_queue(db, fits_beside=_fits_here(db, v))
        job, _ = jobq.create_job(db, kind="evaluate", config=config, base_model_id=v.base_model_id,
                                 dataset_id=ds.id, queue=queue, message=where or None)
    operations.send("evaluate", job.id, job.queue)
    return job, True


# --- rows -------------------------------------------------------------------------------------------------

def record(db: Session, version_id: int, job_id: int | None, evaluation: dict) -> Evaluation:
    """Write (or replace) the evaluation of a version on a data set: ``evaluation`` holds dataset_id,
    split, rows and metrics, as worker/evaluation_job.py returns them."""
    row = db.scalar(select(Evaluation).where(Evaluation.version_id == version_id,
                                             Evaluation.dataset_id == evaluation["dataset_id"]))
    if row is None:
        row = Evaluation(version_id=version_id, dataset_id=evaluation["dataset_id"])
        db.add(row)
    row.job_id, row.split, row.rows = job_id, evaluation["split"], int(evaluation["rows"])
    row.metrics = dict(evaluation["metrics"])
    db.flush()
    return row


def record_results(db: Session, job_id: int, version_id: int | None, result: dict) -> None:
    """Store the evaluations a finished job returned (``result["evaluations"]``), in the transaction that
    records its success: each names its version, or is of the version the job just registered."""
    for ev in result.get("evaluations") or []:
        target = ev.get("version_id") or version_id
        if target is not None:
            record(db, target, job_id, ev)


def follow_up(kind: str, version_id: int | None, dataset_id: int | None, result: dict) -> int | None:
    """After a training job succeeded: its version is evaluated on its own data set. When the recipe's
    final evaluation already ran on that data set's eval split, its figures were recorded; otherwise an
    ``evaluate`` job is queued here. Returns that job's id (None when none was needed)."""
    if kind != "train" or version_id is None or dataset_id is None:
        return None
    if any(ev.get("dataset_id") == dataset_id for ev in result.get("evaluations") or []):
        return None
    try:
        job, _ = submit_evaluate(version_id, dataset_id)
    except SpecError as e:  # e.g. the data set was deleted meanwhile: the training itself succeeded
        log.warning("version %s: no evaluation on dataset %s: %s", version_id, dataset_id, e)
        return None
    except Exception:  # the job has succeeded; a missing evaluation can be asked for later
        log.exception("version %s: could not queue its evaluation on dataset %s", version_id, dataset_id)
        return None
    return job.id


# --- tables ---------------------------------------------------------------------------------------------

def evaluation_json(e: Evaluation) -> dict:
    return {"version_id": e.version_id, "dataset_id": e.dataset_id, "job_id": e.job_id, "split": e.split,
            "rows": e.rows, "metrics": e.metrics, "created_at": e.created_at.isoformat() if e.created_at else None}


def of_versions(db: Session, version_ids: list[int]) -> list[Evaluation]:
    return list(db.scalars(select(Evaluation).where(Evaluation.version_id.in_(version_ids))
                           .order_by(Evaluation.dataset_id, Evaluation.version_id)))


def table(db: Session, version_ids: list[int]) -> list[dict]:
    """The version x data set table of the given versions: one entry per data set any of them was
    evaluated on, with one cell per version (in the order given; None where it was not evaluated there).

    ``[{"dataset_id", "dataset", "cells": [{"split", "rows", "metrics", "job_id"} | None, ...]}]``"""
    by_dataset: dict[int, dict[int, Evaluation]] = {}
    for e in of_versions(db, version_ids):
        by_dataset.setdefault(e.dataset_id, {})[e.version_id] = e
    out = []
    for dataset_id, cells in sorted(by_dataset.items()):
        ds = db.get(Dataset, dataset_id)
        out.append({"dataset_id": dataset_id, "dataset": f"#{dataset_id} {ds.name}" if ds else f"#{dataset_id}",
                    "cells": [None if vid not in cells else
                              {"split": cells[vid].split, "rows": cells[vid].rows, "metrics": cells[vid].metrics,
                               "job_id": cells[vid].job_id} for vid in version_ids]})
    return out


def measures(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The measures present in a table's cells, in display order (both tasks' when they are mixed)."""
    present = {k for r in rows for c in r["cells"] if c for k in c["metrics"]}
    seen, out = set(), []
    for task_measures in MEASURES.values():
        for key, label, better in task_measures:
            if key in present and key not in seen:
                seen.add(key)
                out.append((key, label, better))
    return out


def markdown(rows: list[dict], headers: list[str]) -> str:
    """The table as Markdown: a row per data set x measure, a column per version ("—": not evaluated)."""
    if not rows:
        return "_Not evaluated on any data set yet._"
    lines = ["| data set | measure | " + " | ".join(headers) + " |", "|---|---|" + "---|" * len(headers)]
    for r in rows:
        split = {c["split"] for c in r["cells"] if c}
        where = f"{r['dataset']}" + (" (training rows: no eval split)" if split == {"train"} else "")
        for key, label, better in measures([r]):
            vals = ["—" if not c or c["metrics"].get(key) is None else f"{c['metrics'][key]:.4f}" for c in r["cells"]]
            arrow = "↓" if better == "lower" else "↑"
            lines.append(f"| {where} | {label} {arrow} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
