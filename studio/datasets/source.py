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
from .limits import GZIP_MAX_RATIO, GZIP_RATIO_FLOOR
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
    limit: int = 0  # the decompressed bytes it may expand to (Parquet's rows are counted against it as read)

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
    limit = max_decompressed_bytes if max_decompressed_bytes is not None else max_bytes
    if magic == PARQUET_MAGIC:  # decoded, it may expand like gzip (compressed pages, dictionaries)
        return Source(path, name, False, "parquet", _hash_file(path), size, _bomb_limit(limit, size))
    if name_type == "parquet":
        raise DatasetError(
            f"{name} is named .parquet but is not a Parquet file (no PAR1 header); "
            "upload the original Parquet file (gzip-compressed Parquet is not supported)."
        )
    if gz:
        limit = _bomb_limit(limit, size)
    digest, total, head, blank = _scan_text(path, name, gz, limit)
    if blank:
        raise DatasetError(f"{name} is empty (only whitespace); upload a file that contains data.")
    return Source(path, name, gz, sniff_type(name_type, head), digest, total, limit)


def _bomb_limit(limit: int, size: int) -> int:
    """A compressed file stops at a ratio of its size, long before the decompressed limit (a bomb)."""
    return min(limit, max(GZIP_RATIO_FLOOR, GZIP_MAX_RATIO * size))


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
                if total == 0:
                    _check_encoding(name, chunk)
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


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
              (b"\xfe\xff", "UTF-16"))


def _check_encoding(name: str, head: bytes) -> None:
    """Text in a wide encoding (UTF-16/32, with its byte-order mark or ASCII-like with every other byte 0) is
    named as such: "binary data" would send the person looking for the wrong problem."""
    wide = next((enc for bom, enc in _WIDE_BOMS if head.startswith(bom)), None)
    sample = head[:256]
    if wide is None and len(sample) >= 8 and (sample[1::2].count(0) > 0.9 * len(sample[1::2])
                                              or sample[0::2].count(0) > 0.9 * len(sample[0::2])):
        wide = "UTF-16"
    if wide:
        raise DatasetError(f"{name} is {wide} text; save it as UTF-8 (most editors offer it under 'Save as' → "
                           "encoding; `iconv -f UTF-16 -t UTF-8` converts it) and upload it again.")


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
    hint = (" If it is text in another encoding (Latin-1 or Windows-1252, as older spreadsheets save CSV), "
            "save it as UTF-8 ('CSV UTF-8') or convert it with `iconv -f latin1 -t utf-8`.") if utf8 else (
            " Archives (zip, tar) are not unpacked: upload the data file itself.")
    return (
        f"{name} {what} (at byte {offset}); upload a UTF-8 JSONL, JSON, CSV, TSV or text file, "
        "or a Parquet file, optionally gzip-compressed." + hint
    )


def _too_big(name: str, gz: bool, limit: int) -> str:
    if gz:
        return (
            f"{name} decompresses to more than {human_bytes(limit)} (the decompressed size limit, and at most "
            f"{GZIP_MAX_RATIO} times the compressed size); decompression was stopped. This looks like a gzip "
            "bomb or a file that is too large: upload it uncompressed, or split it."
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
