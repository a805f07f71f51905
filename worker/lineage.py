"""Rebuild a version's model from its lineage: the base, each ancestor's weights merged in, then its own."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from models_db import ModelVersion
from studio.settings import get_settings
from worker import methods
from worker.errors import UserFacingError


def chain(session: Session, version_id: int) -> list[ModelVersion]:
    """The version and its ancestors, oldest first."""
    out = []
    v = session.get(ModelVersion, version_id)
    while v is not None:
        out.append(v)
        v = v.parent
    return out[::-1]


def artifact(version: ModelVersion, name: str = "adapter") -> Path:
    return get_settings().home_abs / version.artifacts[name]


def load_chain(model, versions: list[ModelVersion], *, merge_last: bool):
    """Apply each version's saved weights onto ``model``; every ancestor must be mergeable
    (its weights become part of the next one's base)."""
    for i, v in enumerate(versions):
        m = methods.get(v.method)
        model = m.load(model, artifact(v))
        last = i == len(versions) - 1
        if not last or merge_last:
            if m.merge is None:
                raise UserFacingError(
                    f"version {v.id} was trained with {v.method}, which cannot be merged into the base weights, "
                    "so it cannot be the parent of another version or exported as a merged model.")
            model = m.merge(model)
    return model
