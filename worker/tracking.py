"""A training job as a run in the experiment trackers people already use: MLflow when
``STUDIO_MLFLOW_TRACKING_URI`` is set, Weights & Biases when ``STUDIO_WANDB_PROJECT`` is (docs/tracking.md).

Who does what: the studio opens each run itself before training, named after the job and tagged with its data
set, method, objective and sweep; opening it is also the reachability check (studio/trackers.py first probes a
remote URI with a short timeout). The Trainer's own integrations (``report_to``: transformers' MLflowCallback and
WandbCallback) find that active run and log into it the parameters (TrainingArguments and the model config) and
every logging step's figures. When the job ends (worker/job_process.py) the studio logs the version's final
figures, tags the run with the version, which exists only once it is saved, and closes the run as finished or
failed. A retry reopens the same runs (their ids are noted in the attempt's history, which the job page links).

A tracker that cannot be reached, or that fails later, never fails the job: the job trains without it and says so
in its log, its message and on the job page. TensorBoard files are written regardless (worker/tboard.py)."""
from __future__ import annotations

import os
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from models_db import Job, JobState, session_scope
from models_db import jobs as jobq
from studio import objectives, trackers
from studio.jobkinds import JOB_KINDS
from studio.settings import get_settings
from worker import distributed

# remote MLflow: a server that dies mid-run costs a few seconds per call, not MLflow's default minutes of retries
# a job's outcome -> its MLflow run's end state (a pruned trial was stopped on purpose: KILLED, not FAILED)
MLFLOW_END = {JobState.succeeded.value: "FINISHED", JobState.failed.value: "FAILED", JobState.pruned.value: "KILLED"}
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


@dataclass
class Runs:
    """The trackers' runs this job process has open: the integrations that log into them, the links noted for
    the job page, and the library handles (MLflow's client and run id; W&B's run)."""

    job_id: int
    attempt: int
    report_to: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    mlflow_client: object = None
    mlflow_run_id: str | None = None
    wandb_run: object = None


_open: Runs | None = None  # one training job per process; tests run jobs one after another in theirs


def report_to(ctx, job) -> list[str]:
    """Open the job's runs (once per job process) and return the Trainer integrations that log into them:
    ``["mlflow", "wandb"]``, a part of it, or [] when no tracker is set or reachable (and on ranks other than 0)."""
    global _open
    if _open is not None and (_open.job_id, _open.attempt) == (ctx.job.id, ctx.claim.attempt):
        return list(_open.report_to)
    settings = get_settings()
    if not (settings.mlflow_tracking_uri or settings.wandb_project):
        return []
    kind = JOB_KINDS.get(ctx.job.kind)
    if not distributed.is_main() or kind is None or not kind.trains:  # a pre-flight's few steps are no run
        return []
    runs = Runs(ctx.job.id, ctx.claim.attempt)
    earlier = _earlier_notes(ctx.job)
    tags, params = run_tags(ctx.job, job), studio_params(job)
    if settings.mlflow_tracking_uri:
        _open_mlflow(ctx, runs, tags, params, earlier.get("mlflow") or {}, settings)
    if settings.wandb_project:
        _open_wandb(ctx, runs, tags, params, earlier.get("wandb") or {}, settings)
    _open = runs
    _note(ctx, runs.notes)
    return list(runs.report_to)


def run_tags(row: Job, job) -> dict[str, str]:
    """What a run is tagged with from the start: the job, its data set, method, objective, base and sweep."""
    spec = job.spec
    tags = {"studio.job_id": str(row.id), "dataset": job.dataset.name, "dataset_id": str(job.dataset.id),
            "method": spec.method, "objective": objectives.resolve(spec.objective, spec.task) or "",
            "base_model": job.base.name}
    sweep = (row.config or {}).get("sweep_id")
    if sweep is not None:
        tags.update(sweep=str(sweep), trial=str((row.config or {}).get("trial_number")))
    if spec.parent_version_id:
        tags["parent_version"] = str(spec.parent_version_id)
    return tags


def studio_params(job) -> dict:
    """The studio's own settings beside the Trainer's arguments (which its integration logs): the method's and
    the objective's parameters (``method.r``, ``objective.beta``...) and the data choices (``studio.*``)."""
    spec = job.spec
    out = {f"method.{k}": v for k, v in (spec.method_params or {}).items()}
    out.update({f"objective.{k}": v for k, v in (spec.objective_params or {}).items()})
    out.update({f"studio.{k}": getattr(spec, k) for k in ("max_seq_length", "eval_split", "packing",
                                                           "early_stopping_patience", "gpus")})
    return out


def finish(job_id: int, outcome: JobState | str, *, result: dict | None = None, version_id: int | None = None) -> None:
    """Close this job's runs: the version's final figures (``result["metrics"]``, as ``final/<name>``), the
    version and outcome tags, and the run's end state (``outcome``: the job's, succeeded, failed or pruned).
    Never raises: a tracker gone since the start is only reported."""
    global _open
    runs, _open = _open, None
    if runs is None or runs.job_id != job_id:
        return
    result = result or {}
    figures = {f"final/{k}": float(v) for k, v in (result.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tags = {"outcome": str(outcome), **({"version": str(version_id)} if version_id is not None else {})}
    if (result.get("version") or {}).get("name"):
        tags["version_name"] = result["version"]["name"]
    if runs.mlflow_run_id:
        _guarded("MLflow", _close_mlflow, runs, figures, tags, result.get("step") or 0, MLFLOW_END.get(outcome, "KILLED"))
    if runs.wandb_run is not None:
        _guarded("W&B", _close_wandb, runs, figures, tags, 1 if outcome == JobState.failed else 0)


# --- MLflow -----------------------------------------------------------------------------------------------

def _open_mlflow(ctx, runs: Runs, tags: dict, params: dict, earlier: dict, settings) -> None:
    uri = settings.mlflow_tracking_uri
    problem = trackers.mlflow_problem(uri, settings.tracker_timeout_seconds)
    if problem:
        return _skip(ctx, runs, "mlflow", f"MLflow: {problem}")
    if urlsplit(uri).scheme in ("http", "https"):
        for key, value in MLFLOW_HTTP.items():
            os.environ.setdefault(key, value)
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Param
    except ImportError:
        return _skip(ctx, runs, "mlflow", "MLflow: STUDIO_MLFLOW_TRACKING_URI is set but mlflow is not installed "
                                          "on this worker (pip install 'finetune-studio[mlflow]')")
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.mlflow_experiment)
        run_id = earlier.get("run_id") if earlier.get("uri") == uri else None
        if run_id is None:
            run_id = client.create_run(experiment_id, run_name=f"job-{ctx.job.id}", tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        mlflow.set_tracking_uri(uri)  # the fluent API MLflowCallback logs through, at the same store
        while mlflow.active_run() is not None:  # a run another job of this process left open
            mlflow.end_run()
        mlflow.start_run(run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - a tracker never fails the job
        return _skip(ctx, runs, "mlflow", f"MLflow at {uri} is unreachable or refused the run: {_first_line(exc)}")
    runs.mlflow_client, runs.mlflow_run_id = client, run_id
    runs.report_to.append("mlflow")
    url = trackers.mlflow_run_url(uri, settings.mlflow_ui_url, experiment_id, run_id)
    runs.notes["mlflow"] = {"run_id": run_id, "experiment_id": experiment_id, "uri": uri, "url": url}
    ctx.say(f"MLflow run {run_id} ({url or uri})")


def _close_mlflow(runs: Runs, figures: dict, tags: dict, step: int, status: str) -> None:
    import mlflow
    from mlflow.entities import Metric, RunTag

    client, run_id = runs.mlflow_client, runs.mlflow_run_id
    try:
        mlflow.flush_async_logging()  # the integration logs asynchronously; its points land before the run ends
    finally:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in figures.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            client.set_terminated(run_id, status)


# --- Weights & Biases -------------------------------------------------------------------------------------

def _open_wandb(ctx, runs: Runs, tags: dict, params: dict, earlier: dict, settings) -> None:
    problem = trackers.wandb_problem(settings.tracker_timeout_seconds)
    if problem:
        return _skip(ctx, runs, "wandb", f"W&B: {problem}")
    try:
        import wandb
    except ImportError:
        return _skip(ctx, runs, "wandb", "W&B: STUDIO_WANDB_PROJECT is set but wandb is not installed on this "
                                         "worker (pip install 'finetune-studio[wandb]')")
    run_id = earlier.get("id") or f"job{ctx.job.id}-{uuid.uuid4().hex[:8]}"  # a retry resumes the same run
    try:
        if wandb.run is not None:  # a run another job of this process left open
            wandb.finish()
        run = wandb.init(
            project=settings.wandb_project, entity=settings.wandb_entity, name=f"job-{ctx.job.id}", id=run_id,
            resume="allow", dir=str(ctx.dir), group=f"sweep-{tags['sweep']}" if "sweep" in tags else None, tags=[f"{k}:{v}"[:64] for k, v in tags.items()],
            config={"studio": {**tags, **params}},
            settings=wandb.Settings(init_timeout=max(30.0, settings.tracker_timeout_seconds), console="off",
                                    silent=True, x_disable_stats=True, disable_git=True, save_code=False,
                                    x_save_requirements=False))
    except Exception as exc:  # noqa: BLE001 - a tracker never fails the job
        return _skip(ctx, runs, "wandb", f"W&B project {settings.wandb_project} is unreachable or refused the run: "
                                         f"{_first_line(exc)}")
    runs.wandb_run = run
    runs.report_to.append("wandb")
    offline = run.settings.mode in ("offline", "dryrun")
    runs.notes["wandb"] = {"id": run.id, "project": settings.wandb_project,
                           "url": None if offline else run.url, "dir": str(Path(run.dir).parent) if offline else None}
    ctx.say(f"W&B run {run.id} ({runs.notes['wandb']['url'] or 'offline: ' + runs.notes['wandb']['dir']})")


def _close_wandb(runs: Runs, figures: dict, tags: dict, exit_code: int) -> None:
    import wandb

    run = runs.wandb_run
    try:
        run.summary.update(figures)
        run.tags = tuple(run.tags or ()) + tuple(f"{k}:{v}"[:64] for k, v in tags.items())
    finally:
        run.finish(exit_code=exit_code)
        wandb.teardown()  # its service process ends with the job, not with the worker


def read_offline_run(run_dir: Path) -> dict:
    """A W&B offline run's records (``<dir>/run-<id>.wandb``, the LevelDB-style log ``wandb sync`` uploads):
    ``{"history": [row, ...], "summary": {...}, "tags": [...], "name": ...}``, values decoded from JSON.
    For tests and scripts: wandb itself has no reader for them."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    out: dict = {"history": [], "summary": {}, "tags": [], "name": None}
    pos, block, pending = 7, 32768, b""  # a 7-byte file header; 32 KiB blocks of chunks (CRC, length, type)
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # 1: a whole record, 4: a record's last chunk
            continue
        record, pending = pb.Record.FromString(pending), b""
        which = record.WhichOneof("record_type")
        if which == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif which == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
        elif which == "run":
            out["tags"], out["name"] = list(record.run.tags), record.run.display_name
    return out


# --- shared -----------------------------------------------------------------------------------------------

def _skip(ctx, runs: Runs, tracker: str, why: str) -> None:
    runs.notes[tracker] = {"error": why}
    ctx.say(f"{why}; training without it")


def _guarded(name: str, close, *args) -> None:
    try:
        close(*args)
    except Exception as exc:  # noqa: BLE001 - the job's outcome is already decided; a tracker never changes it
        print(f"{name}: could not close the run ({_first_line(exc)}); its last figures may be missing", flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _earlier_notes(row: Job) -> dict:
    """The runs an earlier attempt of this job opened (a retry logs into the same ones)."""
    for entry in reversed(row.history or []):
        if entry.get("attempt") != row.attempt and entry.get("trackers"):
            return entry["trackers"]
    return {}


def _note(ctx, notes: dict) -> None:
    """Note the runs in this attempt's history entry, fenced, for the job page (studio/tabs/job_views.py)."""
    with session_scope() as db:
        row = db.get(Job, ctx.claim.job_id, populate_existing=True)
        history = [dict(h) for h in (row.history or [])]
        if history and history[-1].get("attempt") == ctx.claim.attempt:
            history[-1]["trackers"] = notes
            jobq.report(db, ctx.claim, history=history)
