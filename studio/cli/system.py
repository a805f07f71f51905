"""`studio db`, `serve`, `worker`, `models`, `methods`, `objectives`: the install and its building blocks."""
from __future__ import annotations

from pathlib import Path

from models_db import session_scope
from models_db import queries as q
from studio.cli.common import CliError, emit
from studio.cli.handoff import become_worker, run_in_worker


def cmd_db_upgrade(args):
    from models_db.migrate import upgrade

    upgrade()
    emit(args, {"ok": True}, "database is up to date")


def cmd_serve(args):
    from studio.server import serve

    serve(host=args.host, port=args.port, worker=not args.no_worker)


def cmd_worker(args):
    become_worker("serve", *(["--queues", args.queues] if args.queues else []),
                  *(["--gpus", args.gpus] if args.gpus else []))


def cmd_models_import(args):
    from models_db import BaseModel

    if [bool(args.path), args.demo, args.demo_encoder].count(True) != 1:
        raise CliError("give one of: a PATH (HF model folder or .gguf file), --demo (the SmolLM2 chat model) or "
                       "--demo-encoder (the MiniLM encoder for classification)")
    which = (["--demo"] if args.demo else ["--demo-encoder"] if args.demo_encoder
             else ["--path", str(Path(args.path).resolve())])
    result = run_in_worker("import-model", *which, *(["--name", args.name] if args.name else []))
    with session_scope() as db:
        row = db.get(BaseModel, result["model_id"])
        if not result["imported"]:
            return emit(args, {"model": _model_json(row), "imported": False}, f"{row.name} is already imported")
        emit(args, {"model": _model_json(row), "imported": True}, f"imported model {row.id}: {row.name}")


def _model_json(m) -> dict:
    return {"id": m.id, "name": m.name, "path": m.path, "architecture": m.architecture, "params_total": m.params_total}


def cmd_models_list(args):
    with session_scope() as db:
        rows = [_model_json(m) for m in q.list_models(db)]
    emit(args, {"models": rows}, "\n".join(f"{m['id']:>4}  {m['name']}  {m['params_total'] / 1e6:.1f}M" for m in rows)
         or "no models yet: studio models import --demo")


def cmd_objectives_list(args):
    from studio import objectives

    rows = objectives.describe_all()
    emit(args, {"objectives": rows, "planned": objectives.PLANNED},
         "\n".join(f"{o['name']:<15} {o['summary']} [{', '.join(o['formats'])}]" for o in rows))


def cmd_methods_list(args):
    from studio import methods

    rows = methods.describe_all()
    emit(args, {"methods": rows}, "\n".join(f"{m['name']:<15} {m['summary']}" for m in rows))


def register(sub, add, group) -> None:
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
    from studio.cli.users import cmd_models_trust

    sp = add(g, "trust", cmd_models_trust, "admin: allow or forbid a model's own code (trust_remote_code)")
    sp.add_argument("model", help="model id or name"), sp.add_argument("--on", action="store_true")
    sp.add_argument("--off", action="store_true")
    from studio.cli import benchmarks

    benchmarks.register(g, add)  # evaluate, pin-benchmark, unpin-benchmark, benchmarks
    from studio.cli import model_export

    model_export.register(g, add)  # export
    add(group("methods", "fine-tuning methods"), "list", cmd_methods_list, "the method registry")
    add(group("objectives", "training objectives"), "list", cmd_objectives_list, "the objective registry")
    add(group("db", "database"), "upgrade", cmd_db_upgrade, "apply migrations")
