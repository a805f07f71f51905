"""Second pass: turn the upload into a stream of ``(row number, record or Problem)``.

Row numbers are what the person sees in their own tools: the line number for JSONL, CSV/TSV
(the header is line 1, so data starts at line 2) and text files; the 1-based record index for
JSON documents and Parquet files. Every reader streams: JSONL/CSV/text line by line, JSON
through :mod:`.jsonstream`, Parquet one batch of rows at a time; no line, record or field is held
beyond the bounds in :mod:`.limits` (a longer or deeper one is a row problem, or for CSV, whose parser
cannot skip it, a whole-file error).
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import DatasetError, Problem
from .jsonstream import JsonStream
from .limits import MAX_COLUMNS, MAX_DEPTH, MAX_ROW_CHARS, PARQUET_BATCH, PARQUET_BATCH_BYTES, measure
from .source import Source, human_bytes

Item = tuple[int, object]  # (row number, record dict / other JSON value / Problem)
DRAIN = 1 << 20

csv.field_size_limit(min(sys.maxsize, MAX_ROW_CHARS))  # long texts in one cell are normal here, up to a bound


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


def _lines(f) -> Iterator[str | None]:
    """The file's lines, none longer than MAX_ROW_CHARS (plus its newline): a longer one is read to its end
    in pieces and never held, and given as None."""
    while line := f.readline(MAX_ROW_CHARS + 1):
        if len(line) <= MAX_ROW_CHARS or line.endswith(("\n", "\r")):
            yield line
            continue
        while (piece := f.readline(DRAIN)) and not piece.endswith(("\n", "\r")):
            pass
        yield None


def _too_large(row: int, word: str) -> Problem:
    return Problem("too_large", row, None, f"{word} {row} is longer than {MAX_ROW_CHARS:,} characters (the limit of "
                                           "one row); split it, or leave it out")


def checked(row: int, value: object, word: str) -> object:
    """A parsed record, or the Problem when it is nested deeper than MAX_DEPTH or larger than one row."""
    depth, chars = measure(value)
    if depth > MAX_DEPTH:
        return Problem("too_deep", row, None, f"{word} {row} is nested more than {MAX_DEPTH} levels deep")
    if chars > MAX_ROW_CHARS:
        return _too_large(row, word)
    return value


def _jsonl(source: Source) -> Iterator[Item]:
    with source.open_text() as f:
        for lineno, line in enumerate(_lines(f), 1):
            if line is None:
                yield lineno, _too_large(lineno, "line")
                continue
            if not line.strip():
                continue
            try:
                yield lineno, checked(lineno, json.loads(line), "line")
            except RecursionError:  # json's own limit on nesting (about 1000 levels)
                yield lineno, Problem("too_deep", lineno, None, f"line {lineno} is nested more than {MAX_DEPTH} "
                                                                "levels deep")
            except ValueError as exc:
                msg = getattr(exc, "msg", str(exc))
                col = getattr(exc, "colno", None)
                where = f" (column {col})" if col else ""
                yield lineno, Problem("bad_json", lineno, None,
                                      f"line {lineno} is not valid JSON: {msg}{where}")


def _json(source: Source, is_field: Callable[[str], bool]) -> Iterator[Item]:
    with source.open_text() as f:
        for number, record in enumerate(JsonStream(f, source.name, is_field).records(), 1):
            yield number, checked(number, record, "record")


def _text(source: Source) -> Iterator[Item]:
    with source.open_text() as f:
        for lineno, line in enumerate(_lines(f), 1):
            if line is None:
                yield lineno, _too_large(lineno, "line")
                continue
            text = line.rstrip("\r\n")
            if text.strip():
                yield lineno, {"text": text}


def _csv(source: Source, delimiter: str) -> Reader:
    f = source.open_text(newline="")
    reader = csv.reader(_csv_lines(source.name, f), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        f.close()
        raise DatasetError(f"{source.name} is empty; upload a file with a header row and data rows.")
    except csv.Error as exc:
        f.close()
        raise DatasetError(f"{source.name}: the header row is not valid CSV ({exc}).") from exc
    except DatasetError:
        f.close()
        raise
    _check_header(source.name, header, f)
    kind = "tsv" if delimiter == "\t" else "csv"
    return Reader(kind, header, False, _csv_rows(source.name, f, reader, header), "row")


def _csv_lines(name: str, f) -> Iterator[str]:
    for number, line in enumerate(_lines(f), 1):
        if line is None:
            raise DatasetError(f"{name}: line {number} is longer than {MAX_ROW_CHARS:,} characters (the limit of one "
                               "row); split it, or check for a quote that is never closed.")
        yield line


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
    if len(header) > MAX_COLUMNS:
        f.close()
        raise DatasetError(f"{name}: the header row has {len(header):,} columns; a data set has at most "
                           f"{MAX_COLUMNS:,} (is this the right file, and the right delimiter?)")
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
                why = (f"a field is longer than {MAX_ROW_CHARS:,} characters: a quote that is never closed?"
                       if "field limit" in str(exc) else str(exc))
                raise DatasetError(f"{name}: line {start} is not valid CSV ({why}); "
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
        declared = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
        text = [f.name for f in pf.schema_arrow if _is_text(f.type)]
        if text:  # text columns stay dictionary-encoded until each row's size is known (a dictionary bomb)
            getattr(pf, "close", lambda: None)()
            pf = pq.ParquetFile(source.path, read_dictionary=text)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{source.name} is not a readable Parquet file ({exc}); "
                           "export it again.") from exc
    if source.limit and declared > source.limit:
        getattr(pf, "close", lambda: None)()
        raise DatasetError(f"{source.name} declares {human_bytes(declared)} of uncompressed data, over the "
                           f"{human_bytes(source.limit)} limit; split it into smaller files.")
    return Reader("parquet", columns, True, _parquet_rows(source, pf), "record")


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
        or pa.types.is_large_binary(kind)


def _row_sizes(batch):
    """Each row's bytes once decoded (dictionary columns expanded), without decoding them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for col in batch.columns:
        if pa.types.is_dictionary(col.type):
            lengths = pc.take(pc.binary_length(col.dictionary), col.indices).fill_null(0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            sizes += col.nbytes // max(1, batch.num_rows)  # dense: already in memory, spread evenly
    return sizes


def _parquet_rows(source: Source, pf) -> Iterator[Item]:
    name, row, total = source.name, 0, 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
            sizes = _row_sizes(batch)
            total += int(sizes.sum())
            if source.limit and total > source.limit:
                raise DatasetError(f"{name} expands to more than {human_bytes(source.limit)} once decoded (the "
                                   "decompressed size limit); reading was stopped. Split it into smaller files.")
            whole = int(sizes.sum()) <= PARQUET_BATCH_BYTES  # else one row at a time: a few huge rows
            records = batch.to_pylist() if whole else [None] * batch.num_rows
            for i, record in enumerate(records):
                row += 1
                if sizes[i] > MAX_ROW_CHARS:
                    yield row, _too_large(row, "record")
                    continue
                if record is None:
                    record = batch.slice(i, 1).to_pylist()[0]
                yield row, checked(row, record, "record")
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{name}: Parquet data could not be read after record {row} ({exc}); "
                           "export the file again.") from exc
    finally:
        getattr(pf, "close", lambda: None)()
