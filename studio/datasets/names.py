"""The uploaded file's name: checked, never used as a path, and read for its extension only.

Policy: a name holding a directory part (``../x.jsonl``, ``/etc/passwd``, ``C:\\x.csv``,
``a/b.csv``) is **rejected** with a :class:`DatasetError`, not sanitised, so the person learns
that the name was odd instead of having it silently rewritten. The intake writes only files it
names itself (by content hash) in ``out_dir``.
"""
from __future__ import annotations

import re

from .errors import DatasetError

FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet", "txt")

_SUFFIX_TYPES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
    ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet", ".txt": "txt", ".text": "txt",
}
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_name(original_name: str) -> str:
    """Return ``original_name`` if it is a plain file name, else raise :class:`DatasetError`."""
    name = original_name or ""
    shown = repr(name)
    if not name.strip():
        raise DatasetError("The uploaded file has no name; upload it under a name like data.jsonl.")
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise DatasetError(f"File name {shown} contains control characters; rename the file.")
    if "/" in name or "\\" in name or _DRIVE.match(name) or name in (".", ".."):
        raise DatasetError(
            f"File name {shown} is rejected: it contains a path ('../', '/' or a drive), which is "
            "never used as a path; upload the file under a plain name such as data.jsonl."
        )
    return name


def split_name(name: str) -> tuple[str | None, bool]:
    """Return (file type from the extension or None, whether the name ends in .gz)."""
    lower = name.lower()
    gz = lower.endswith(".gz")
    if gz:
        lower = lower[:-3]
    for suffix, file_type in _SUFFIX_TYPES.items():
        if lower.endswith(suffix):
            return file_type, gz
    return None, gz
