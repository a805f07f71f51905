"""`studio versions`: list, show (with lineage), compare, edit, delete and export model versions."""
from __future__ import annotations

import json
from pathlib import Path

from models_db import ModelVersion, session_scope
from models_db import queries as q
from studio import evidence, operations, versions
from studio.cli import generate, version_jobs
from studio.cli.common import CliError, emit
from studio.cli.handoff import run_in_worker
from studio.exports import FORMATS as EXPORT_FORMATS


def cmd_versions_list(args):
    with session_scope() as db:
        vs = q.list_versions(db)
        rows = [operations.version_json(v) for v in vs]
    emit(args, {"versions": rows}, "\n".join(
        f"{v['id']:>4}  {v['name']}  {v['method']}  train_loss={v['metrics'].get('train_loss')}" for v in rows)
        or "no versions yet")


def cmd_versions_show(args):
    with session_scope() as db:
        v = versions.get(db, args.id)
        out = operations.version_json(v, versions.lineage(db, v.id))
    out.update(evidence.comparison(args.id))  # vs_parent, vs_base: its evaluations against theirs
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
    lines += ["", "evaluations:", version_jobs.evaluations_text(out)]
    emit(args, out, "\n".join(lines))


def cmd_versions_edit(args):
    versions.update(args.id, name=args.name, tags=args.tags, notes=args.notes)
    with session_scope() as db:
        out = operations.version_json(versions.get(db, args.id))
    emit(args, out, f"version {args.id}: {out['name']} [{', '.join(out['tags'])}]")


def cmd_versions_delete(args):
    plan = versions.delete(args.id, cascade=args.cascade)
    emit(args, {"deleted": plan.ids, "removed_paths": [str(p) for p in plan.paths]}, f"deleted {plan.describe()}")


def cmd_versions_export(args):
    """Export in this process (no worker needed): checked first like the UI's download (studio/exports.py)."""
    from studio import exports

    if args.merged and args.format not in (None, "merged"):
        raise CliError(f"--merged is --format merged; it contradicts --format {args.format}: give one of them")
    fmt = args.format or ("merged" if args.merged else "adapter")
    with session_scope() as db:
        if db.get(ModelVersion, args.id) is None:
            raise CliError(f"version {args.id} does not exist (studio versions list)")
        exports.check_export(db, args.id, fmt)
    out = Path(run_in_worker("export", str(args.id), str(Path(args.out).resolve()), fmt)["out"])
    meta = json.loads((out / "studio_version.json").read_text())
    record = meta.get("fidelity") or {}
    verdict = "verified" if record.get("verified") else f"NOT verified: {record.get('reason')}"
    emit(args, {"version_id": args.id, "out": str(out), "format": fmt, "merged": exports.FORMATS[fmt].merged,
                "ms_per_token": meta.get("export_ms_per_token"), "fidelity": meta.get("fidelity")},
         f"exported to {out} ({fmt}); {verdict}")


def register(sub, add, group) -> None:
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
    sp.add_argument("--format", choices=list(EXPORT_FORMATS),
                    help="merged (float32), merged-fp16, merged-bf16, bnb-8bit, bnb-4bit, onnx, gguf-f16, gguf-q8_0, "
                         "gguf-q4_k_m (methods that can "
                         "merge), or adapter (the default)")
    sp.add_argument("--merged", action="store_true", help="the same as --format merged")
    version_jobs.register(g, add)  # evaluate, combine
    generate.register(g, add)  # generate
