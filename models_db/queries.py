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


def descendants(session: Session, version_id: int) -> list[ModelVersion]:
    """Children, grandchildren, ... of a version (breadth first: every parent before its children)."""
    out, frontier = [], [version_id]
    while frontier:
        kids = list(session.scalars(select(ModelVersion).where(ModelVersion.parent_id.in_(frontier))
                                    .order_by(ModelVersion.id)))
        out += kids
        frontier = [k.id for k in kids]
    return out


def queue_positions(session: Session) -> dict[int, int]:
    """Queued jobs -> their place in line (1 = next), first come first served."""
    ids = session.scalars(select(Job.id).where(Job.state == "queued").order_by(Job.id))
    return {job_id: i for i, job_id in enumerate(ids, 1)}


def active_jobs(session: Session, limit: int = 200) -> list[Job]:
    """Running jobs, then queued ones in the order they will start."""
    running = session.scalars(select(Job).where(Job.state == "running").order_by(Job.started_at, Job.id))
    queued = session.scalars(select(Job).where(Job.state == "queued").order_by(Job.id).limit(limit))
    return list(running) + list(queued)
