"""The shared artifact store: where datasets, version artifacts, export zips and imported base models
live so that every machine of the fleet can reach them (no torch here).

* Default (``STUDIO_STORE_URL`` unset): ``STUDIO_HOME`` is the store, a path every process shares (one
  machine, or an NFS mount on several). Nothing is copied; every call below is a no-op or a path join.
* ``STUDIO_STORE_URL`` set to any fsspec URL (``s3://bucket/prefix`` with the standard ``AWS_*``
  variables, after ``pip install finetune-studio[s3]``; ``file:///mnt/shared``; ``gcs://...``): a process
  *puts* what it produces under the same relative key it has under its home (``datasets/ab12.../rows.jsonl``,
  ``versions/job-7/adapter``), and a process that needs a key it does not have fetches it once into
  ``STUDIO_HOME/cache/store/KEY``. Base models are fetched the same way, so each worker keeps its own
  local copy of the bases it trains.

Keys are the relative paths the database already records (``Dataset.path``, ``ModelVersion.artifacts``,
an export job's ``zip``), so rows stay the same whichever store is configured.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path, PurePosixPath

from studio.settings import get_settings

CACHE = ("cache", "store")


class StoreError(RuntimeError):
    """The store is misconfigured or lacks a key; the message says which and what to do."""


@lru_cache(maxsize=4)
def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with datasets
        raise StoreError("STUDIO_STORE_URL needs fsspec: pip install 'finetune-studio[s3]'") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"STUDIO_STORE_URL={url!r}: {e}. For s3:// install the extra: "
                         f"pip install 'finetune-studio[s3]' (fsspec cannot open {scheme}:// without it)") from None
    return fs, root.rstrip("/")


def store_url() -> str | None:
    """The configured store URL; None when STUDIO_HOME itself is the store."""
    return get_settings().store_url or None


def _key(rel: str | Path) -> str:
    """A relative key, checked: never absolute, never climbing out of the store."""
    p = PurePosixPath(str(rel).replace(os.sep, "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise StoreError(f"{rel!r} is not a relative path inside the store")
    return str(p)


def _remote(rel: str | Path) -> tuple[object, str]:
    fs, root = _filesystem(store_url())
    return fs, f"{root}/{_key(rel)}"


def put(rel: str | Path) -> None:
    """Publish ``STUDIO_HOME/rel`` (a file or a folder) under the key ``rel``; a no-op without a store URL."""
    if not store_url():
        return
    local = get_settings().home_abs / _key(rel)
    if not local.exists():
        raise StoreError(f"cannot publish {rel}: {local} does not exist")
    fs, target = _remote(rel)
    if local.is_dir():
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            dest = f"{target}/{f.relative_to(local).as_posix()}"
            fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(f), dest)
    else:
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local), target)


def exists(rel: str | Path) -> bool:
    """Whether ``rel`` is in the store (locally under the home, or at the store URL)."""
    if (get_settings().home_abs / _key(rel)).exists():
        return True
    if not store_url():
        return False
    fs, target = _remote(rel)
    return fs.exists(target)


def local(rel: str | Path, *, into_home: bool = False) -> Path:
    """A local path holding ``rel``: under the home when this process has it (it produced it, or there
    is no store URL), else fetched once into ``STUDIO_HOME/cache/store/rel`` (``into_home``: into
    ``STUDIO_HOME/rel``, e.g. an export zip the web app serves from its exports folder). A folder is
    fetched whole."""
    s = get_settings()
    own = s.home_abs / _key(rel)
    if own.exists() or not store_url():
        return own
    cached = own if into_home else s.home_abs.joinpath(*CACHE) / _key(rel)
    if cached.exists():
        return cached
    fs, source = _remote(rel)
    if not fs.exists(source):
        raise StoreError(f"{rel} is neither under {s.home_abs} nor in the store {store_url()}: was it produced "
                         "with the same STUDIO_STORE_URL?")
    cached.parent.mkdir(parents=True, exist_ok=True)
    # fetch beside the final place, then rename: a process killed mid-download leaves no half copy behind
    stage = Path(tempfile.mkdtemp(dir=cached.parent, prefix=f".{cached.name}."))
    try:
        if fs.isdir(source):
            for remote_file in fs.find(source):
                dest = stage / PurePosixPath(remote_file[len(source.rstrip("/")) + 1:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(remote_file, str(dest))
            try:
                os.replace(stage, cached)
            except OSError:  # another process (a second rank) fetched it meanwhile: keep theirs
                if not cached.exists():
                    raise
        else:
            fs.get_file(source, str(stage / cached.name))
            os.replace(stage / cached.name, cached)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return cached


def local_dataset(path: str) -> Path:
    """The local rows file of a dataset version (``Dataset.path``), its folder (stored eval split
    included) fetched whole when this process does not have it."""
    rel = PurePosixPath(path)
    return local(rel.parent) / rel.name


def model_key(base_path: str) -> str:
    """The store key of an imported base model: ``models/NAME`` (the importer's folder under the home)."""
    return f"models/{Path(base_path).name}"


def local_model(base_path: str) -> str:
    """Where this worker loads a base model from: its recorded path when present on this machine, else
    its own copy fetched from the store once (each worker caches the bases it trains)."""
    if Path(base_path).exists() or not store_url():
        return base_path
    return str(local(model_key(base_path)))


def listdir(rel: str | Path) -> list[str]:
    """Names directly under ``rel`` in the store URL (empty without a store URL or when absent)."""
    if not store_url():
        return []
    fs, target = _remote(rel)
    if not fs.exists(target):
        return []
    return sorted(PurePosixPath(p.rstrip("/")).name for p in fs.ls(target, detail=False))


def remove(rel: str | Path) -> None:
    """Delete ``rel`` (file or folder) from the store URL; a no-op without one or when absent."""
    if not store_url():
        return
    fs, target = _remote(rel)
    if fs.exists(target):
        fs.rm(target, recursive=True)
