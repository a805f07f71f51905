"""Plain read queries; each takes a Session."""
from __future__ import annotations

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from models_db.schema import BaseModel, Dataset, Job, ModelVersion, Worker


def list_models(session: Session) -> list[BaseModel]:
    return list(session.scalars(select(BaseModel).order_by(BaseModel.id)))


def model_by_ref(session: Session, ref: str | int) -> BaseModel | None:
    """A base model by id or by name."""
    if isinstance(ref, int) or str(ref).isdigit():
        return session.get(BaseModel, int(ref))
    return session.scalar(select(BaseModel).where(BaseModel.name == ref))


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(desc(Dataset.id))))


def dataset_by_hash(session: Session, content_hash: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.content_hash == content_hash))


def list_jobs(session: Session, kind: str | None = "train", limit: int = 200) -> list[Job]:
    q = select(Job).order_by(desc(Job.id)).limit(limit)
    if kind:
        q = q.where(Job.kind == kind)
    return list(session.scalars(q))


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(desc(ModelVersion.id))))


def list_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.id)))


def ancestors(session: Session, version_id: int) -> list[ModelVersion]:
    """Parent, grandparent, ... of a version (nearest first)."""
    out, v = [], session.get(ModelVersion, version_id)
    while v is not None and v.parent_id is not None:
        v = session.get(ModelVersion, v.parent_id)
        out.append(v)
    return out
