"""Evaluations of model versions (and base models) on data set versions, without torch: the checks before an
``evaluate`` job is queued, the rows it leaves (one per model x data set, upserted), the follow-up evaluations a
new version gets (its own data set and the pinned benchmarks, for it, its parent and its base: studio/evidence.py
compares them), and the tables the Versions tab and ``studio versions compare`` show. The numbers themselves come
from a worker (worker/evaluation_job.py).

What is measured: eval loss and perplexity for a causal LM, accuracy, macro F1 and eval loss for a
classifier, and on a benchmark (multiple_choice, qa: studio/benchmarks.py) its lm-evaluation-harness figures
with their standard errors beside the loss; on the data set's stored eval split, or on its training rows when
it has none (``split`` says which)."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_db import BaseModel, Dataset, Evaluation, Job, JobState, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import benchmarks
from studio.jobkinds import JOB_KINDS
from studio.jobspec import SpecError

log = logging.getLogger("studio")

# what each task measures, in display order: (key, label, "lower"|"higher" is better)
MEASURES = {
    "causal_lm": (("eval_loss", "eval loss", "lower"), ("perplexity", "perplexity", "lower")),
    "seq_cls": (("accuracy", "accuracy", "higher"), ("f1", "macro F1", "higher"), ("eval_loss", "eval loss", "lower")),
    **{fmt: kind.measures for fmt, kind in benchmarks.KINDS.items()},  # benchmarks, beside their loss
    # preference pairs: how often the model scores the chosen answer above the rejected one (a policy by the
    # log-likelihood of each answer, a reward model by its score), and by how much on average
    "preference": (("pair_accuracy", "pair accuracy", "higher"), ("pair_margin", "mean margin", "higher")),
}


def task_of(v: ModelVersion) -> str:
    """The task a version was trained for (versions from before tasks existed are causal LMs)."""
    return (v.config or {}).get("task") or "causal_lm"


def evaluated_formats(task: str) -> tuple[str, ...]:
    """The data set formats a model of ``task`` is evaluated on: what it trains on, for a causal LM the
    benchmark formats too, and preference pairs for both (a policy's pair accuracy by likelihood; a classifier
    only when it is a reward model: :func:`check_pair`)."""
    from studio.operations import TASK_FORMATS

    return TASK_FORMATS[task] + (benchmarks.FORMATS if task == "causal_lm" else ()) + ("preference",)


def is_reward_model(v: ModelVersion) -> bool:
    """A one-output scorer trained on preference pairs (objective ``reward``)."""
    return (v.config or {}).get("objective") == "reward"


def check_pair(v: ModelVersion, ds: Dataset) -> None:
    """Refuse a data set the version cannot be measured on: a format of another task, or (a classifier)
    other labels than its head's. The message says what fits instead."""
    task = task_of(v)
    if ds.format not in evaluated_formats(task):
        wanted = " or ".join(evaluated_formats(task))
        raise SpecError(f"dataset {ds.id} is {ds.format} data, but version {v.id} is a {task} model, which is "
                        f"evaluated on {wanted} data; pick a data set of that format.")
    if task == "seq_cls" and ds.format == "preference" and not is_reward_model(v):
        raise SpecError(f"version {v.id} is a classifier of {', '.join(v.config.get('labels') or [])}, not a reward "
                        f"model: it cannot score dataset {ds.id}'s preference pairs; evaluate it on classification "
                        "data with its labels.")
    if task == "seq_cls" and ds.format != "preference":
        theirs, ours = sorted(v.config.get("labels") or []), sorted((ds.stats or {}).get("labels") or {})
        if theirs != ours:
            raise SpecError(f"version {v.id} classifies {', '.join(theirs)} but dataset {ds.id} has the labels "
                            f"{', '.join(ours)}; evaluate it on data with exactly its labels.")


def is_causal_lm(base: BaseModel) -> bool:
    """Whether a base model generates text (its architecture a ...ForCausalLM): only those are evaluated as they
    are; an encoder has no head until a classifier version gives it one."""
    return (base.architecture or "").endswith("ForCausalLM")


def check_base_pair(base: BaseModel, ds: Dataset) -> None:
    """Refuse what a base model cannot be measured on: an encoder (no head yet), or data no causal LM is
    evaluated on."""
    if not is_causal_lm(base):
        raise SpecError(f"base model {base.id} ({base.architecture}) is not a causal LM: it has no head to evaluate "
                        "until a classifier is trained on it; evaluate that version instead.")
    if ds.format not in evaluated_formats("causal_lm"):
        raise SpecError(f"dataset {ds.id} is {ds.format} data; a base model is evaluated on "
                        f"{' or '.join(evaluated_formats('causal_lm'))} data.")


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


def submit_evaluate(version_id: int | None, dataset_id: int, *, base_model_id: int | None = None) -> tuple[Job, bool]:
    """Check the pair and queue an ``evaluate`` job of a version (or, with ``version_id`` None, of the base model
    ``base_model_id`` as it is); one already queued or running for it is reused. Returns (job, created)."""
    from studio import operations, routing

    target = {"version_id": int(version_id)} if version_id is not None else {"base_model_id": int(base_model_id)}
    config = {**target, "dataset_id": int(dataset_id)}
    with session_scope() as db:
        ds = db.get(Dataset, config["dataset_id"])
        if version_id is not None:
            v = db.get(ModelVersion, config["version_id"])
            if v is None:
                raise SpecError(f"version {version_id} does not exist (studio versions list)")
            base_id, fits = v.base_model_id, (lambda: _fits_here(db, v))
        else:
            base = db.get(BaseModel, config["base_model_id"])
            if base is None:
                raise SpecError(f"base model {base_model_id} does not exist (studio models list)")
            base_id, fits = base.id, (lambda: _base_fits_here(base))
        if ds is None:
            raise SpecError(f"dataset {dataset_id} does not exist (studio dataset list)")
        if version_id is not None:
            check_pair(v, ds)
        else:
            check_base_pair(base, ds)
        for old in db.scalars(select(Job).where(Job.kind == "evaluate", Job.state.in_((JobState.queued, JobState.running)))):
            if old.config == config:
                return old, False
        queue, where = routing.side_queue(db, fits_beside=fits())
        job, _ = jobq.create_job(db, kind="evaluate", config=config, base_model_id=base_id,
                                 dataset_id=ds.id, queue=queue, message=where or None)
    operations.send("evaluate", job.id, job.queue)
    return job, True


def _base_fits_here(base: BaseModel) -> bool:
    from pathlib import Path

    from studio import exports

    if not Path(base.path, "config.json").exists():
        return False
    return exports.estimate(exports.get_format("merged"), Path(base.path), []).fits


# --- rows -------------------------------------------------------------------------------------------------

def find(db: Session, dataset_id: int, *, version_id: int | None = None,
         base_model_id: int | None = None) -> Evaluation | None:
    """The evaluation of a version (or, ``version_id`` None, of a base model as it is) on a data set."""
    if version_id is not None:
        where = (Evaluation.version_id == version_id,)
    else:
        where = (Evaluation.version_id.is_(None), Evaluation.base_model_id == base_model_id)
    return db.scalar(select(Evaluation).where(*where, Evaluation.dataset_id == dataset_id))


def record(db: Session, version_id: int | None, job_id: int | None, evaluation: dict,
           examples: list[dict] | None = None) -> Evaluation:
    """Write (or replace) the evaluation of a version (or, ``version_id`` None, of the base model
    ``evaluation["base_model_id"]``) on a data set: ``evaluation`` holds dataset_id, split, rows and metrics, as
    worker/evaluation_job.py returns them; ``examples`` a benchmark's per-question results."""
    base_id = None if version_id is not None else int(evaluation["base_model_id"])
    row = find(db, evaluation["dataset_id"], version_id=version_id, base_model_id=base_id)
    if row is None:
        row = Evaluation(version_id=version_id, base_model_id=base_id, dataset_id=evaluation["dataset_id"])
        db.add(row)
    row.job_id, row.split, row.rows = job_id, evaluation["split"], int(evaluation["rows"])
    row.metrics = dict(evaluation["metrics"])
    row.examples = list(examples or [])
    db.flush()
    return row


def split_examples(result: dict) -> list[list[dict]]:
    """Take the per-question results out of a finished job's evaluations (they go to the Evaluation rows, not
    into the job's result): one list per entry of ``result["evaluations"]``, in order."""
    return [ev.pop("examples", None) or [] for ev in result.get("evaluations") or []]


def record_results(db: Session, job_id: int, version_id: int | None, result: dict,
                   examples: list[list[dict]] | None = None) -> None:
    """Store the evaluations a finished job returned (``result["evaluations"]``), in the transaction that
    records its success: each names its version or base model, or is of the version the job just registered."""
    evals = result.get("evaluations") or []
    for ev, per_question in zip(evals, examples or [[]] * len(evals)):
        target = ev.get("version_id") or (None if ev.get("base_model_id") else version_id)
        if target is not None or ev.get("base_model_id"):
            record(db, target, job_id, ev, per_question)


def follow_up(kind: str, version_id: int | None, dataset_id: int | None, result: dict) -> list[int]:
    """After a training (or combining) job succeeded, its version carries its comparison: it is evaluated on its
    own data set and on the benchmarks pinned for its base, and so are its parent and its base where they have not
    been yet (studio/evidence.py compares them). When the recipe's final evaluation already ran on the data set's
    eval split, its figures were recorded; every other missing pair is an ``evaluate`` job queued here. Returns the
    queued jobs' ids."""
    # the kinds whose success is a version (a combined one has no data set of its own: the pins only)
    if not (kind in JOB_KINDS and JOB_KINDS[kind].makes_version) or version_id is None:
        return []
    try:
        pairs = missing_pairs(version_id, dataset_id)
    except Exception:  # the job has succeeded; missing evaluations can be asked for later
        log.exception("version %s: could not list the evaluations it needs", version_id)
        return []
    queued = []
    for target, ds in pairs:
        try:
            job, _ = submit_evaluate(target.get("version_id"), ds, base_model_id=target.get("base_model_id"))
            queued.append(job.id)
        except SpecError as e:  # e.g. the data set was deleted meanwhile, or an encoder base
            log.warning("%s: no evaluation on dataset %s: %s", target, ds, e)
        except Exception:
            log.exception("%s: could not queue its evaluation on dataset %s", target, ds)
    return queued


def missing_pairs(version_id: int, dataset_id: int | None) -> list[tuple[dict, int]]:
    """(model, data set) pairs a new version's comparison needs and the database lacks: the version, its parent
    and its base (a causal LM; a classifier's base has no head) on the version's data set and the pinned
    benchmarks."""
    with session_scope() as db:
        v = db.get(ModelVersion, version_id)
        pinned = {d.id for d in benchmarks.pins(db, v.base_model_id)}
        datasets = list(dict.fromkeys(([dataset_id] if dataset_id else []) + sorted(pinned)))
        targets = [{"version_id": v.id}] + ([{"version_id": v.parent_id}] if v.parent_id else [])
        base = db.get(BaseModel, v.base_model_id)
        if task_of(v) == "causal_lm" and base is not None and is_causal_lm(base):
            targets.append({"base_model_id": base.id})
        out = []
        for target in targets:
            task = task_of(db.get(ModelVersion, target["version_id"])) if "version_id" in target else "causal_lm"
            for ds_id in datasets:
                ds = db.get(Dataset, ds_id)
                if ds is None or ds.format not in evaluated_formats(task):
                    continue
                if ds.format == "preference" and ds_id not in pinned:
                    continue  # a DPO version measured its own held-out pairs as it trained; pairs pinned: all three
                if "version_id" in target and ds.format == "preference" and task == "seq_cls" and \
                        not is_reward_model(db.get(ModelVersion, target["version_id"])):
                    continue
                if find(db, ds_id, version_id=target.get("version_id"),
                        base_model_id=target.get("base_model_id")) is None:
                    out.append((target, ds_id))
        return out


# --- tables ---------------------------------------------------------------------------------------------

def evaluation_json(e: Evaluation, examples: bool = False) -> dict:
    """An evaluation as the CLI's --json shows it; a benchmark's per-question results counted (and listed with
    ``examples``)."""
    out = {"version_id": e.version_id, "base_model_id": e.base_model_id, "dataset_id": e.dataset_id,
           "job_id": e.job_id, "split": e.split, "rows": e.rows, "metrics": e.metrics,
           "created_at": e.created_at.isoformat() if e.created_at else None}
    if e.examples:
        out["failed"] = sum(1 for x in e.examples if not x.get("correct"))
    if examples:
        out["examples"] = e.examples or []
    return out


def of_versions(db: Session, version_ids: list[int]) -> list[Evaluation]:
    return list(db.scalars(select(Evaluation).where(Evaluation.version_id.in_(version_ids))
                           .order_by(Evaluation.dataset_id, Evaluation.version_id)))


def table(db: Session, version_ids: list[int], base_model_id: int | None = None) -> list[dict]:
    """The version x data set table of the given versions: one entry per data set any of them was
    evaluated on, with one cell per version (in the order given; None where it was not evaluated there), and
    with ``base_model_id`` a last cell for that base model as it is ("better than the base" in one table).

    ``[{"dataset_id", "dataset", "cells": [{"split", "rows", "metrics", "job_id"} | None, ...]}]``"""
    by_dataset: dict[int, dict[object, Evaluation]] = {}
    for e in of_versions(db, version_ids):
        by_dataset.setdefault(e.dataset_id, {})[e.version_id] = e
    columns: list[object] = list(version_ids)
    if base_model_id is not None:
        columns.append("base")
        for e in db.scalars(select(Evaluation).where(Evaluation.version_id.is_(None),
                                                     Evaluation.base_model_id == base_model_id)):
            if e.dataset_id in by_dataset:
                by_dataset[e.dataset_id]["base"] = e
    out = []
    for dataset_id, cells in sorted(by_dataset.items()):
        ds = db.get(Dataset, dataset_id)
        out.append({"dataset_id": dataset_id, "dataset": f"#{dataset_id} {ds.name}" if ds else f"#{dataset_id}",
                    "cells": [None if col not in cells else
                              {"split": cells[col].split, "rows": cells[col].rows, "metrics": cells[col].metrics,
                               "job_id": cells[col].job_id} for col in columns]})
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


def cell_text(cell: dict | None, key: str) -> str:
    """One figure as shown: "0.8333 ± 0.0527" with its standard error where it has one, "—" where none."""
    metrics = (cell or {}).get("metrics") or {}
    if metrics.get(key) is None:
        return "—"
    stderr = metrics.get(benchmarks.stderr_key(key))
    return f"{metrics[key]:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, (int, float)) else "")


def markdown(rows: list[dict], headers: list[str]) -> str:
    """The table as Markdown: a row per data set x measure, a column per version ("—": not evaluated)."""
    if not rows:
        return "_Not evaluated on any data set yet._"
    lines = ["| data set | measure | " + " | ".join(headers) + " |", "|---|---|" + "---|" * len(headers)]
    for r in rows:
        split = {c["split"] for c in r["cells"] if c}
        where = f"{r['dataset']}" + (" (training rows: no eval split)" if split == {"train"} else "")
        for key, label, better in measures([r]):
            vals = [cell_text(c, key) for c in r["cells"]]
            arrow = "↓" if better == "lower" else "↑"
            lines.append(f"| {where} | {label} {arrow} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
