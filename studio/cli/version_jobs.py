"""`studio versions evaluate` and `studio versions combine`: the version jobs a worker runs (and the same finish
for `studio models evaluate`, studio/cli/benchmarks.py).

Registered under `studio versions` by studio/cli/versions.py (``register(g, add)``)."""
from __future__ import annotations

import sys

from models_db import JobState, session_scope
from studio import combine, evaluations, operations
from studio.cli.common import _job_line, emit, wait_for


def _finish(args, job, created: bool = True) -> None:
    """Print the job (and, waited for, its outcome); a failed wait exits non-zero. An evaluate job waited for
    also prints its evaluation (a benchmark's accuracy with its standard error; ``--examples``: every question)."""
    if not args.json:
        print(f"{'queued' if created else 'already queued as'} job {job.id} [{job.kind}]", file=sys.stderr)
    if args.wait:
        job = wait_for(job.id, quiet=args.json)
    out = operations.job_json(job)
    if args.wait and job.state == JobState.succeeded:
        cfg = job.config or {}
        with session_scope() as db:
            vid = (job.result or {}).get("version_id") or cfg.get("version_id")
            if vid is not None:
                out["evaluations"] = [evaluations.evaluation_json(e) for e in evaluations.of_versions(db, [vid])]
            if job.kind == "evaluate":
                row = evaluations.find(db, cfg["dataset_id"], version_id=cfg.get("version_id"),
                                       base_model_id=cfg.get("base_model_id"))
                out["evaluation"] = evaluations.evaluation_json(row, examples=getattr(args, "examples", False))
    shown = out.get("evaluations") or ([out["evaluation"]] if "evaluation" in out else [])
    emit(args, out, _job_line(job) + "".join(
        f"\n  dataset #{e['dataset_id']} ({e['split']}, {e['rows']} rows): "
        + ", ".join(f"{k} {evaluations.cell_text(e, k)}" for k, v in e["metrics"].items()
                    if isinstance(v, (int, float)) and not k.endswith("_stderr"))
        + (f"; {e['failed']} question(s) failed" if e.get("failed") is not None else "")
        for e in shown))
    if args.wait and job.state != JobState.succeeded:
        sys.exit(1)


def evaluations_text(compared: dict) -> str:
    """The version x data set table of ``studio versions compare`` as text."""
    base = [f"base {compared['evaluations_base']}"] if compared.get("evaluations_base") else []
    return evaluations.markdown(compared.get("evaluations") or [], [f"#{v['id']}" for v in compared["versions"]] + base)


def cmd_versions_evaluate(args):
    job, created = evaluations.submit_evaluate(args.id, args.dataset)
    _finish(args, job, created)


def cmd_versions_combine(args):
    job, _spec = combine.submit_combine(args.ids, weights=args.weights, how=args.how, density=args.density,
                                        name=args.name)
    _finish(args, job)


def register(g, add) -> None:
    sp = add(g, "evaluate", cmd_versions_evaluate, "evaluate a version on a data set (eval split, else its rows)")
    sp.add_argument("id", type=int)
    sp.add_argument("--dataset", type=int, required=True, help="data set version id (studio dataset list)")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")
    sp.add_argument("--examples", action="store_true", help="with --wait --json: every benchmark question's result")
    sp = add(g, "combine", cmd_versions_combine, "combine 2+ LoRA versions of one base into a new version")
    sp.add_argument("ids", type=int, nargs="+", metavar="ID")
    sp.add_argument("--weights", help="one per version, comma-separated (default: 1/n for linear, cat, svd; "
                                      "1 each for ties, dare_ties)")
    sp.add_argument("--how", default="linear", choices=tuple(combine.HOWS),
                    help="; ".join(f"{k}: {v}" for k, v in combine.HOWS.items()).replace("%", "%%"))
    sp.add_argument("--density", type=float, default=0.5, help="share of weights kept (ties, dare_*, magnitude_prune)")
    sp.add_argument("--name", help="the new version's name")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")
