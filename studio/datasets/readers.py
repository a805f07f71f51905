"""Second pass: turn the upload into a stream of ``(row number, record or Problem)``.

Row numbers are what the person sees in their own tools: the line number for JSONL, CSV/TSV
(the header is line 1, so data starts at line 2) and text files; the 1-based record index for
JSON documents and Parquet files. Every reader streams: JSONL/CSV/text line by line, JSON
through :mod:`.jsonstream`, Parquet one batch of rows at a time.
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import DatasetError, Problem
from .jsonstream import JsonStream
from .source import Source

PARQUET_BATCH = 1000
Item = tuple[int, object]  # (row number, record dict / other JSON value / Problem)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts in one cell are normal here


@dataclass
class Reader:
    """A file's records as a stream, with what is known about its columns up front."""

    file_type: str
    columns: list[str] | None  # from a header or schema; None when found from the records
    typed: bool  # values keep their JSON/Parquet types (False: every value is a string)
    items: Iterator[Item]
    row_word: str  # "line" or "record", for messages


def open_reader(source: Source, is_field: Callable[[str], bool]) -> Reader:
    """Return a :class:`Reader` for ``source`` according to its file type."""
    kind = source.file_type
    if kind == "jsonl":
        return Reader(kind, None, True, _jsonl(source), "line")
    if kind == "json":
        return Reader(kind, None, True, _json(source, is_field), "record")
    if kind in ("csv", "tsv"):
        return _csv(source, "\t" if kind == "tsv" else ",")
    if kind == "parquet":
        return _parquet(source)
    return Reader("txt", ["text"], False, _text(source), "line")


def _jsonl(source: Source) -> Iterator[Item]:
    with source.open_text() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except ValueError as exc:
                msg = getattr(exc, "msg", str(exc))
                col = getattr(exc, "colno", None)
                where = f" (column {col})" if col else ""
                yield lineno, Problem("bad_json", lineno, None,
                                      f"line {lineno} is not valid JSON: {msg}{where}")


def _json(source: Source, is_field: Callable[[str], bool]) -> Iterator[Item]:
    with source.open_text() as f:
        yield from enumerate(JsonStream(f, source.name, is_field).records(), 1)


def _text(source: Source) -> Iterator[Item]:
    with source.open_text() as f:
        for lineno, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield lineno, {"text": text}


def _csv(source: Source, delimiter: str) -> Reader:
    f = source.open_text(newline="")
    reader = csv.reader(f, delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        f.close()
        raise DatasetError(f"{source.name} is empty; upload a file with a header row and data rows.")
    except csv.Error as exc:
        f.close()
        raise DatasetError(f"{source.name}: the header row is not valid CSV ({exc}).") from exc
    _check_header(source.name, header, f)
    kind = "tsv" if delimiter == "\t" else "csv"
    return Reader(kind, header, False, _csv_rows(source.name, f, reader, header), "row")


class CsvRow(int):
    """A CSV data row's number (1 = the first row after the header) that also knows the file line it
    starts on: a quoted value can span lines, so messages say both, "row 5 (line 9)"."""

    line: int

    def __new__(cls, number: int, line: int):
        row = super().__new__(cls, number)
        row.line = line
        return row

    def __str__(self) -> str:
        return f"{int(self)} (line {self.line})"

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731 - f"row {row}" reads the same


def _check_header(name: str, header: list[str], f) -> None:
    seen = set()
    for column in header:
        if column in seen:
            f.close()
            raise DatasetError(f"{name}: column {column!r} appears twice in the header row; "
                               "rename one of them.")
        seen.add(column)


def _csv_rows(name: str, f, reader, header: list[str]) -> Iterator[Item]:
    with f:
        start, number = reader.line_num + 1, 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(f"{name}: line {start} is not valid CSV ({exc}); "
                                   "fix the quoting on that line.") from exc
            line, start = start, reader.line_num + 1
            if not fields:  # a blank line
                continue
            number += 1
            row = CsvRow(number, line)
            if len(fields) != len(header):
                shown = ", ".join(header) if len(header) <= 8 else f"{', '.join(header[:8])}, ..."
                yield row, Problem(
                    "ragged_row", row, None,
                    f"row {row} has {len(fields)} fields but the header has {len(header)} ({shown})",
                )
                continue
            yield row, dict(zip(header, fields))


def _parquet(source: Source) -> Reader:
    import pyarrow.parquet as pq  # deferred: pyarrow is only needed for Parquet uploads

    try:
        pf = pq.ParquetFile(source.path)
        columns = list(pf.schema_arrow.names)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{source.name} is not a readable Parquet file ({exc}); "
                           "export it again.") from exc
    return Reader("parquet", columns, True, _parquet_rows(source.name, pf), "record")


def _parquet_rows(name: str, pf) -> Iterator[Item]:
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{name}: Parquet data could not be read after record {row} ({exc}); "
                           "export the file again.") from exc
    finally:
        getattr(pf, "close", lambda: None)()
