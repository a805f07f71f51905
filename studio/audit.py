"""The audit log: who logged in (or failed to), and who changed accounts, trust, sharing or deleted a version.

Written by the login guard (studio/login_guard.py), studio.auth (users add, disable, enable, role, unlock),
`studio models trust`, studio.sharing and studio.versions.delete; read by admins only, in the Fleet tab's
"Audit log" box and with `studio audit list`. Rows are never changed or deleted by the studio.
"""
from __future__ import annotations

import getpass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_db import session_scope
from models_db.access import NOBODY, Viewer, current, sees_all
from models_db.schema import AuditEvent

COLUMNS = ["when (UTC)", "who", "action", "target", "address", "detail"]


class AuditAccessError(PermissionError):
    """The audit log was asked for by someone who is not an admin."""


def actor_name(viewer=None) -> str:
    """How the audit names whoever is acting: the account, or the local user (embedded studio, admin CLI)."""
    viewer = current() if viewer is None else viewer
    if isinstance(viewer, Viewer):
        return viewer.name
    if viewer is NOBODY:
        return "(nobody)"
    try:
        return f"(local: {getpass.getuser()})"
    except (KeyError, OSError):  # no passwd entry (a container)
        return "(local)"


def record(action: str, target: str = "", *, detail: str = "", actor: str | None = None,
           address: str | None = None, db: Session | None = None) -> None:
    """Append one event; inside ``db`` when given (the action's own transaction), else on its own."""
    event = AuditEvent(actor=(actor or actor_name())[:200], action=action[:40], target=target[:200],
                       address=(address or None) and address[:64], detail=detail[:2000])
    if db is not None:
        db.add(event)
        return
    with session_scope() as own:
        own.add(event)


def recent(*, limit: int = 200, action: str = "", since: datetime | None = None) -> list[dict]:
    """The newest events first (``action``: a prefix such as ``login`` or ``user.``); admins only."""
    if not sees_all(current()):
        raise AuditAccessError("only an admin may read the audit log")
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(int(limit), 10_000)))
    if action:
        stmt = stmt.where(AuditEvent.action.startswith(action))
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    with session_scope() as db:
        return [{"id": e.id, "at": e.at.isoformat(timespec="seconds"), "actor": e.actor, "action": e.action,
                 "target": e.target, "address": e.address, "detail": e.detail} for e in db.scalars(stmt)]


def rows(events: list[dict]) -> list[list]:
    """Events as table rows (COLUMNS)."""
    return [[e["at"].replace("T", " "), e["actor"], e["action"], e["target"], e["address"] or "", e["detail"]]
            for e in events]
