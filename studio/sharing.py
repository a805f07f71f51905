"""Share a data set, version, job or base model with the owner's team (or stop sharing it).

Only the owner or an admin may change it (models_db.access refuses anyone else). The CLI's
`studio share` and the "Shared with my team" boxes of the Datasets and Versions tabs (studio/tabs/share_box.py)
call these."""
from __future__ import annotations

from models_db import BaseModel, Dataset, Job, ModelVersion, session_scope
from models_db.access import hidden_reason
from studio import audit
from studio.jobspec import SpecError

KINDS = {"dataset": Dataset, "version": ModelVersion, "job": Job, "model": BaseModel}


def _row(db, kind: str, row_id: int):
    cls = KINDS[kind]
    row = db.get(cls, int(row_id))
    if row is None:
        raise SpecError(hidden_reason(db, cls, int(row_id)) or f"{kind} {row_id} does not exist")
    return row


def set_shared(kind: str, row_id: int, shared: bool) -> dict:
    """Turn team sharing of a row on or off; returns {"kind", "id", "shared", "owner_id"}."""
    with session_scope() as db:
        row = _row(db, kind, row_id)
        row.shared = bool(shared)
        db.flush()  # a refused change (not the owner) raises here, before the audit line
        audit.record("share", f"{kind} {row.id}", detail="shared with the team" if row.shared else "private", db=db)
        return {"kind": kind, "id": row.id, "shared": row.shared, "owner_id": row.owner_id}


def is_shared(kind: str, row_id: int | None) -> bool:
    if not row_id:
        return False
    with session_scope() as db:
        row = db.get(KINDS[kind], int(row_id))
        return bool(row and row.shared)
