"""Plain read queries; each takes a Session. Every query here is filtered by the acting user's
ownership (models_db.access), so members get only their own and their team's shared rows."""
from __future__ import annotations

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from models_db.schema import BaseModel, Dataset, Job, JobState, ModelVersion, VersionParent, Worker


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


def parents(session: Session, version_id: int) -> list[tuple[ModelVersion, float]]:
    """A version's parents with their weights (several for a combined version), first parent first."""
    rows = session.execute(select(ModelVersion, VersionParent.weight)
                           .join(VersionParent, VersionParent.parent_id == ModelVersion.id)
                           .where(VersionParent.version_id == version_id)
                           .order_by(VersionParent.position, VersionParent.parent_id)).all()
    return [(p, w) for p, w in rows]


def children(session: Session, version_ids: list[int]) -> list[ModelVersion]:
    """Versions with one of ``version_ids`` among their parents."""
    via_rows = select(VersionParent.version_id).where(VersionParent.parent_id.in_(version_ids))
    return list(session.scalars(select(ModelVersion).where(ModelVersion.id.in_(via_rows)).order_by(ModelVersion.id)))


def ancestors(session: Session, version_id: int) -> list[ModelVersion]:
    """Parents, grandparents, ... of a version (nearest first; every parent of a combined version)."""
    out: dict[int, ModelVersion] = {}
    frontier = [version_id]
    while frontier:
        found = [p for vid in frontier for p, _ in parents(session, vid) if p.id not in out]
        for p in found:
            out.setdefault(p.id, p)
        frontier = list(dict.fromkeys(p.id for p in found))
    return list(out.values())


def descendants(session: Session, version_id: int) -> list[ModelVersion]:
    """Children, grandchildren, ... of a version, combined children included, every parent before its
    children (a version reached again further down moves there: the order stays topological)."""
    out: dict[int, ModelVersion] = {}
    frontier = [version_id]
    while frontier:
        kids = children(session, frontier)
        for k in kids:
            out.pop(k.id, None)
            out[k.id] = k
        frontier = [k.id for k in kids]
    return list(out.values())


def queue_positions(session: Session) -> dict[int, int]:
    """Queued jobs -> their place in line (1 = next), first come first served."""
    # everyone's queued jobs count for the place in line, whoever may see them (models_db.access)
    ids = session.scalars(select(Job.id).where(Job.state == JobState.queued).order_by(Job.id)
                          .execution_options(studio_unfiltered=True))
    return {job_id: i for i, job_id in enumerate(ids, 1)}


def active_jobs(session: Session, limit: int = 200) -> list[Job]:
    """Running jobs, then queued ones in the order they will start."""
    running = session.scalars(select(Job).where(Job.state == JobState.running).order_by(Job.started_at, Job.id))
    queued = session.scalars(select(Job).where(Job.state == JobState.queued).order_by(Job.id).limit(limit))
    return list(running) + list(queued)
