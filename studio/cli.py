"""The `studio` command. Every command with --json prints one JSON object on stdout; errors go to
stderr with a non-zero exit; progress bars go to stderr so --json stays clean."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models_db import Job, ModelVersion, session_scope
from models_db import queries as q
from studio import services
from studio.datasets import DatasetError
from studio.jobspec import SpecError, build_train_spec, parse_set_args
from studio.progress import Bar


class CliError(Exception):
    """A user error: printed on stderr without a stack trace."""


def emit(args, obj: dict, text: str) -> None:
    print(json.dumps(obj, default=str) if args.json else text)


# --- commands -----------------------------------------------------------------------------------

def cmd_db_upgrade(args):
    from models_db.migrate import upgrade

    upgrade()
    emit(args, {"ok": True}, "database is up to date")


def cmd_serve(args):
    from studio.server import serve

    serve(host=args.host, port=args.port, worker=not args.no_worker)


def cmd_worker(args):
    from worker.service import main

    main(queues=args.queues, gpus=args.gpus)


def cmd_models_import(args):
    from models_db import BaseModel
    from worker.importer import DEMO_NAME, demo_gguf, import_model

    if not args.demo and not args.path:
        raise CliError("give a PATH (HF model folder or .gguf file) or --demo")
    src, name = (demo_gguf(), args.name or DEMO_NAME) if args.demo else (Path(args.path), args.name)
    with session_scope() as db:
        existing = q.model_by_ref(db, name) if name else None
        if existing and args.demo:
            return emit(args, {"model": _model_json(existing), "imported": False}, f"{existing.name} is already imported")
    print(f"importing {src} ...", file=sys.stderr)
    fields = import_model(src, name)
    with session_scope() as db:
        row = q.model_by_ref(db, fields["name"]) or BaseModel(**fields)
        for k, v in fields.items():
            setattr(row, k, v)
        db.add(row)
        db.flush()
        emit(args, {"model": _model_json(row), "imported": True}, f"imported model {row.id}: {row.name}")


def _model_json(m) -> dict:
    return {"id": m.id, "name": m.name, "path": m.path, "architecture": m.architecture, "params_total": m.params_total}


def cmd_models_list(args):
    with session_scope() as db:
        rows = [_model_json(m) for m in q.list_models(db)]
    emit(args, {"models": rows}, "\n".join(f"{m['id']:>4}  {m['name']}  {m['params_total'] / 1e6:.1f}M" for m in rows)
         or "no models yet: studio models import --demo")


def cmd_methods_list(args):
    from worker import methods

    rows = methods.describe_all()
    emit(args, {"methods": rows}, "\n".join(f"{m['name']:<15} {m['summary']}" for m in rows))


def cmd_dataset_add(args):
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    ds, report, reused = services.add_dataset(path, name=args.name, format=args.format,
                                              drop_bad_rows=args.drop_bad_rows)
    out = {"dataset": _dataset_json(ds), "reused": reused, "report": report.to_json()}
    emit(args, out, f"{'reused' if reused else 'registered'} dataset {ds.id} ({ds.format}, {ds.rows} rows)\n"
                    f"{report.summary()}")


def _dataset_json(d) -> dict:
    return {"id": d.id, "name": d.name, "format": d.format, "rows": d.rows, "dropped_rows": d.dropped_rows,
            "content_hash": d.content_hash, "original_name": d.original_name, "stats": d.stats}


def cmd_dataset_list(args):
    with session_scope() as db:
        rows = [_dataset_json(d) for d in q.list_datasets(db)]
    emit(args, {"datasets": rows}, "\n".join(f"{d['id']:>4}  {d['name']}  {d['format']}  {d['rows']} rows" for d in rows)
         or "no data sets yet: studio dataset add FILE")


def cmd_dataset_show(args):
    from models_db import Dataset

    with session_scope() as db:
        d = db.get(Dataset, args.id)
        if d is None:
            raise CliError(f"dataset {args.id} does not exist")
        out = _dataset_json(d)
    emit(args, {"dataset": out}, json.dumps(out, indent=2, default=str))


def cmd_train(args):
    with session_scope() as db:
        model = q.model_by_ref(db, args.model)
        if model is None:
            raise CliError(f"model {args.model!r} does not exist (studio models list)")
        model_id = model.id
    spec = build_train_spec(model_id=model_id, dataset_id=args.dataset, method=args.method,
                            settings=parse_set_args(args.set or []), parent_version_id=args.from_version)
    job, created = services.submit_train(spec, idempotency_key=args.idempotency_key)
    if not args.json:
        print(f"{'queued' if created else 'already submitted as'} job {job.id}", file=sys.stderr)
    if args.wait:
        job = wait_for(job.id, quiet=args.json)
    emit(args, services.job_json(job), _job_line(job))
    if args.wait and job.state != "succeeded":
        sys.exit(1)


def wait_for(job_id: int, *, quiet: bool = False, poll: float = 1.0) -> Job:
    """Block until the job finishes, drawing a progress bar on stderr."""
    bar = Bar(stream=sys.stderr)
    while True:
        with session_scope() as db:
            job = db.get(Job, job_id)
        bar.update(job.step, job.max_steps, f"{job.state}: {job.message or ''}")
        if job.state in ("succeeded", "failed", "cancelled"):
            bar.close()
            return job
        time.sleep(poll)


def _job_line(j: Job) -> str:
    extra = f" -> version {j.result.get('version_id')}" if (j.result or {}).get("version_id") else ""
    err = f"\n  {j.error}" if j.error else ""
    return f"job {j.id} [{j.kind}] {j.state} step {j.step}/{j.max_steps} attempt {j.attempt}{extra}{err}"


def cmd_jobs_list(args):
    with session_scope() as db:
        jobs = q.list_jobs(db, kind=None)
        rows = [services.job_json(j) for j in jobs]
        text = "\n".join(_job_line(j) for j in jobs) or "no jobs yet"
    emit(args, {"jobs": rows}, text)


def _get_job(db, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise CliError(f"job {job_id} does not exist (studio jobs list)")
    return job


def cmd_jobs_show(args):
    with session_scope() as db:
        job = _get_job(db, args.id)
        emit(args, services.job_json(job), _job_line(job))


def cmd_jobs_cancel(args):
    state = services.cancel_job(args.id)
    emit(args, {"id": args.id, "state": state}, f"job {args.id}: {state}")


def cmd_versions_list(args):
    with session_scope() as db:
        vs = q.list_versions(db)
        rows = [services.version_json(v) for v in vs]
    emit(args, {"versions": rows}, "\n".join(
        f"{v['id']:>4}  {v['name']}  {v['method']}  train_loss={v['metrics'].get('train_loss')}" for v in rows)
        or "no versions yet")


def cmd_versions_show(args):
    with session_scope() as db:
        v = db.get(ModelVersion, args.id)
        if v is None:
            raise CliError(f"version {args.id} does not exist (studio versions list)")
        out = services.version_json(v, q.ancestors(db, v.id))
    emit(args, out, json.dumps(out, indent=2, default=str))


def cmd_versions_export(args):
    from worker.export import export_version

    with session_scope() as db:
        if db.get(ModelVersion, args.id) is None:
            raise CliError(f"version {args.id} does not exist (studio versions list)")
    out = export_version(args.id, Path(args.out), merged=args.merged, say=lambda m: print(m, file=sys.stderr))
    emit(args, {"version_id": args.id, "out": str(out), "merged": args.merged}, f"exported to {out}")


# --- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p = argparse.ArgumentParser(prog="studio", description="FineTune Studio", parents=[common])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(parent, name, fn, help_):
        sp = parent.add_parser(name, help=help_, parents=[common])
        sp.set_defaults(fn=fn)
        return sp

    def group(name, help_):
        return sub.add_parser(name, help=help_).add_subparsers(dest="sub", required=True)

    sp = add(sub, "serve", cmd_serve, "start the web studio (and, embedded, a worker)")
    sp.add_argument("--host"), sp.add_argument("--port", type=int)
    sp.add_argument("--no-worker", action="store_true", help="do not start a worker beside the UI")
    sp = add(sub, "worker", cmd_worker, "run a training worker")
    sp.add_argument("--gpus", help="e.g. 0,1 (sets CUDA_VISIBLE_DEVICES)"), sp.add_argument("--queues")

    g = group("models", "base models")
    sp = add(g, "import", cmd_models_import, "import a HF model folder or a GGUF file")
    sp.add_argument("path", nargs="?"), sp.add_argument("--name"), sp.add_argument("--demo", action="store_true")
    add(g, "list", cmd_models_list, "list base models")
    add(group("methods", "fine-tuning methods"), "list", cmd_methods_list, "the method registry")

    g = group("dataset", "data sets")
    sp = add(g, "add", cmd_dataset_add, "validate and register a data file")
    sp.add_argument("file"), sp.add_argument("--name"), sp.add_argument("--format", default="auto")
    sp.add_argument("--drop-bad-rows", action="store_true", help="register the good rows, dropping reported bad ones")
    add(g, "list", cmd_dataset_list, "list data sets")
    add(g, "show", cmd_dataset_show, "one data set").add_argument("id", type=int)

    sp = add(sub, "train", cmd_train, "submit a training job")
    sp.add_argument("--model", required=True, help="base model id or name")
    sp.add_argument("--dataset", required=True, type=int)
    sp.add_argument("--method", default="lora")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training or method setting (repeatable)")
    sp.add_argument("--from-version", type=int, help="continue training from this version")
    sp.add_argument("--idempotency-key", help="a repeat with the same key returns the first job")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")

    g = group("jobs", "jobs")
    add(g, "list", cmd_jobs_list, "list jobs")
    add(g, "show", cmd_jobs_show, "one job").add_argument("id", type=int)
    add(g, "cancel", cmd_jobs_cancel, "cancel a queued or running job").add_argument("id", type=int)

    g = group("versions", "model versions")
    add(g, "list", cmd_versions_list, "list versions")
    add(g, "show", cmd_versions_show, "one version with its ancestors").add_argument("id", type=int)
    sp = add(g, "export", cmd_versions_export, "write a version to a folder")
    sp.add_argument("id", type=int), sp.add_argument("--out", required=True)
    sp.add_argument("--merged", action="store_true", help="merge into the base (methods that allow it)")

    add(group("db", "database"), "upgrade", cmd_db_upgrade, "apply migrations")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (CliError, SpecError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - user-facing worker errors raised in-process (import, export)
        from worker.errors import UserFacingError

        if isinstance(e, UserFacingError):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
