"""The intake's bounds: what any upload may cost in memory and time, whatever its bytes.

An upload is read in 1 MiB chunks and parsed one row at a time, so the intake holds at most:

- one row: a JSONL/text line, a CSV row or a JSON record of at most :data:`MAX_ROW_CHARS` characters (a
  longer one is a ``too_large`` row problem, or a whole-file error for CSV and JSON documents, where the
  parser cannot skip it), nested at most :data:`MAX_DEPTH` levels (deeper is a ``too_deep`` problem),
  with at most :data:`MAX_COLUMNS` columns;
- the detection sample: the first 200 records, and at most :data:`SAMPLE_CHARS` characters of them.

A gzip upload may decompress to at most :data:`GZIP_MAX_RATIO` times its compressed size (at least
:data:`GZIP_RATIO_FLOOR` bytes are always allowed), and never beyond the decompressed limit (the upload
limit, ``STUDIO_MAX_UPLOAD_MB``, unless told otherwise): a bomb is stopped after reading that much, in
chunks. Zip archives are not an upload format: they are refused as binary data before anything is
unpacked. A Parquet file is held to the same limits: its column chunks must declare at most the
decompressed limit in total, its rows are decoded :data:`PARQUET_BATCH` at a time (one at a time when a
batch would exceed :data:`PARQUET_BATCH_BYTES`), each row's size is known before it is decoded (text
columns stay dictionary-encoded until then), and the decoded total may not pass the decompressed limit
nor :data:`GZIP_MAX_RATIO` times the file's size (a dictionary bomb).

Together: the intake's peak memory stays under :data:`MEMORY_BOUND` (tests/studio/test_datasets_fuzz.py
measures it, with Python's allocator traced, for the worst cases: a row at the limit, a bomb, a
runaway CSV quote, deep nesting), and its time is linear in the decompressed size.
"""
from __future__ import annotations

MAX_ROW_CHARS = 8 * 2**20  # 8 Mi characters: far beyond any model's context
MAX_DEPTH = 64  # nesting of one record (chat messages need 3)
MAX_COLUMNS = 10_000  # columns of a header (or keys found in the sample)
SAMPLE_CHARS = 32 * 2**20  # the detection sample's characters
GZIP_MAX_RATIO = 200  # real JSONL/CSV compresses 3-20x; gzip's own ceiling is about 1030x
GZIP_RATIO_FLOOR = 64 * 2**20
PARQUET_BATCH = 64
PARQUET_BATCH_BYTES = 16 * 2**20  # a batch of rows larger than this once decoded is decoded one row at a time
MEMORY_BOUND = 512 * 2**20


def measure(value: object, max_depth: int = MAX_DEPTH) -> tuple[int, int]:
    """(nesting depth, characters of its strings and keys) of a parsed record, without recursion; the
    walk stops at ``max_depth + 1``."""
    depth, chars, stack = 0, 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            chars += len(item)
            continue
        if not isinstance(item, (dict, list, tuple)):
            chars += 8
            continue
        depth = max(depth, level)
        if depth > max_depth:
            return depth, chars
        if isinstance(item, dict):
            chars += sum(len(k) if isinstance(k, str) else 8 for k in item)
            stack.extend((v, level + 1) for v in item.values())
        else:
            stack.extend((v, level + 1) for v in item)
    return depth, chars
