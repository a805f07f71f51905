"""What the CLI and the UI both do: register data sets, submit jobs, describe them. No torch here."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from models_db import Dataset, Job, ModelVersion, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from studio.datasets import DatasetError, IntakeReport, ingest
from studio.jobspec import SpecError, TrainSpec
from studio.settings import get_settings


def add_dataset(src: Path, *, original_name: str | None = None, name: str | None = None, format: str = "auto",
                drop_bad_rows: bool = False) -> tuple[Dataset, IntakeReport, bool]:
    """Validate and register an upload as an immutable dataset version.

    Bad rows are never dropped silently: without ``drop_bad_rows`` any bad row refuses the whole
    file (nothing is registered) and the error lists the problems. Returns (dataset, report, reused)."""
    s = get_settings()
    original_name = original_name or Path(src).name
    work = Path(tempfile.mkdtemp(dir=s.path("tmp")))
    try:
        report = ingest(Path(src), original_name=original_name, out_dir=work, format=format,
                        max_bytes=s.max_upload_mb * 2**20)
        bad = report.total_rows - report.valid_rows
        if bad and not drop_bad_rows:
            raise DatasetError(f"{original_name}: {report.summary()}\nFix these rows in the file, or register the "
                               f"{report.valid_rows} good rows explicitly (CLI: --drop-bad-rows; UI: tick "
                               "'Drop the bad rows').")
        with session_scope() as db:
            existing = q.dataset_by_hash(db, report.content_hash)
            if existing:
                return existing, report, True
            rel = Path("datasets") / report.content_hash[:16] / "rows.jsonl"
            (s.home_abs / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(report.canonical_path), s.home_abs / rel)
            ds = Dataset(name=name or Path(original_name).stem, content_hash=report.content_hash, format=report.format,
                         file_type=report.file_type, original_name=original_name, path=str(rel),
                         rows=report.valid_rows, dropped_rows=bad, mapping=report.mapping,
                         stats={**report.stats, "problem_counts": report.problem_counts,
                                "preview": report.preview[:5]})
            db.add(ds)
            db.flush()
            return ds, report, False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def submit_train(spec: TrainSpec, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Check the references, write a queued job and enqueue it. Returns (job, created)."""
    s = get_settings()
    with session_scope() as db:
        if q.model_by_ref(db, spec.model_id) is None:
            raise SpecError(f"model {spec.model_id} does not exist (studio models list)")
        ds = db.get(Dataset, spec.dataset_id)
        if ds is None:
            raise SpecError(f"dataset {spec.dataset_id} does not exist (studio dataset list)")
        if ds.format not in ("instruction", "chat", "text"):
            raise SpecError(f"dataset {ds.id} is {ds.format} data; causal-LM training takes instruction, chat or text")
        if spec.parent_version_id is not None:
            parent = db.get(ModelVersion, spec.parent_version_id)
            if parent is None:
                raise SpecError(f"version {spec.parent_version_id} does not exist (studio versions list)")
            if parent.base_model_id != spec.model_id:
                raise SpecError(f"version {parent.id} was trained from another base model (id {parent.base_model_id})")
        job, created = jobq.create_job(db, kind="train", config=spec.to_json(), idempotency_key=idempotency_key,
                                       max_attempts=s.max_attempts, base_model_id=spec.model_id,
                                       dataset_id=spec.dataset_id, parent_version_id=spec.parent_version_id)
    if created:
        from worker.celery_app import enqueue

        enqueue("train", job.id)
    return job, created


def submit_export(version_id: int, *, merged: bool) -> Job:
    """Queue a background export (zip) of a version; one queued, running or already built is reused."""
    config = {"version_id": version_id, "merged": merged}
    with session_scope() as db:
        if db.get(ModelVersion, version_id) is None:
            raise SpecError(f"version {version_id} does not exist (studio versions list)")
        for old in q.list_jobs(db, kind="export", limit=100):
            if old.config == config and (old.state in ("queued", "running") or
                                         (old.state == "succeeded" and _zip_exists(old))):
                return old
        job, _ = jobq.create_job(db, kind="export", config=config)
    from worker.celery_app import enqueue

    enqueue("export", job.id)
    return job


def _zip_exists(job: Job) -> bool:
    z = (job.result or {}).get("zip")
    return bool(z) and (get_settings().home_abs / z).exists()


def cancel_job(job_id: int) -> str:
    with session_scope() as db:
        if db.get(Job, job_id) is None:
            raise SpecError(f"job {job_id} does not exist (studio jobs list)")
        return jobq.request_cancel(db, job_id)


def job_json(job: Job) -> dict:
    """The job as the CLI's --json shows it."""
    return {
        "id": job.id, "kind": job.kind, "state": job.state, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "step": job.step, "max_steps": job.max_steps, "message": job.message, "error": job.error,
        "version_id": (job.result or {}).get("version_id"), "result": job.result, "config": job.config,
        "worker": job.worker_id, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


def version_json(v: ModelVersion, ancestors: list[ModelVersion] | None = None) -> dict:
    out = {"id": v.id, "name": v.name, "method": v.method, "base_model_id": v.base_model_id, "parent_id": v.parent_id,
           "dataset_id": v.dataset_id, "job_id": v.job_id, "metrics": v.metrics, "config": v.config,
           "artifacts": v.artifacts, "created_at": _iso(v.created_at)}
    if ancestors is not None:
        out["ancestors"] = [{"id": a.id, "name": a.name, "method": a.method} for a in ancestors]
    return out


def _iso(t) -> str | None:
    return t.isoformat() if t else None
