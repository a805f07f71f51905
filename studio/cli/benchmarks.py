"""`studio models evaluate | pin-benchmark | unpin-benchmark | benchmarks`: a base model measured as it is, and
the data sets pinned as its benchmarks (every new version of it is then evaluated on them, beside its parent and
its base: studio/evidence.py). Registered under `studio models` by studio/cli/system.py."""
from __future__ import annotations

from models_db import session_scope
from models_db import queries as q
from studio import benchmarks, evaluations
from studio.cli.common import CliError, emit
from studio.cli.version_jobs import _finish


def _base_id(db, ref: str) -> int:
    base = q.model_by_ref(db, ref)
    if base is None:
        raise CliError(f"no base model {ref!r} (studio models list)")
    return base.id


def cmd_models_evaluate(args):
    with session_scope() as db:
        base_id = _base_id(db, args.model)
    job, created = evaluations.submit_evaluate(None, args.dataset, base_model_id=base_id)
    _finish(args, job, created)


def _pins_json(db, base_id: int) -> dict:
    return {"base_model_id": base_id, "benchmarks": [{"dataset_id": d.id, "name": d.name, "format": d.format}
                                                     for d in benchmarks.pins(db, base_id)]}


def cmd_models_pin(args):
    with session_scope() as db:
        base_id = _base_id(db, args.model)
        added = benchmarks.pin(db, base_id, args.dataset)
        out = {**_pins_json(db, base_id), "pinned": added}
    emit(args, out, f"dataset {args.dataset} {'pinned' if added else 'was already pinned'} as a benchmark of base "
                    f"model {base_id}; every new version of it is evaluated on it with its parent and its base")


def cmd_models_unpin(args):
    with session_scope() as db:
        base_id = _base_id(db, args.model)
        removed = benchmarks.unpin(db, base_id, args.dataset)
        out = {**_pins_json(db, base_id), "unpinned": removed}
    emit(args, out, f"dataset {args.dataset} {'unpinned' if removed else 'was not pinned'}")


def cmd_models_benchmarks(args):
    with session_scope() as db:
        out = _pins_json(db, _base_id(db, args.model))
    emit(args, out, "\n".join(f"#{b['dataset_id']} {b['name']} ({b['format']})" for b in out["benchmarks"])
         or "no benchmarks pinned")


def register(g, add) -> None:
    sp = add(g, "evaluate", cmd_models_evaluate, "evaluate a base model as it is on a data set (a benchmark: "
                                                 "lm-evaluation-harness; any data set: its loss)")
    sp.add_argument("model", help="model id or name"), sp.add_argument("--dataset", type=int, required=True)
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")
    sp.add_argument("--examples", action="store_true", help="with --wait --json: every benchmark question's result")
    for name, fn, text in (("pin-benchmark", cmd_models_pin, "pin a data set as a benchmark of a base model"),
                           ("unpin-benchmark", cmd_models_unpin, "unpin a benchmark")):
        sp = add(g, name, fn, text)
        sp.add_argument("model", help="model id or name"), sp.add_argument("--dataset", type=int, required=True)
    add(g, "benchmarks", cmd_models_benchmarks, "the benchmarks pinned for a base model").add_argument(
        "model", help="model id or name")
