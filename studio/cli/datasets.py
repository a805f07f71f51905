"""`studio dataset`: register, re-map, list and show data set versions."""
from __future__ import annotations

import json
from pathlib import Path

from models_db import session_scope
from models_db import queries as q
from studio import operations
from studio.cli.common import CliError, emit


def cmd_dataset_add(args):
    from studio.datasets.formats import parse_mapping
    from studio.datasets.split import Split

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    split = Split(ratio=args.eval_split, seed=args.seed, eval_file=Path(args.eval_file) if args.eval_file else None)
    ds, report, reused = operations.add_dataset(path, name=args.name, format=args.format,
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


def _dataset_options(sp) -> None:
    """Options shared by `dataset add` and `dataset edit`."""
    sp.add_argument("--name"), sp.add_argument("--format", default="auto")
    sp.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                    help="use COLUMN for FIELD, e.g. --map instruction=question (repeatable)")
    sp.add_argument("--drop-bad-rows", action="store_true", help="register the good rows, dropping reported bad ones")
    sp.add_argument("--model", help="base model (id or name) whose tokenizer checks row lengths")
    sp.add_argument("--max-seq-length", type=int, help="rows longer than this many tokens are bad rows (needs --model)")


def register(sub, add, group) -> None:
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
