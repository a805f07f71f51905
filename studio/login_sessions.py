"""Web logins that survive a restart of `studio serve`: Gradio's token mapping, kept in the database.

Gradio holds ``token -> user name`` in ``app.tokens`` (a dict) and names its cookie after a random
``app.cookie_id``: a restart forgets both, so everyone is logged out. With accounts, `studio serve`
replaces the two when the server starts (a FastAPI lifespan, passed through ``launch(app_kwargs=...)``):
``tokens`` becomes :class:`LoginSessions` over the ``login_sessions`` table, and ``cookie_id`` a name
derived from this install's ``STUDIO_HOME`` (stable across restarts, distinct between two studios on
one host). The table holds sha256(token), never the token; a session lasts ``STUDIO_LOGIN_HOURS``
(default a week) from the login, a disabled account's sessions stop at once, and Gradio's
``/logout`` ends the person's sessions everywhere as it does in memory.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import delete, func, select

from models_db import User, session_scope
from models_db.schema import LoginSession, utcnow
from studio.settings import get_settings

class StoredSession(str):
    """How iterating names a session: by its stored hash (the token itself is never stored). Only this
    type indexes by hash; a plain string is always a token and is hashed, so a leaked hash (a database
    dump, say) presented as a cookie is just an unknown token."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(token: str) -> str:
    return str.__str__(token) if isinstance(token, StoredSession) else token_hash(token)


class LoginSessions(MutableMapping):
    """``token -> user name`` for the logins that have not expired, of enabled accounts (Gradio's
    ``app.tokens``). Iterating yields :class:`StoredSession` keys (hashes), which index it like the token
    does: that is what Gradio's logout walks to end every session of one person."""

    def _live(self):
        return (select(User.name).join(LoginSession, LoginSession.user_id == User.id)
                .where(LoginSession.expires_at > utcnow(), User.disabled.is_(False)))

    def __getitem__(self, token: str) -> str:
        if not isinstance(token, str) or not token:
            raise KeyError(token)
        with session_scope() as db:
            name = db.scalar(self._live().where(LoginSession.token_hash == _key(token)))
        if name is None:
            raise KeyError(token)
        return name

    def __setitem__(self, token: str, username: str) -> None:
        now = utcnow()
        with session_scope() as db:
            user_id = db.scalar(select(User.id).where(User.name == username))
            if user_id is None:
                raise KeyError(username)
            db.execute(delete(LoginSession).where(LoginSession.expires_at <= now))  # forget expired ones
            db.add(LoginSession(token_hash=_key(token), user_id=user_id, created_at=now,
                                expires_at=now + timedelta(hours=get_settings().login_hours)))

    def __delitem__(self, token: str) -> None:
        with session_scope() as db:
            if not db.execute(delete(LoginSession).where(LoginSession.token_hash == _key(token))).rowcount:
                raise KeyError(token)

    def __iter__(self) -> Iterator[str]:
        with session_scope() as db:
            hashes = list(db.scalars(select(LoginSession.token_hash).join(User, LoginSession.user_id == User.id)
                                     .where(LoginSession.expires_at > utcnow(), User.disabled.is_(False))))
        return iter(StoredSession(h) for h in hashes)

    def __len__(self) -> int:
        with session_scope() as db:
            return db.scalar(select(func.count()).select_from(self._live().subquery())) or 0


def cookie_id() -> str:
    """The suffix of Gradio's login cookie for this install: the same after a restart."""
    return hashlib.sha256(f"finetune-studio:{get_settings().home_abs}".encode()).hexdigest()[:32]


@asynccontextmanager
async def persistent_logins(app):
    """FastAPI lifespan: from server start, the app keeps its logins in the database (see the module doc)."""
    app.tokens, app.cookie_id = LoginSessions(), cookie_id()
    yield
