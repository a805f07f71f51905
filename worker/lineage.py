"""Rebuild a version's model from its lineage: the base, each ancestor's weights merged in, then its own.

Continuing from a version works two ways. A mergeable parent (LoRA, full, ...) is merged into the base
and the child's method starts afresh on top. A non-mergeable parent (soft prompts, bottleneck adapters)
cannot be folded into the weights, so the child must use the same method and keeps training the
parent's own adapter: the child's artifact then holds the whole adapter and supersedes the parent's.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from models_db import ModelVersion
from worker import methods
from worker.errors import UserFacingError

LAST = ("merge", "inference", "train")


def chain(session: Session, version_id: int) -> list[ModelVersion]:
    """The version and the ancestors whose weights it builds on, oldest first."""
    out = []
    v = session.get(ModelVersion, version_id)
    while v is not None:
        out.append(v)
        v = built_on(session, v)
    return out[::-1]


def built_on(session: Session, v: ModelVersion) -> ModelVersion | None:
    """The version whose weights ``v``'s artifact applies to (None: the base). That is its parent, except
    for a combined version (worker.combine): its adapter applies to what all its parents started from, which
    is what its first parent is built on (the lineage rows, ``VersionParent``, are the one record of it)."""
    parent = session.get(ModelVersion, v.parent_id) if v.parent_id is not None else None
    if (v.config or {}).get("combination") is None or parent is None:
        return parent
    return built_on(session, parent)


def artifact(version: ModelVersion, name: str = "adapter") -> Path:
    """The local folder of a version's artifact, fetched from the shared store when trained elsewhere."""
    from studio import store

    return store.local(version.artifacts[name])


def load_chain(model, versions: list[ModelVersion], *, last: str):
    """Rebuild ``versions[-1]`` on ``model`` (the base): ancestors merged in, then the version itself
    merged (``last="merge"``), loaded for inference, or loaded trainable to continue it (``"train"``)."""
    if last not in LAST:
        raise ValueError(f"last must be one of {LAST}, got {last!r}")
    for i, v in enumerate(versions):
        m = methods.get(v.method)
        child = versions[i + 1] if i + 1 < len(versions) else None
        if child is not None and not m.mergeable:
            try:
                methods.check_continuation(v.id, v.method, child.method)
            except methods.MethodError as e:
                raise UserFacingError(str(e)) from None
            continue  # the child kept training this adapter: its own artifact holds it
        mode = last if child is None else "merge"
        model = m.load(model, artifact(v), trainable=mode == "train")
        if mode == "merge":
            if m.merge is None:
                raise UserFacingError(
                    f"version {v.id} was trained with {v.method}, which cannot be merged into the base weights; "
                    "export its adapter instead (not merged).")
            model = m.merge(model)
    return model
