"""Who sees and changes which rows: the one place that filters by owner.

A *viewer* is the person acting: a :class:`Viewer` (an account), ``None`` (the embedded single user,
the CLI without ``STUDIO_USER``, a worker: sees everything) or :data:`NOBODY` (a server that requires
accounts got a request without a valid one: sees nothing, changes nothing).

Rules (docs/security.md):
- an admin, and ``None``, see and change every row;
- a member sees and changes the rows they own, and rows ``shared`` by someone of their own team;
  rows without an owner (made in embedded mode or by the admin CLI) are visible to members only when
  ``shared`` (base models are shared by default, so members can train on them);
- only the owner or an admin turns ``shared`` on or off;
- a playground generation (``PRIVATE``) is its asker's alone: sharing a version shares the model, not
  the prompts people typed into it, so a member sees and reuses only their own generations.
- a preference vote (``PRIVATE``) is its voter's alone, for the same reason: it holds the prompt and both answers.

How: a ``do_orm_execute`` hook adds ``with_loader_criteria`` for every owned table to every ORM
SELECT, UPDATE and DELETE (SQLAlchemy's documented multi-tenant pattern), so ``session.get``, the
queries in ``models_db.queries`` and the tabs' own selects are all filtered without each call
remembering to. A ``before_flush`` hook stamps ``owner_id`` on new rows and refuses changes to rows
the viewer may not change. Who the viewer is comes from a resolver: a context variable by default
(the CLI's ``STUDIO_USER``), the logged-in Gradio user in `studio serve` (studio.auth).
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import and_, event, false, inspect, or_, select
from sqlalchemy.orm import Session, with_loader_criteria

from models_db.schema import BaseModel, Dataset, Generation, Job, ModelVersion, PreferenceVote, Sweep, User

OWNED = (BaseModel, Dataset, Job, ModelVersion, Sweep)  # tables with owner_id + shared
PRIVATE = (Generation, PreferenceVote)  # tables with owner_id only: a member's own rows, never shared
NOUNS = {BaseModel: "model", Dataset: "data set", Job: "job", ModelVersion: "version", Generation: "generation",
         PreferenceVote: "vote", Sweep: "sweep"}
UNFILTERED = "studio_unfiltered"  # execution option: skip the owner filter (existence checks, auth)


class AccessError(ValueError):
    """A change to a row the viewer may not change; the message says whose it is and what to do."""


@dataclass(frozen=True)
class Viewer:
    """The account acting on the studio."""
    id: int
    name: str
    role: str = "member"
    team: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class _Nobody:
    """A request without a valid account on a server that requires one."""

    def __repr__(self) -> str:
        return "NOBODY"


NOBODY = _Nobody()
_UNSET = object()
_current: contextvars.ContextVar = contextvars.ContextVar("studio_viewer", default=_UNSET)


def _no_resolver() -> None:
    """Until the UI registers its resolver (set_resolver), no viewer is acting."""
    return None


_resolver: Callable[[], Viewer | _Nobody | None] = _no_resolver


def current() -> Viewer | _Nobody | None:
    """The viewer acting now: the one :func:`acting_as` set, else the resolver's (see the module docstring)."""
    explicit = _current.get()
    return _resolver() if explicit is _UNSET else explicit


def set_resolver(fn: Callable[[], Viewer | _Nobody | None] | None) -> None:
    """Where the viewer comes from outside :func:`acting_as` (studio.auth installs the Gradio login one;
    None restores the default, everyone)."""
    global _resolver
    _resolver = fn or (lambda: None)


@contextmanager
def acting_as(viewer: Viewer | _Nobody | None) -> Iterator[None]:
    """Run the block as ``viewer`` (the CLI with STUDIO_USER, tests)."""
    token = _current.set(viewer)
    try:
        yield
    finally:
        _current.reset(token)


def viewer_from_user(user: User) -> Viewer | _Nobody:
    return NOBODY if user.disabled else Viewer(user.id, user.name, user.role, user.team or "")


def sees_all(viewer) -> bool:
    return viewer is None or (isinstance(viewer, Viewer) and viewer.is_admin)


def visible_clause(cls, viewer):
    """The WHERE clause of the rows of ``cls`` that ``viewer`` may see (None: no filter)."""
    if sees_all(viewer):
        return None
    if viewer is NOBODY:
        return false()
    if cls in PRIVATE:
        return cls.owner_id == viewer.id
    shared_to_me = cls.owner_id.is_(None)
    if viewer.team:
        shared_to_me = or_(shared_to_me, cls.owner_id.in_(select(User.id).where(User.team == viewer.team)))
    return or_(cls.owner_id == viewer.id, and_(cls.shared.is_(True), shared_to_me))


@event.listens_for(Session, "do_orm_execute")
def _filter_by_owner(state) -> None:
    """Add the viewer's owner filter to ORM statements (relationship and column loads follow a row
    already visible, so they are left alone)."""
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load or state.execution_options.get(UNFILTERED):
        return
    viewer = current()
    if sees_all(viewer):
        return
    state.statement = state.statement.options(
        *(with_loader_criteria(cls, visible_clause(cls, viewer), include_aliases=True) for cls in OWNED + PRIVATE))


def _owner_team(session: Session, owner_id: int | None) -> str | None:
    if owner_id is None:
        return None
    return session.execute(select(User.team).where(User.id == owner_id)).scalar()


def can_change(session: Session, row, viewer) -> bool:
    """Whether ``viewer`` may change ``row`` (an owned row)."""
    if sees_all(viewer):
        return True
    if viewer is NOBODY:
        return False
    if row.owner_id == viewer.id:
        return True
    if isinstance(row, PRIVATE) or not row.shared or isinstance(row, BaseModel):  # shared base models are for use, not for change
        return False
    return bool(viewer.team) and _owner_team(session, row.owner_id) == viewer.team


def describe_owner(session: Session, row) -> str:
    name = session.execute(select(User.name).where(User.id == row.owner_id)).scalar() if row.owner_id else None
    return f"user {name}" if name else "the administrator"


@event.listens_for(Session, "before_flush")
def _stamp_and_check(session: Session, _ctx, _instances) -> None:
    """New rows get the viewer as owner (a version inherits its job's owner: workers act for nobody);
    changes and deletes of rows the viewer may not change are refused."""
    viewer = current()
    with session.no_autoflush:
        for row in session.new:
            if not isinstance(row, OWNED + PRIVATE) or row.owner_id is not None:
                continue
            if isinstance(viewer, Viewer):
                row.owner_id = viewer.id
            elif isinstance(row, ModelVersion) and row.job_id is not None:
                row.owner_id = session.execute(select(Job.owner_id).where(Job.id == row.job_id)).scalar()
            elif viewer is NOBODY:
                raise AccessError("log in to create anything in the studio")
        if sees_all(viewer):
            return
        for row in list(session.dirty) + list(session.deleted):
            if not isinstance(row, OWNED + PRIVATE) or not session.is_modified(row) and row not in session.deleted:
                continue
            noun = f"{NOUNS[type(row)]} {row.id}"
            if isinstance(row, OWNED) and inspect(row).attrs.shared.history.has_changes() and row.owner_id != viewer.id:
                raise AccessError(f"only the owner of {noun} or an admin can share or unshare it")
            if not can_change(session, row, viewer):
                raise AccessError(f"{noun} belongs to {describe_owner(session, row)}; you can change only your own "
                                  "rows and those your team shares. Ask its owner or an admin.")


def hidden_reason(session: Session, cls, row_id: int) -> str | None:
    """When ``row_id`` exists but the viewer may not see it: a message saying so (else None).

    Used where a lookup came back empty, so "does not exist" and "is someone else's" read differently."""
    viewer = current()
    if sees_all(viewer):
        return None
    row = session.execute(select(cls).where(cls.id == row_id).execution_options(**{UNFILTERED: True})).scalar()
    if row is None:
        return None
    if viewer is NOBODY:
        return "log in first: this studio requires an account"
    if cls in PRIVATE:
        return (f"{NOUNS[cls]} {row_id} belongs to {describe_owner(session, row)}; generations are private to "
                "the person who asked for them: ask for the same prompt yourself")
    return (f"{NOUNS[cls]} {row_id} belongs to {describe_owner(session, row)} and is not shared with your team; "
            "you can see and change only your own rows and those your team shares")


def scoped_digest(digest: str) -> str:
    """A content identity private to a member: two members uploading the same file get a version each
    (reusing another person's row would reveal it, and the unique key forbids a second row)."""
    import hashlib

    viewer = current()
    if sees_all(viewer) or not isinstance(viewer, Viewer):
        return digest
    return hashlib.sha256(f"{digest}\nowner={viewer.id}".encode()).hexdigest()
