"""Dataset versions in the database: register an upload (validated, split, its file kept), derive a
new version by editing the mapping, and describe a version's lineage and the jobs and model versions
that used it. The CLI and the UI both call these (uploads through ``studio.operations.add_dataset``).

A version is immutable and named by its hash (the intake's content hash, plus the split). Its folder
``datasets/<hash[:16]>/`` holds ``rows.jsonl`` (training rows) and, with a stored split,
``eval.jsonl``. The upload itself is kept once per content under ``datasets/sources/`` so that a
mapping can be corrected later; a version made from the same upload as an earlier one (another
mapping or split) records that one as its parent.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import desc, select

from models_db import Dataset, Job, ModelVersion, session_scope
from models_db import queries as q
from models_db.access import scoped_digest
from studio import store
from studio.settings import get_settings

from .errors import DatasetError
from .intake import ingest
from .report import IntakeReport
from .split import EVAL_FILE, ROWS_FILE, Split, eval_count, split_rows, version_hash
from .tokens import LengthLimit, ModelText

DEFAULT_MAX_SEQ_LENGTH = 512  # the training knob's default (studio.jobspec)


def register(src: Path, *, original_name: str | None = None, name: str | None = None, format: str = "auto",
             mapping: dict | None = None, drop_bad_rows: bool = False, split: Split | None = None,
             model: str | int | None = None, max_seq_length: int | None = None,
             parent_id: int | None = None) -> tuple[Dataset, IntakeReport, bool]:
    """Validate ``src`` and register it as a dataset version. Returns (dataset, report, reused).

    Bad rows are never dropped silently: without ``drop_bad_rows`` any bad row (in the file or the
    eval file) refuses the whole upload and nothing is registered. With ``model``, rows longer than
    ``max_seq_length`` tokens for that model's tokenizer and chat template are bad rows."""
    s = get_settings()
    original_name = original_name or Path(src).name
    split = split or Split()
    limit = length_limit(model, max_seq_length)
    max_bytes = s.max_upload_mb * 2**20
    work = Path(tempfile.mkdtemp(dir=s.path("tmp")))
    try:
        report = ingest(Path(src), original_name=original_name, out_dir=work / "train", format=format,
                        mapping=mapping, max_bytes=max_bytes, length_limit=limit)
        evals = None
        if split.eval_file is not None:  # same format and mapping: the eval file must have the same columns
            evals = ingest(Path(split.eval_file), original_name=split.name, out_dir=work / "eval",
                           format=report.format, mapping=report.mapping, max_bytes=max_bytes, length_limit=limit)
        _refuse_bad_rows(report, evals, drop_bad_rows)
        spec = split.spec(evals.content_hash if evals else "")
        digest = scoped_digest(version_hash(report.content_hash, spec))  # per member: models_db.access
        held_out = eval_count(original_name, report.valid_rows, split.ratio) if split.ratio else 0
        with session_scope() as db:
            existing = q.dataset_by_hash(db, digest)
        if existing:
            return existing, report, True
        # files first, outside any transaction (SQLite's would hold the write lock while copying)
        folder = _write_version(work, digest, report, evals, held_out, split.seed)
        source_path = _keep_source(Path(src), report.source_digest)
        stored = {**spec, "eval_source": _keep_source(Path(split.eval_file), evals.source_digest)} if evals else spec
        stats = {**report.stats, "problem_counts": report.problem_counts, "preview": report.preview[:5]}
        if limit:
            stats["length_check"] = {"model": limit.model_name, "max_seq_length": limit.max_tokens}
        if evals:
            stats["eval"] = {"rows": evals.valid_rows, "problem_counts": evals.problem_counts}
        with session_scope() as db:
            if parent_id is None:
                parent_id = db.scalar(select(Dataset.id).where(Dataset.source_digest == report.source_digest)
                                      .order_by(desc(Dataset.id)).limit(1))
            ds = Dataset(
                name=name or Path(original_name).stem, content_hash=digest, format=report.format,
                file_type=report.file_type, original_name=original_name, path=str(folder / ROWS_FILE),
                rows=report.valid_rows - held_out, eval_rows=evals.valid_rows if evals else held_out,
                dropped_rows=_bad(report) + (_bad(evals) if evals else 0), mapping=report.mapping, stats=stats,
                split=stored, parent_id=parent_id, source_digest=report.source_digest, source_path=source_path,
            )
            db.add(ds)
            db.flush()
        return ds, report, False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def edit_mapping(dataset_id: int, *, format: str = "auto", mapping: dict | None = None, name: str | None = None,
                 drop_bad_rows: bool = False, model: str | int | None = None,
                 max_seq_length: int | None = None) -> tuple[Dataset, IntakeReport, bool]:
    """A new version of a registered dataset with another format/mapping, its parent the old one.

    The kept upload is read again with the new mapping, and the old version's split is applied."""
    home = get_settings().home_abs
    with session_scope() as db:
        old = db.get(Dataset, dataset_id)
        if old is None:
            raise DatasetError(f"dataset {dataset_id} does not exist (studio dataset list)")
        source = home / old.source_path if old.source_path else None
        if source is None or not source.is_file():
            raise DatasetError(f"dataset {dataset_id} was registered without keeping its upload; add the file "
                               "again with the corrected mapping (studio dataset add FILE --map FIELD=COLUMN).")
        split = split_of(old.split, home)
        original_name, old_name = old.original_name, old.name
    return register(source, original_name=original_name, name=name or old_name, format=format, mapping=mapping,
                    drop_bad_rows=drop_bad_rows, split=split, model=model, max_seq_length=max_seq_length,
                    parent_id=dataset_id)


def split_of(stored: dict, home: Path) -> Split:
    """The :class:`Split` a version was registered with (for a derived version)."""
    if stored.get("kind") == "ratio":
        return Split(ratio=stored["eval_ratio"], seed=stored["seed"])
    if stored.get("kind") == "file":
        return Split(eval_file=home / stored["eval_source"], eval_name=stored["eval_file"])
    return Split()


def length_limit(model: str | int | None, max_seq_length: int | None) -> LengthLimit | None:
    """The too-long check for a base model (id or name), or None when no model is given."""
    if model in (None, ""):
        if max_seq_length:
            raise DatasetError("max_seq_length needs a model: its tokenizer and chat template count the tokens "
                               "(CLI: --model; UI: pick a model).")
        return None
    with session_scope() as db:
        base = q.model_by_ref(db, model)
        if base is None:
            raise DatasetError(f"model {model!r} does not exist (studio models list)")
        path, model_name = Path(base.path), base.name
    if max_seq_length is not None and max_seq_length < 1:
        raise DatasetError(f"max_seq_length {max_seq_length}: give a positive number of tokens.")
    return LengthLimit(ModelText.from_model_dir(path), max_seq_length or DEFAULT_MAX_SEQ_LENGTH, model_name)


def dataset_json(d: Dataset) -> dict:
    """One version as ``studio dataset list`` shows it."""
    return {"id": d.id, "name": d.name, "format": d.format, "rows": d.rows, "eval_rows": d.eval_rows,
            "dropped_rows": d.dropped_rows, "content_hash": d.content_hash, "original_name": d.original_name,
            "mapping": d.mapping, "split": d.split, "parent_id": d.parent_id, "stats": d.stats,
            "created_at": d.created_at.isoformat() if d.created_at else None}


def describe(db, d: Dataset) -> dict:
    """A version with its lineage (ancestors, derived versions) and the jobs and model versions that used it."""
    ancestors, p = [], d.parent
    while p is not None:
        ancestors.append({"id": p.id, "name": p.name, "format": p.format, "mapping": p.mapping})
        p = p.parent
    children = db.scalars(select(Dataset).where(Dataset.parent_id == d.id).order_by(Dataset.id))
    jobs = db.scalars(select(Job).where(Job.dataset_id == d.id).order_by(Job.id))
    versions = db.scalars(select(ModelVersion).where(ModelVersion.dataset_id == d.id).order_by(ModelVersion.id))
    eval_path = str(Path(d.path).with_name(EVAL_FILE)) if d.split else None
    return {
        **dataset_json(d), "path": d.path, "eval_path": eval_path, "ancestors": ancestors,
        "children": [{"id": c.id, "name": c.name, "mapping": c.mapping} for c in children],
        "jobs": [{"id": j.id, "kind": j.kind, "state": j.state, "method": (j.config or {}).get("method"),
                  "version_id": (j.result or {}).get("version_id"), "created_at": j.created_at.isoformat()}
                 for j in jobs],
        "versions": [{"id": v.id, "name": v.name, "method": v.method, "job_id": v.job_id,
                      "train_loss": (v.metrics or {}).get("train_loss"), "eval_loss": (v.metrics or {}).get("eval_loss")}
                     for v in versions],
    }


def _bad(report: IntakeReport) -> int:
    return report.total_rows - report.valid_rows


def _refuse_bad_rows(report: IntakeReport, evals: IntakeReport | None, drop_bad_rows: bool) -> None:
    if drop_bad_rows:
        return
    lines = [f"{r.original_name}: {r.summary()}" for r in (report, evals) if r is not None and _bad(r)]
    if lines:
        good = report.valid_rows + (evals.valid_rows if evals else 0)
        raise DatasetError("\n".join(lines) + f"\nFix these rows in the file, or register the {good} good rows "
                           "explicitly (CLI: --drop-bad-rows; UI: tick 'Drop the bad rows').")


def _write_version(work: Path, digest: str, report: IntakeReport, evals: IntakeReport | None,
                   held_out: int, seed: int) -> Path:
    """Lay the version's files out in ``work`` and move the folder into the store in one rename."""
    staged = work / "version"
    staged.mkdir()
    if held_out:
        split_rows(report.canonical_path, staged / ROWS_FILE, staged / EVAL_FILE, report.valid_rows, held_out, seed)
    else:
        shutil.move(str(report.canonical_path), staged / ROWS_FILE)
    if evals is not None:
        shutil.move(str(evals.canonical_path), staged / EVAL_FILE)
    rel = Path("datasets") / digest[:16]
    target = get_settings().path("datasets") / digest[:16]
    shutil.rmtree(target, ignore_errors=True)  # left by a registration that failed before its commit
    os.replace(staged, target)
    store.put(rel)  # workers without this home fetch it from the shared store (studio/store.py)
    return rel


def _keep_source(src: Path, source_digest: str) -> str:
    """Keep the upload (once per content) so that its mapping can be edited later; its path under home."""
    rel = Path("datasets") / "sources" / source_digest[:16]
    target = get_settings().home_abs / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(src, partial)
        os.replace(partial, target)
    return str(rel)
