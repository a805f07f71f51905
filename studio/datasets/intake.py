"""``ingest``: parse, detect, validate row by row, normalise, deduplicate, hash — streaming.

Passes over the upload, each in bounded memory:

1. :func:`.source.scan` — sizes, gzip bomb guard, binary/UTF-8 check, digest of the bytes
   (the bounds on memory and time are in :mod:`.limits`);
2. read + detect + normalise — the first records are buffered to detect the format, then every
   record is checked and its canonical form written to a work file with its row number;
3. finalise — rows with a minority label type are dropped, duplicates found, rows too long for
   the chosen model found (with a :class:`.tokens.LengthLimit`), stats counted, and the valid rows
   written to ``<content_hash>.jsonl`` in ``out_dir`` (atomically renamed last).

All work files live in a temporary folder inside ``out_dir`` that is always removed; if ingest
raises, ``out_dir`` is left as it was (and removed if ingest created it).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from .benchmark_rows import looks_like_qa
from .dedup import SeenRows
from .errors import DatasetError, Found, Problem, ProblemLog
from .formats import FORMATS, detect, is_field_name
from .limits import MAX_COLUMNS, SAMPLE_CHARS, measure
from .names import check_name
from .normalize import Normalizer
from .readers import Reader, open_reader
from .report import IntakeReport, no_valid_rows_message, problem_groups
from .source import Source, scan
from .stats import Stats
from .tokens import LengthLimit

SAMPLE_RECORDS = 200
SAMPLE_ITEMS = 20_000
PREVIEW_ROWS = 5
MAX_LABELS = 10_000
RARE_LABEL_MIN_ROWS = 1000
HASH_VERSION = "finetune-studio-dataset/1"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: dumps() with options rebuilds it
_LABEL_TYPE_NAMES = {"str": ("text", "text"), "int": ("a whole number", "whole numbers"),
                     "bool": ("true/false", "true/false")}


def ingest(src: Path, *, original_name: str, out_dir: Path, format: str = "auto",
           mapping: dict | None = None, max_bytes: int = 2_000_000_000,
           max_decompressed_bytes: int | None = None, length_limit: LengthLimit | None = None) -> IntakeReport:
    """Validate the upload at ``src`` and write its valid canonical rows into ``out_dir``.

    ``original_name`` is only read for its extension and shown in messages (a name with a path
    in it is rejected). ``max_decompressed_bytes`` defaults to ``max_bytes``. With ``length_limit``,
    rows longer than its ``max_tokens`` for its model are ``too_long`` problems. Raises
    :class:`DatasetError` for whole-file problems; row problems are in the returned report.
    """
    name = check_name(original_name)
    if format != "auto" and format not in FORMATS:
        raise DatasetError(f"{name}: unknown format {format!r}; choose auto or one of {', '.join(FORMATS)}.")
    source = scan(Path(src), name, max_bytes, max_decompressed_bytes)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".intake-", dir=out_dir))
    found = Found()
    try:
        return _ingest(source, work, out_dir, format, mapping, length_limit, found)
    except BaseException as exc:
        if isinstance(exc, DatasetError) and exc.found is None:
            exc.found = found
        shutil.rmtree(work, ignore_errors=True)  # before removing out_dir if ingest created it
        if created:
            _remove_if_empty(out_dir)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # work files go on success too


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def content_hash(source: Source, fmt: str, mapping: dict[str, str], length_limit: LengthLimit | None = None) -> str:
    """SHA-256 over the decompressed bytes' digest, the file type, the format and the mapping (and
    the length check, which decides which rows are kept)."""
    parts = [HASH_VERSION, source.digest, source.file_type, fmt, json.dumps(mapping, sort_keys=True)]
    if length_limit is not None:
        parts.append(f"max_tokens={length_limit.key}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _ingest(source: Source, work: Path, out_dir: Path, fmt: str, mapping: dict | None,
            length_limit: LengthLimit | None, found: Found) -> IntakeReport:
    log = ProblemLog()
    reader = open_reader(source, is_field_name)
    try:
        sample, columns = _sample(reader, source.name)
        if not columns:
            _no_columns(source.name, sample, log, reader.row_word)
        found.columns = columns
        fmt, mapping = _qa_or_instruction(*detect(source.name, columns, fmt, mapping), fmt == "auto" and not mapping,
                                          sample)
        found.format, found.mapping = fmt, mapping
        normalizer = Normalizer(fmt, mapping, reader.typed, reader.row_word)
        candidates = work / "candidates.tsv"
        total, label_types = _normalise_all(chain(sample, reader.items), normalizer, candidates, log)
    finally:
        reader.items.close()
    if total == 0:
        raise DatasetError(f"{source.name} contains no records; upload a file with data rows.")
    digest = content_hash(source, fmt, mapping, length_limit)
    final = work / "canonical.jsonl"
    where = _Where(source.name, reader.row_word, mapping.get("label", "label"), length_limit)
    stats, preview = _finalise(candidates, final, work, fmt, label_types, log, where)
    if stats.rows == 0:
        raise DatasetError(no_valid_rows_message(source.name, total, log))
    _rare_labels(stats, log, where)
    target = out_dir / f"{digest}.jsonl"
    os.replace(final, target)
    return IntakeReport(
        original_name=source.name, file_type=reader.file_type, format=fmt, mapping=mapping,
        total_rows=total, valid_rows=stats.rows, problem_counts=dict(log.counts),
        problems=log.sorted_examples(), preview=preview, stats=stats.to_json(), content_hash=digest,
        canonical_path=target, problem_groups=problem_groups(log), source_digest=source.digest, columns=columns,
        too_long_lengths=where.too_long,
    )


def _sample(reader: Reader, name: str) -> tuple[list, list[str]]:
    """Buffer the first records to find the columns (bounded: records, items and characters are capped)."""
    sample, columns, records, chars = [], {}, 0, 0
    for item in reader.items:
        sample.append(item)
        if isinstance(item[1], dict):
            records += 1
            columns.update(dict.fromkeys(item[1]))
            if len(columns) > MAX_COLUMNS:
                raise DatasetError(f"{name}: the first records have more than {MAX_COLUMNS:,} different fields; a data "
                                   "set has at most that many columns (is this the right file?)")
            chars += measure(item[1])[1]
        if records >= SAMPLE_RECORDS or len(sample) >= SAMPLE_ITEMS or chars >= SAMPLE_CHARS:
            break
    return sample, reader.columns if reader.columns is not None else list(columns)


def _qa_or_instruction(fmt: str, mapping: dict[str, str], detected: bool, sample: list) -> tuple[str, dict[str, str]]:
    """A detected instruction file whose answers all carry a final-answer marker (``####``, ``\\boxed{``) is a
    qa benchmark: the column names alone cannot tell the two apart."""
    if not detected or fmt != "instruction" or set(mapping) - {"instruction", "output"}:
        return fmt, mapping
    answers = [item[mapping["output"]] for _, item in sample if isinstance(item, dict) and mapping["output"] in item]
    if not looks_like_qa(answers):
        return fmt, mapping
    return "qa", {"question": mapping["instruction"], "answer": mapping["output"]}


def _no_columns(name: str, sample: list, log: ProblemLog, row_word: str) -> None:
    """No record with named fields among the first items: explain from their problems."""
    if not sample:
        raise DatasetError(f"{name} contains no records; upload a file with data rows.")
    for row, item in sample:
        if isinstance(item, Problem):
            log.add(item)
        else:
            log.add(Problem("not_object", row, None, f"{row_word} {row} is not an object with named fields"))
    raise DatasetError(no_valid_rows_message(name, len(sample), log))


def _normalise_all(items, normalizer: Normalizer, path: Path, log: ProblemLog) -> tuple[int, Counter]:
    """Check every record; write ``row\\tchars\\tturns\\tsystem\\tlabel_type\\tjson`` lines."""
    total, label_types = 0, Counter()
    with open(path, "wb") as out:
        for row, item in items:
            total += 1
            if isinstance(item, Problem):
                log.add(item)
                continue
            result = normalizer(row, item)
            if result.problems:
                log.extend(result.problems)
                continue
            try:
                data = _ENCODER.encode(result.canonical).encode()
            except UnicodeEncodeError:
                log.add(Problem("bad_text", row, None, f"{normalizer.row_word} {row} contains an invalid "
                                "unicode escape (a lone surrogate such as \\ud800)"))
                continue
            if result.label_type:
                label_types[result.label_type] += 1
            out.write(b"%d\t%d\t%d\t%d\t%s\t%s\n" % (row, result.chars, result.turns, result.system,
                                                   result.label_type.encode(), data))
    return total, label_types


@dataclass
class _Where:
    """How to name things in messages: the file, the row word, the label column; the length check."""

    name: str
    row_word: str
    label: str
    length_limit: LengthLimit | None = None
    too_long: list[int] = field(default_factory=list)  # token lengths of the rows over the limit (histogram)


def _finalise(candidates: Path, final: Path, work: Path, fmt: str, label_types: Counter,
              log: ProblemLog, where: _Where) -> tuple[Stats, list[dict]]:
    """Drop minority label types, duplicates and rows too long; count stats; write the valid rows."""
    majority = label_types.most_common(1)[0][0] if len(label_types) > 1 else ""
    seen = SeenRows(work / "seen.sqlite")
    stats, preview = Stats(fmt), []
    try:
        with open(candidates, "rb") as f, open(final, "wb") as out:
            for line in f:
                row_b, chars, turns, system, ltype, data = line.split(b"\t", 5)
                row = int(row_b)
                if majority and ltype.decode() != majority:
                    log.add(_inconsistent_label(row, where, data, ltype.decode(), majority, label_types))
                    continue
                first = seen.first_row(data, row)
                if first is not None:
                    log.add(Problem("duplicate", row, None, f"{where.row_word} {row} repeats {where.row_word} {first}"))
                    continue
                if where.length_limit and _too_long(row, data, where, log):
                    continue
                label = _label(fmt, data)
                stats.add(row, int(chars), int(turns), system == b"1", label)
                if len(stats.labels) > MAX_LABELS:
                    raise DatasetError(f"{where.name} has more than {MAX_LABELS} distinct labels; this does not look "
                                       "like classification — choose the text or instruction format instead.")
                if len(preview) < PREVIEW_ROWS:
                    preview.append(json.loads(data))
                out.write(data)
    finally:
        seen.close()
    return stats, preview


def _label(fmt: str, data: bytes) -> str | None:
    """What the stats count for a row: a classification row's label; a feedback row's true/false."""
    if fmt == "classification":
        return json.loads(data)["label"]
    if fmt == "feedback":
        return "true" if json.loads(data)["label"] else "false"
    return None


def _too_long(row: int, data: bytes, where: _Where, log: ProblemLog) -> bool:
    limit = where.length_limit
    [tokens] = limit.model.lengths([json.loads(data)])
    if tokens <= limit.max_tokens:
        return False
    log.add(Problem("too_long", row, None, limit.problem_text(f"{where.row_word} {row}", tokens)))
    where.too_long.append(tokens)
    return True


def _inconsistent_label(row: int, where: _Where, data: bytes, ltype: str, majority: str, types: Counter) -> Problem:
    label = json.loads(data)["label"]
    total = sum(types.values())
    return Problem(
        "inconsistent_label", row, where.label,
        f"{where.row_word} {row}: {where.label} {label!r} is {_LABEL_TYPE_NAMES[ltype][0]} but most labels "
        f"({types[majority]} of {total}) are {_LABEL_TYPE_NAMES[majority][1]}; make the labels consistent",
    )


def _rare_labels(stats: Stats, log: ProblemLog, where: _Where) -> None:
    """Warn (row kept) about labels seen once among at least RARE_LABEL_MIN_ROWS rows (classification: a
    feedback set's one undesirable answer is no typo)."""
    if stats.rows < RARE_LABEL_MIN_ROWS or stats.fmt != "classification":
        return
    for label, count in stats.labels.items():
        if count == 1:
            row = stats.label_first_row[label]
            log.add(Problem("rare_label", row, where.label,
                            f"{where.row_word} {row}: {where.label} {label!r} appears only once in {stats.rows} rows "
                            "(a typo?); fix it or drop the row"))
