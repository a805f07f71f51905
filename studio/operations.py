"""What the CLI and the UI both do: register data sets, submit jobs, describe them. No torch here."""
from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

from models_db import Dataset, Job, JobState, ModelVersion, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from models_db.access import hidden_reason
from models_db.schema import utcnow
from studio import celery_app, methods, objectives, routing, store
from studio.advisor.jobcost import estimate_vs_measured
from studio.datasets import IntakeReport, versions
from studio.datasets.split import Split
from studio.jobspec import SpecError, TrainSpec, check_against_model, continue_from, lineage_note
from studio.settings import get_settings

log = logging.getLogger("studio")

def add_dataset(src: Path, *, original_name: str | None = None, name: str | None = None, format: str = "auto",
                mapping: dict | None = None, drop_bad_rows: bool = False, split: Split | None = None,
                model: str | int | None = None, max_seq_length: int | None = None) -> tuple[Dataset, IntakeReport, bool]:
    """Validate and register an upload as an immutable dataset version (see studio.datasets.versions).

    Bad rows are never dropped silently: without ``drop_bad_rows`` any bad row refuses the whole
    file (nothing is registered) and the error lists the problems. ``split`` stores a train/eval
    split with the version; ``model`` + ``max_seq_length`` make over-long rows bad rows.
    Returns (dataset, report, reused)."""
    return versions.register(Path(src), original_name=original_name, name=name, format=format, mapping=mapping,
                             drop_bad_rows=drop_bad_rows, split=split, model=model, max_seq_length=max_seq_length)


TASK_FORMATS = {"causal_lm": ("instruction", "chat", "text"), "seq_cls": ("classification",)}


def objective_for(ds: Dataset, spec: TrainSpec):
    """The objective a job trains (studio.objectives): the one asked for (``--objective``, or the older
    ``--task``), which must take the data set's format and stats, or (neither) the one its format implies, so a
    classification data set trains a classifier and a preference one DPO from the CLI and the UI alike."""
    try:
        name = objectives.resolve(spec.objective, None if spec.objective else spec.task)
        objective = objectives.get(name) if name else objectives.default_for(ds.format)
        if objective is None:
            raise SpecError(f"dataset {ds.id} is {ds.format} data, which no objective trains on yet; objectives: "
                            f"{', '.join(objectives.names())}.")
        objectives.check_data(objective, ds.id, ds.format, ds.stats, ds.rows)
    except objectives.ObjectiveError as e:
        raise SpecError(str(e)) from None
    return objective


def _check_parent_task(parent: ModelVersion, task: str, ds: Dataset) -> None:
    """A version is continued on the same task, and a classifier on the same labels (its head's size)."""
    parent_task = (parent.config or {}).get("task") or "causal_lm"
    if parent_task != task:
        raise SpecError(f"version {parent.id} was trained for {parent_task} and cannot be continued as {task}; "
                        f"use a {parent_task} data set, or train from the base model.")
    theirs, ours = sorted(parent.config.get("labels") or []), sorted((ds.stats or {}).get("labels") or {})
    if task == "seq_cls" and theirs != ours:
        raise SpecError(f"version {parent.id} classifies {', '.join(theirs)} but dataset {ds.id} has the labels "
                        f"{', '.join(ours)}; continue it on data with the same labels, or train from the base model.")


def tracker_problems() -> list[str]:
    """What is wrong with the MLflow / W&B settings as seen from here (studio/trackers.py), one line each: said when
    a job is submitted; the job is queued anyway and trains without a tracker its worker cannot use."""
    from studio import trackers

    return trackers.problems(get_settings())


def submit_train(spec: TrainSpec, *, idempotency_key: str | None = None, after: int | None = None,
                 preflight: dict | None = None) -> tuple[Job, bool]:
    """Check the references, write a queued job and enqueue it. Returns (job, created).

    ``after``: the job starts only once that job has finished (succeeded, failed or cancelled). ``preflight``
    (steps, budget_gb...): queue a measured pre-flight of this configuration instead (studio/preflight.py)."""
    s = get_settings()
    with session_scope() as db:
        if after is not None and db.get(Job, after) is None:
            raise SpecError(f"job {after} does not exist (studio jobs list): --after takes the id of a job to wait for")
        base = q.model_by_ref(db, spec.model_id)
        if base is None:
            raise SpecError(f"model {spec.model_id} does not exist (studio models list)")
        ds = db.get(Dataset, spec.dataset_id)
        if ds is None:
            raise SpecError(f"dataset {spec.dataset_id} does not exist (studio dataset list)")
        objective = objective_for(ds, spec)
        try:  # its own settings (defaults when the data set chose it), checked with the method
            aims = objectives.parse_params(objective.name, spec.objective_params, methods.get(spec.method))
            objectives.check_method(objective, methods.get(spec.method))
            objectives.check_job(objective, aims, spec.training, db)  # its batch, the rows its settings name
        except (objectives.ObjectiveError, methods.MethodError) as e:
            raise SpecError(str(e)) from None
        spec = replace(spec, objective=objective.name, objective_params=asdict(aims), task=objective.task,
                       packing=spec.packing and objective.packable)  # packing: causal-LM SFT only
        if spec.parent_version_id is not None:
            parent = db.get(ModelVersion, spec.parent_version_id)
            if parent is None:
                raise SpecError(f"version {spec.parent_version_id} does not exist (studio versions list)")
            if parent.base_model_id != spec.model_id:
                raise SpecError(f"version {parent.id} was trained from another base model (id {parent.base_model_id})")
            _check_parent_task(parent, spec.task, ds)
            spec = continue_from(spec, parent.method, parent.config)
        try:  # a generating objective needs a base that can generate (after the parent: its message says more)
            objectives.check_model(objective, base.name, _model_config(base), methods.get(spec.method))
        except objectives.ObjectiveError as e:
            raise SpecError(str(e)) from None
        check_against_model(spec, base.path, base.config)
        spec = replace(spec, estimate=train_estimate(db, base, spec))
        placed = routing.place(spec.to_json(), routing.alive_fleet(db))  # the queue of its memory tier
        if spec.parent_version_id is not None:  # what continuing means for the lineage and the merge
            spec = replace(spec, lineage_note=lineage_note(parent.id, parent.method, spec.method))
        kind, config = ("train", spec.to_json()) if preflight is None else \
            ("preflight", {**spec.to_json(), "preflight": preflight})
        job, created = jobq.create_job(db, kind=kind, config=config, idempotency_key=idempotency_key,
                                       max_attempts=s.max_attempts, base_model_id=spec.model_id,
                                       dataset_id=spec.dataset_id, parent_version_id=spec.parent_version_id,
                                       after_job_id=after, queue=placed.queue, message=placed.waiting)
    if created:
        send(job.kind, job.id, job.queue)
    return job, created


def _model_config(base) -> dict | None:
    """The base's config.json, or the copy stored at import where the model store is on the workers only."""
    from studio.methods import model_files

    try:
        return model_files.read_config(base.path)
    except (OSError, ValueError):
        return base.config


def train_estimate(db, base, spec: TrainSpec) -> dict:
    """The advisor's trainable-parameter count and peak-memory estimate for the job, on the workers' GPUs
    (kept in the job's config to set beside the measured peak); a config it cannot read gives {"error"}."""
    from studio.advisor import jobcost, sources

    try:
        return jobcost.job_estimate(sources.model_config(base), spec.to_json(), sources.worker_gpus(db))
    except (ValueError, KeyError) as e:
        return {"error": f"no estimate: {e}"}


def send(kind: str, job_id: int, queue: str | None = None) -> bool:
    """Send a job's task to its queue (``Job.queue``; None: the default one). With the broker down the job
    stays queued in the database, which is the authority, and an idle worker's sweep sends it once the
    broker is back (docs/reliability.md)."""
    from kombu.exceptions import OperationalError as BrokerUnreachable


    try:
        celery_app.enqueue(kind, job_id, queue)
        return True
    except (BrokerUnreachable, OSError) as e:
        log.warning("job %s is queued but its task could not be sent (%s); a worker will send it later", job_id, e)
        return False


def submit_export(version_id: int | None, *, merged: bool | None = None, format: str | None = None,
                  base_model_id: int | None = None) -> Job:
    """Queue a background export (zip) of a version in ``format`` (studio.exports.FORMATS; ``merged``: the
    older flag for merged/adapter), or, with ``version_id`` None, of the base model ``base_model_id`` as it is
    (studio.exports.base_formats); one queued, running or already built is reused. Refused here, before anything
    is queued, when the format does not fit (a method that cannot merge, a base with nothing to convert) or the
    merge needs more memory than the workers have."""
    from studio import exports

    with session_scope() as db:
        if version_id is None:
            fmt = exports.check_base_export(db, int(base_model_id), format or "gguf-f16")
            config = {"base_model_id": int(base_model_id), "format": fmt.name, "merged": fmt.merged}
        else:
            if db.get(ModelVersion, version_id) is None:  # missing, or someone else's (models_db.access)
                raise SpecError(hidden_reason(db, ModelVersion, version_id)
                                or f"version {version_id} does not exist (studio versions list)")
            fmt = exports.check_export(db, version_id, format or ("merged" if merged else "adapter"))
            config = {"version_id": version_id, "format": fmt.name, "merged": fmt.merged}
        for old in q.list_jobs(db, kind="export", limit=100):
            if old.config == config and (old.state in (JobState.queued, JobState.running) or
                                         (old.state == JobState.succeeded and _zip_exists(old))):
                return old
        # embedded: beside a long training job on the idle interactive worker when the machine has the memory
        queue, where = routing.side_queue(db, fits_beside=True)  # the check above measured this machine's free RAM
        job, _ = jobq.create_job(db, kind="export", config=config, queue=queue, message=where or None,
                                 base_model_id=config.get("base_model_id"))
    send("export", job.id, job.queue)  # a broker outage leaves it queued; the sweep sends it later
    return job


def export_job_for(version_id: int, format: str) -> int | None:
    """The job that built this version's zip in ``format`` (the zip still there) or is building it, if any:
    what the Versions tab shows when the version is opened again."""
    with session_scope() as db:
        for old in q.list_jobs(db, kind="export", limit=100):
            config = old.config or {}
            if (config.get("version_id"), config.get("format")) == (version_id, format) and (
                    old.state in (JobState.queued, JobState.running) or
                    (old.state == JobState.succeeded and _zip_exists(old))):
                return old.id
    return None


def waiting_for(job_id: int) -> str:
    """Why a queued job has not started, in words: the jobs ahead of it on its queue (the running one with
    its ETA from its pace so far), or that no worker takes its queue. '' once it runs or ended."""
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is None or job.state != JobState.queued:
            return ""
        if job.message:  # routing already said (no worker big enough, waiting for a predecessor, ...)
            return job.message
        same = [j for j in q.active_jobs(db) if j.queue == job.queue and j.id != job.id]
        running = [j for j in same if j.state == JobState.running]
        ahead = [j for j in same if j.state == JobState.queued and j.id < job.id]
        if not running and not ahead:
            return "waiting for a worker to take it"
        parts = [f"job #{j.id} ({_what(j)}, {_eta_text(j)})" for j in running]
        if ahead:
            parts.append(f"{len(ahead)} queued job{'s' if len(ahead) > 1 else ''} before it")
        return "waiting behind " + " and ".join(parts)


def _what(job: Job) -> str:
    config = job.config or {}
    return f"training {config['method']}" if job.kind == "train" and config.get("method") else job.kind


def _eta_text(job: Job) -> str:
    """A running job's time left from its pace so far (steps done in the time since it started)."""
    if not (job.started_at and job.step and job.max_steps):
        return "just started"
    elapsed = (utcnow() - job.started_at).total_seconds()
    left = elapsed / job.step * max(job.max_steps - job.step, 0)
    return f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"


def _zip_exists(job: Job) -> bool:
    z = (job.result or {}).get("zip")
    return bool(z) and store.exists(z)  # here, or in the shared store (studio/store.py)


def cancel_job(job_id: int) -> str:
    with session_scope() as db:
        if db.get(Job, job_id) is None:  # missing, or someone else's (models_db.access)
            raise SpecError(hidden_reason(db, Job, job_id) or f"job {job_id} does not exist (studio jobs list)")
        return jobq.request_cancel(db, job_id)


def job_json(job: Job, position: int | None = None) -> dict:
    """The job as the CLI's --json shows it; ``position`` is its place in the queue (1 = next)."""
    return {
        "id": job.id, "kind": job.kind, "state": job.state, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "step": job.step, "max_steps": job.max_steps, "message": job.message, "error": job.error,
        "version_id": (job.result or {}).get("version_id"), "result": job.result, "config": job.config,
        "worker": job.worker_id, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "position": position, "after": job.after_job_id, "queue": job.queue,
        "resume_step": job.resume_step, "attempts": job.history or [],
        "memory": estimate_vs_measured(job.config, job.result) if job.kind == "train" else None,
    }


def version_json(v: ModelVersion, lineage: dict | None = None) -> dict:
    """The version as the CLI's --json shows it; ``lineage`` (studio.versions.lineage) adds
    "ancestors" (nearest first) and "descendants" (breadth first)."""
    out = {"id": v.id, "name": v.name, "method": v.method, "base_model_id": v.base_model_id, "parent_id": v.parent_id,
           "dataset_id": v.dataset_id, "job_id": v.job_id, "tags": v.tags, "notes": v.notes, "metrics": v.metrics,
           "config": v.config, "artifacts": v.artifacts, "created_at": _iso(v.created_at)}
    return {**out, **(lineage or {})}


def _iso(t) -> str | None:
    return t.isoformat() if t else None
