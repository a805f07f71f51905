"""Helpers shared by the dataset intake tests (files are built in tmp_path); holds no tests."""
from __future__ import annotations

import json
from pathlib import Path

from studio.datasets import ingest


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` to ``tmp_path/in/name`` and return the path."""
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def jsonl(rows) -> str:
    """Rows as JSON Lines text (strings are written verbatim as raw lines)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def run(tmp_path: Path, name: str, content: str | bytes, **kwargs):
    """Write the file and ingest it into ``tmp_path/out``."""
    path = write(tmp_path, name, content)
    return ingest(path, original_name=kwargs.pop("original_name", name), out_dir=tmp_path / "out", **kwargs)


def canonical(report) -> list[dict]:
    """The canonical rows written by ``report``."""
    return [json.loads(line) for line in report.canonical_path.read_text().splitlines()]


def by_kind(report, kind: str):
    """The example problems of one kind."""
    return [p for p in report.problems if p.kind == kind]
