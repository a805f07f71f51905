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
from studio import services, versions
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
    from worker.importer import DEMO_ENCODER_NAME, DEMO_NAME, demo_encoder_dir, demo_gguf, import_model

    demo = args.demo or args.demo_encoder
    if [bool(args.path), args.demo, args.demo_encoder].count(True) != 1:
        raise CliError("give one of: a PATH (HF model folder or .gguf file), --demo (the SmolLM2 chat model) or "
                       "--demo-encoder (the MiniLM encoder for classification)")
    if args.demo:
        src, name = demo_gguf(), args.name or DEMO_NAME
    elif args.demo_encoder:
        src, name = demo_encoder_dir(), args.name or DEMO_ENCODER_NAME
    else:
        src, name = Path(args.path), args.name
    with session_scope() as db:
        existing = q.model_by_ref(db, name) if name else None
        if existing and demo:
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


def cmd_advise(args):
    from studio.advisor import advise
    from studio.advisor.explain import advice_text
    from studio.advisor.sources import estimator_history, studio_inputs

    try:
        inputs, where = studio_inputs(
            model=args.model, dataset=args.dataset, params_b=args.params_b, examples=args.examples,
            gpu_memory_gb=_gpu_list(args), cpu_only=args.cpu_only, ram_gb=args.ram_gb, task=args.task,
            complexity=args.complexity, quality=args.quality, deploy=args.deploy, latency_ok=args.latency_ok,
            seq_len=args.seq_len, batch_size=args.batch_size)
        advice = advise(inputs)
    except ValueError as e:  # unknown model/data set, bad answers: said plainly, no stack trace
        raise CliError(str(e)) from None
    with session_scope() as db:
        history = estimator_history(db)
    text = advice_text(advice, where)
    if history["jobs"]:
        text += (f"\n\nThe estimator on this studio's {history['jobs']} measured jobs: mean error "
                 f"{history['mean_abs_error_pct']:.0f} %")
    emit(args, {**advice.to_json(), "inputs": where, "estimator_history": history}, text)


def _gpu_list(args) -> list[float] | None:
    """--gpu-memory-gb 24 [--gpus 2] -> [24.0, 24.0]; a comma list gives one entry per GPU."""
    if args.gpu_memory_gb is None:
        if args.gpus:
            raise CliError("--gpus needs --gpu-memory-gb (the memory of each GPU in GB)")
        return None
    try:
        sizes = [float(x) for x in args.gpu_memory_gb.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--gpu-memory-gb {args.gpu_memory_gb!r}: give GB per GPU, e.g. 24 or 24,80") from None
    if not sizes or any(g <= 0 for g in sizes):
        raise CliError("--gpu-memory-gb: every GPU needs a positive size in GB")
    if args.gpus is not None and args.gpus < 1:
        raise CliError("--gpus must be at least 1 (use --cpu-only for no GPU)")
    if len(sizes) == 1 and args.gpus:
        return sizes * args.gpus
    if args.gpus and args.gpus != len(sizes):
        raise CliError(f"--gpus {args.gpus} but --gpu-memory-gb lists {len(sizes)} sizes")
    return sizes


def cmd_dataset_add(args):
    from studio.datasets.formats import parse_mapping
    from studio.datasets.split import Split

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    split = Split(ratio=args.eval_split, seed=args.seed, eval_file=Path(args.eval_file) if args.eval_file else None)
    ds, report, reused = services.add_dataset(path, name=args.name, format=args.format,
                                              mapping=parse_mapping(args.map or []), drop_bad_rows=args.drop_bad_rows,
                                              split=split, model=args.model, max_seq_length=args.max_seq_length)
    _emit_version(args, ds, report, reused)


def cmd_dataset_edit(args):
    from studio.datasets import versions as dataset_versions  # studio.versions is about model versions
    from studio.datasets.formats import parse_mapping

    ds, report, reused = dataset_versions.edit_mapping(
        args.id, format=args.format, mapping=parse_mapping(args.map or []), name=args.name,
        drop_bad_rows=args.drop_bad_rows, model=args.model, max_seq_length=args.max_seq_length)
    _emit_version(args, ds, report, reused)


def _emit_version(args, ds, report, reused) -> None:
    from studio.datasets import versions as dataset_versions  # studio.versions is about model versions

    out = {"dataset": dataset_versions.dataset_json(ds), "reused": reused, "report": report.to_json()}
    split = f", {ds.eval_rows} eval rows" if ds.eval_rows else ""
    parent = f", derived from dataset {ds.parent_id}" if ds.parent_id else ""
    emit(args, out, f"{'reused' if reused else 'registered'} dataset {ds.id} ({ds.format}, {ds.rows} rows{split}"
                    f"{parent})\n{report.summary()}")


def cmd_dataset_list(args):
    from studio.datasets import versions as dataset_versions  # studio.versions is about model versions

    with session_scope() as db:
        rows = [dataset_versions.dataset_json(d) for d in q.list_datasets(db)]
    emit(args, {"datasets": rows}, "\n".join(f"{d['id']:>4}  {d['name']}  {d['format']}  {d['rows']} rows" for d in rows)
         or "no data sets yet: studio dataset add FILE")


def cmd_dataset_show(args):
    from models_db import Dataset
    from studio.datasets import versions as dataset_versions  # studio.versions is about model versions

    with session_scope() as db:
        d = db.get(Dataset, args.id)
        if d is None:
            raise CliError(f"dataset {args.id} does not exist")
        out = dataset_versions.describe(db, d)
    emit(args, {"dataset": out}, json.dumps(out, indent=2, default=str))


def cmd_train(args):
    with session_scope() as db:
        model = q.model_by_ref(db, args.model)
        if model is None:
            raise CliError(f"model {args.model!r} does not exist (studio models list)")
        model_id = model.id
    spec = build_train_spec(model_id=model_id, dataset_id=args.dataset, method=args.method,
                            settings=parse_set_args(args.set or []), parent_version_id=args.from_version,
                            task=args.task)
    job, created = services.submit_train(spec, idempotency_key=args.idempotency_key, after=args.after)
    _print_cost(job)
    if not args.json:
        waits = f", to start after job {args.after}" if args.after else ""
        print(f"{'queued' if created else 'already submitted as'} job {job.id}{waits}", file=sys.stderr)
    if args.wait:
        job = wait_for(job.id, quiet=args.json)
    emit(args, services.job_json(job), _job_line(job))
    if args.wait and job.state != "succeeded":
        sys.exit(1)


def _print_cost(job: Job) -> None:
    """The advisor's count and memory estimate that submit stored with the job, on stderr."""
    from studio.advisor.jobcost import describe_cost

    estimate = (job.config or {}).get("estimate") or {}
    if "trainable" in estimate:
        print(f"{job.config['method']}: {describe_cost(estimate, estimate, markdown=False)}", file=sys.stderr)


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


def _job_line(j: Job, position: int | None = None) -> str:
    extra = f" -> version {j.result.get('version_id')}" if (j.result or {}).get("version_id") else ""
    if position:
        extra += f" (position {position} in the queue{f', after job {j.after_job_id}' if j.after_job_id else ''})"
    err = f"\n  {j.error}" if j.error else ""
    return f"job {j.id} [{j.kind}] {j.state} step {j.step}/{j.max_steps} attempt {j.attempt}{extra}{err}"


def cmd_jobs_list(args):
    with session_scope() as db:
        jobs = q.list_jobs(db, kind=None)
        places = q.queue_positions(db)
        rows = [services.job_json(j, places.get(j.id)) for j in jobs]
        text = "\n".join(_job_line(j, places.get(j.id)) for j in jobs) or "no jobs yet"
    emit(args, {"jobs": rows}, text)


def _get_job(db, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise CliError(f"job {job_id} does not exist (studio jobs list)")
    return job


def cmd_jobs_show(args):
    with session_scope() as db:
        job = _get_job(db, args.id)
        place = q.queue_positions(db).get(job.id)
        attempts = "".join(f"\n  {_attempt_line(a)}" for a in job.history or [])
        emit(args, services.job_json(job, place), _job_line(job, place) + attempts)


def _attempt_line(a: dict) -> str:
    resumed = f", resumed from step {a['resumed_from']}" if a.get("resumed_from") else ""
    reason = f": {a['reason']}" if a.get("reason") else ""
    return f"attempt {a['attempt']} on {a.get('worker')}{resumed}: {a.get('outcome')}{reason}"


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
        v = versions.get(db, args.id)
        out = services.version_json(v, versions.lineage(db, v.id))
    emit(args, out, json.dumps(out, indent=2, default=str))


def cmd_versions_compare(args):
    out = versions.compare(args.ids)
    head = ["", *(f"#{v['id']} {v['name']}" for v in out["versions"])]
    lines = ["\t".join(head)]
    for m in out["metrics"]:
        n = m["digits"]
        cells = [("-" if x is None else f"{x:.{n}f}") + ("" if i == 0 or d is None else f" ({d:+.{n}f})")
                 for i, (x, d) in enumerate(zip(m["values"], m["diff"]))]
        lines.append("\t".join([m["label"], *cells]))
    lines += ["", "config differences:"] + [f"  {r['key']}: " + " | ".join(map(str, r["values"]))
                                            for r in out["config_diff"]]
    emit(args, out, "\n".join(lines))


def cmd_versions_edit(args):
    versions.update(args.id, name=args.name, tags=args.tags, notes=args.notes)
    with session_scope() as db:
        out = services.version_json(versions.get(db, args.id))
    emit(args, out, f"version {args.id}: {out['name']} [{', '.join(out['tags'])}]")


def cmd_versions_delete(args):
    plan = versions.delete(args.id, cascade=args.cascade)
    emit(args, {"deleted": plan.ids, "removed_paths": [str(p) for p in plan.paths]}, f"deleted {plan.describe()}")


def cmd_versions_export(args):
    from worker.export import export_version

    with session_scope() as db:
        if db.get(ModelVersion, args.id) is None:
            raise CliError(f"version {args.id} does not exist (studio versions list)")
    out = export_version(args.id, Path(args.out), merged=args.merged, say=lambda m: print(m, file=sys.stderr))
    emit(args, {"version_id": args.id, "out": str(out), "merged": args.merged}, f"exported to {out}")


# --- parser -------------------------------------------------------------------------------------

def _dataset_options(sp) -> None:
    """Options shared by `dataset add` and `dataset edit`."""
    sp.add_argument("--name"), sp.add_argument("--format", default="auto")
    sp.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                    help="use COLUMN for FIELD, e.g. --map instruction=question (repeatable)")
    sp.add_argument("--drop-bad-rows", action="store_true", help="register the good rows, dropping reported bad ones")
    sp.add_argument("--model", help="base model (id or name) whose tokenizer checks row lengths")
    sp.add_argument("--max-seq-length", type=int, help="rows longer than this many tokens are bad rows (needs --model)")


def _advise_parser(sp) -> None:
    from studio.advisor.advise import DEPLOYS, QUALITIES, TASKS

    sp.add_argument("--model", help="an imported base model (id or name): its config.json gives the shape")
    sp.add_argument("--params-b", type=float, metavar="B", help="model size in billions, when it is not imported")
    sp.add_argument("--dataset", type=int, help="a registered data set: its size and token lengths")
    sp.add_argument("--examples", type=int, help="number of training examples, when no data set is given")
    sp.add_argument("--gpu-memory-gb", metavar="GB", help="memory of each GPU, e.g. 24 (with --gpus N) or 24,80; "
                    "default: the registered workers' GPUs")
    sp.add_argument("--gpus", type=int, metavar="N", help="how many GPUs of --gpu-memory-gb each")
    sp.add_argument("--cpu-only", action="store_true", help="plan for a machine without a GPU")
    sp.add_argument("--ram-gb", type=float, help="RAM of a CPU-only machine (to check what fits)")
    sp.add_argument("--task", choices=TASKS, default="instruction", help="what the model must learn")
    sp.add_argument("--complexity", type=float, default=0.5, help="task complexity from 0 (simple) to 1 (hard)")
    sp.add_argument("--quality", choices=QUALITIES, default="medium", help="how good the result must be")
    sp.add_argument("--deploy", choices=(*DEPLOYS, "mobile"), default="server", help="where the model will run")
    sp.add_argument("--latency-ok", action=argparse.BooleanOptionalAction, default=True,
                    help="extra inference latency (unmerged adapters) is acceptable")
    sp.add_argument("--seq-len", type=int, help="training sequence length (default: the data's 95th percentile)")
    sp.add_argument("--batch-size", type=int, help="examples per optimizer step (default 8 or 16)")


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
    sp.add_argument("--demo-encoder", action="store_true", help="the MiniLM encoder, for classification")
    add(g, "list", cmd_models_list, "list base models")
    add(group("methods", "fine-tuning methods"), "list", cmd_methods_list, "the method registry")
    _advise_parser(add(sub, "advise", cmd_advise, "which method fits your model, data and GPUs, and why"))

    g = group("dataset", "data sets")
    sp = add(g, "add", cmd_dataset_add, "validate and register a data file")
    sp.add_argument("file")
    _dataset_options(sp)
    sp.add_argument("--eval-split", type=float, default=0.0, metavar="FRACTION",
                    help="hold out this fraction of the rows for evaluation, stored with the version")
    sp.add_argument("--eval-file", help="a separate evaluation file (same columns), stored with the version")
    sp.add_argument("--seed", type=int, default=42, help="seed that picks the held-out rows")
    sp = add(g, "edit", cmd_dataset_edit, "a new version of a data set with a corrected format/mapping")
    sp.add_argument("id", type=int)
    _dataset_options(sp)
    add(g, "list", cmd_dataset_list, "list data sets")
    add(g, "show", cmd_dataset_show, "one data set").add_argument("id", type=int)

    sp = add(sub, "train", cmd_train, "submit a training job")
    sp.add_argument("--model", required=True, help="base model id or name")
    sp.add_argument("--dataset", required=True, type=int)
    sp.add_argument("--method", default="lora")
    sp.add_argument("--task", choices=tuple(services.TASK_FORMATS),
                    help="what to train; default: implied by the data set (classification -> seq_cls)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training or method setting (repeatable)")
    sp.add_argument("--from-version", type=int, help="continue training from this version")
    sp.add_argument("--idempotency-key", help="a repeat with the same key returns the first job")
    sp.add_argument("--after", type=int, metavar="JOB", help="start only once this job has finished")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")

    g = group("jobs", "jobs")
    add(g, "list", cmd_jobs_list, "list jobs")
    add(g, "show", cmd_jobs_show, "one job").add_argument("id", type=int)
    add(g, "cancel", cmd_jobs_cancel, "cancel a queued or running job").add_argument("id", type=int)

    g = group("versions", "model versions")
    add(g, "list", cmd_versions_list, "list versions")
    add(g, "show", cmd_versions_show, "one version with its ancestors and descendants").add_argument("id", type=int)
    add(g, "compare", cmd_versions_compare, "2 to 4 versions: metrics, differences, config diff, curves"
        ).add_argument("ids", type=int, nargs="+", metavar="ID")
    sp = add(g, "edit", cmd_versions_edit, "rename, tag or annotate a version")
    sp.add_argument("id", type=int), sp.add_argument("--name"), sp.add_argument("--notes")
    sp.add_argument("--tags", help="comma-separated; replaces the version's tags ('' clears them)")
    sp = add(g, "delete", cmd_versions_delete, "delete a version and its artifacts")
    sp.add_argument("id", type=int)
    sp.add_argument("--cascade", action="store_true", help="also delete the versions trained from it")
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
