"""Share a data set, version, job or base model with the owner's team (or stop sharing it).

Only the owner or an admin may change it (models_db.access refuses anyone else). The CLI's
`studio share` and the "Shared with my team" boxes of the Datasets and Versions tabs call these."""
from __future__ import annotations

import gradio as gr

from models_db import BaseModel, Dataset, Job, ModelVersion, session_scope
from models_db.access import hidden_reason
from studio.jobspec import SpecError
from studio.shell import friendly

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
        return {"kind": kind, "id": row.id, "shared": row.shared, "owner_id": row.owner_id}


def is_shared(kind: str, row_id: int | None) -> bool:
    if not row_id:
        return False
    with session_scope() as db:
        row = db.get(KINDS[kind], int(row_id))
        return bool(row and row.shared)


# --- the tabs' "Shared with my team" checkbox ----------------------------------------------------

def shared_box(kind: str, row_id: int | None) -> gr.Checkbox:
    """The checkbox's state for the row picked (off and inactive with none)."""
    return gr.Checkbox(value=is_shared(kind, row_id), interactive=bool(row_id))


def toggle(kind: str):
    """A handler for the checkbox's ``input`` event: (row_id, shared) -> the box as it now is."""
    @friendly
    def handler(row_id: int | None, shared: bool):
        if not row_id:
            raise gr.Error(f"Select a {kind} first.")
        out = set_shared(kind, int(row_id), shared)
        gr.Info(f"{kind.capitalize()} #{out['id']} is {'now shared with your team' if out['shared'] else 'private'}.")
        return gr.Checkbox(value=out["shared"])
    handler.__name__ = f"share_{kind}"
    return handler
