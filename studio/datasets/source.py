"""First pass over the upload: size limits, gzip, binary sniffing, UTF-8 check, content digest.

The whole (decompressed) byte stream is read once in 1 MiB chunks before any parsing, so every
whole-file error about the *bytes* is raised before a single row is looked at, memory stays
bounded, and the content digest covers every byte even where a parser stops early.

The digest is the SHA-256 of the **decompressed** bytes: ``data.jsonl`` and ``data.jsonl.gz``
holding the same records are the same dataset (gzip headers carry timestamps and file names, so
their compressed bytes differ for identical content). Parquet files are hashed as they are.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError
from .names import split_name

CHUNK = 1 << 20
HEAD_CHARS = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_BAD_GZIP = (OSError, EOFError, zlib.error)


@dataclass
class Source:
    """A scanned upload: where it is, how to read it, and what its bytes hash to."""

    path: Path
    name: str
    gz: bool
    file_type: str
    digest: str
    size: int

    def open_text(self, newline: str | None = None):
        """Open the decompressed content as UTF-8 text (a leading BOM is dropped)."""
        raw = gzip.open(self.path, "rb") if self.gz else open(self.path, "rb")  # noqa: SIM115  the caller closes the wrapper
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline)


def human_bytes(n: int) -> str:
    """Render a byte count like ``1.5 GB``."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"  # pragma: no cover


def scan(path: Path, name: str, max_bytes: int, max_decompressed_bytes: int | None) -> Source:
    """Check the upload's bytes and return a :class:`Source`; raise DatasetError if unusable."""
    if not path.is_file():
        raise DatasetError(f"{name}: the uploaded file is missing on the server; upload it again.")
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetError(
            f"{name} is {human_bytes(size)}, over the {human_bytes(max_bytes)} upload limit; "
            "split it into smaller files or raise the size limit."
        )
    if size == 0:
        raise DatasetError(f"{name} is empty (0 bytes); upload a file that contains data.")
    with open(path, "rb") as f:
        magic = f.read(4)
    name_type, name_gz = split_name(name)
    gz = magic.startswith(GZIP_MAGIC)
    if name_gz and not gz:
        raise DatasetError(f"{name} is named .gz but is not gzip-compressed; rename or recompress it.")
    if magic == PARQUET_MAGIC:
        return Source(path, name, False, "parquet", _hash_file(path), size)
    if name_type == "parquet":
        raise DatasetError(
            f"{name} is named .parquet but is not a Parquet file (no PAR1 header); "
            "upload the original Parquet file (gzip-compressed Parquet is not supported)."
        )
    limit = max_decompressed_bytes if max_decompressed_bytes is not None else max_bytes
    digest, total, head, blank = _scan_text(path, name, gz, limit)
    if blank:
        raise DatasetError(f"{name} is empty (only whitespace); upload a file that contains data.")
    return Source(path, name, gz, sniff_type(name_type, head), digest, total)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _scan_text(path: Path, name: str, gz: bool, limit: int) -> tuple[str, int, str, bool]:
    """Hash and validate the decompressed stream; return (digest, size, first chars, all blank)."""
    h = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    total, head, blank = 0, "", True
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            while chunk := f.read(CHUNK):
                if total + len(chunk) > limit:
                    raise DatasetError(_too_big(name, gz, limit))
                _check_text(name, chunk, decoder, total)
                if len(head) < HEAD_CHARS:
                    head += chunk[: HEAD_CHARS * 4].decode("utf-8", "ignore")[:HEAD_CHARS]
                blank = blank and not chunk.replace(b"\xef\xbb\xbf", b"").strip()
                h.update(chunk)
                total += len(chunk)
            _check_text(name, b"", decoder, total, final=True)
    except _BAD_GZIP as exc:
        raise DatasetError(f"{name} is not a valid gzip file ({exc}); recompress it or upload it uncompressed.") from exc
    return h.hexdigest(), total, head.lstrip("\ufeff"), blank


def _check_text(name: str, chunk: bytes, decoder, offset: int, final: bool = False) -> None:
    nul = chunk.find(b"\x00")
    if nul >= 0:
        raise DatasetError(_binary(name, offset + nul))
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        raise DatasetError(_binary(name, offset + exc.start, utf8=True)) from exc


def _binary(name: str, offset: int, utf8: bool = False) -> str:
    what = "is not UTF-8 text" if utf8 else "contains binary data"
    return (
        f"{name} {what} (at byte {offset}); upload a UTF-8 JSONL, JSON, CSV, TSV or text file, "
        "or a Parquet file, optionally gzip-compressed."
    )


def _too_big(name: str, gz: bool, limit: int) -> str:
    if gz:
        return (
            f"{name} decompresses to more than {human_bytes(limit)} (the decompressed size limit); "
            "decompression was stopped. This looks like a gzip bomb or a file that is too large."
        )
    return f"{name} is over the {human_bytes(limit)} size limit; split it into smaller files."


def sniff_type(name_type: str | None, head: str) -> str:
    """Pick the file type from the extension, looking at the first characters when unsure."""
    text = head.lstrip("\ufeff").lstrip()
    if name_type in ("csv", "tsv", "txt", "jsonl"):
        return name_type
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "jsonl" if _looks_like_jsonl(text) else "json"
    if name_type == "json":
        return "json"
    first_line = text.split("\n", 1)[0]
    if "\t" in first_line:
        return "tsv"
    return "csv" if "," in first_line else "txt"


def _looks_like_jsonl(text: str) -> bool:
    """True when the first line is a whole JSON object and another line follows it."""
    first, _, rest = text.partition("\n")
    try:
        value = json.loads(first)
    except ValueError:
        return False
    return isinstance(value, dict) and rest.strip().startswith("{")
