"""Accounts: password hashing, users (add / list / disable), the Gradio login check, and who is acting.

Passwords are hashed with the standard library's scrypt (memory-hard, per-user random salt) and
compared in constant time. Accounts live in the database (``users``); `studio users add` creates
them. Row visibility by owner is enforced in models_db.access; this module says who the viewer is.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select

from models_db import User, session_scope
from models_db.access import (
    NOBODY,
    UNFILTERED,
    Viewer,
    acting_as,
    set_resolver,
    viewer_from_user,
)
from studio import audit, password_rules

ROLES = ("admin", "member")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = password_rules.MIN_LENGTH
# scrypt cost: n=2**14, r=8 (16 MiB, ~50 ms): OWASP's floor for scrypt; stored with the hash so it can rise later
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AuthError(ValueError):
    """A refused account operation; the message says what to do."""


# --- passwords --------------------------------------------------------------------------------------

def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare; a malformed hash never matches)."""
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(want)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(want))


# --- users ------------------------------------------------------------------------------------------

def _check_new_user(name: str, password: str, role: str) -> None:
    if not NAME_RE.match(name or ""):
        raise AuthError(f"user name {name!r}: use 1 to 100 letters, digits or . _ @ - (starting with a letter or digit)")
    if role not in ROLES:
        raise AuthError(f"role {role!r}: use admin or member")
    problem = password_rules.problem(name, password)
    if problem:
        raise AuthError(problem)


def add_user(name: str, password: str, *, role: str = "member", team: str = "") -> User:
    """Create an account; refuses a taken name and a weak password (studio/password_rules.py)."""
    _check_new_user(name, password, role)
    with session_scope() as db:
        if db.scalar(select(User).where(User.name == name)):
            raise AuthError(f"user {name!r} already exists (studio users list)")
        user = User(name=name, password_hash=hash_password(password), role=role, team=team.strip())
        db.add(user)
        db.flush()
        audit.record("user.add", f"user {name}", detail=f"role {role}" + (f", team {user.team}" if user.team else ""),
                     db=db)
        return user


def list_users() -> list[User]:
    with session_scope() as db:
        return list(db.scalars(select(User).order_by(User.id)))


def set_disabled(name: str, disabled: bool = True) -> User:
    """Disable (or re-enable) an account: it can no longer log in, and its open sessions see nothing."""
    with session_scope() as db:
        user = db.scalar(select(User).where(User.name == name))
        if user is None:
            raise AuthError(f"user {name!r} does not exist (studio users list)")
        user.disabled = disabled
        audit.record("user.disable" if disabled else "user.enable", f"user {name}", db=db)
        return user


def set_role(name: str, role: str) -> User:
    """Make an account an admin or a member; the last enabled admin cannot stop being one."""
    if role not in ROLES:
        raise AuthError(f"role {role!r}: use admin or member")
    with session_scope() as db:
        user = db.scalar(select(User).where(User.name == name))
        if user is None:
            raise AuthError(f"user {name!r} does not exist (studio users list)")
        if user.role == "admin" and role != "admin" and not user.disabled and db.scalar(
                select(func.count(User.id)).where(User.role == "admin", User.disabled.is_(False))) <= 1:
            raise AuthError(f"{name} is the last enabled admin; make another admin first")
        audit.record("user.role", f"user {name}", detail=f"{user.role} -> {role}", db=db)
        user.role = role
        return user


def unlock_login(name: str | None = None, address: str | None = None) -> int:
    """End a login lock (after too many failed logins) of an account name or a client address."""
    from studio import login_throttle

    if not name and not address:
        raise AuthError("name an account or give --address")
    cleared = login_throttle.unlock(account=name, address=address)
    audit.record("user.unlock", f"user {name}" if name else f"address {address}",
                 detail="a lock or count was cleared" if cleared else "nothing was locked")
    return cleared


def accounts_exist() -> bool:
    with session_scope() as db:
        return bool(db.scalar(select(func.count(User.id))))


def admin_exists() -> bool:
    with session_scope() as db:
        return bool(db.scalar(select(func.count(User.id)).where(User.role == "admin", User.disabled.is_(False))))


def check_login(username: str, password: str) -> bool:
    """Gradio's ``auth=`` callable: a known, enabled account with the right password."""
    with session_scope() as db:
        user = db.scalar(select(User).where(User.name == username).execution_options(**{UNFILTERED: True}))
    if user is None:
        verify_password(password, _dummy_hash())  # same work for unknown names: no user-name probing by timing
        return False
    return verify_password(password, user.password_hash) and not user.disabled


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))


# --- who is acting ------------------------------------------------------------------------------------

class _ViewerCache:
    """username -> Viewer for a few seconds: every query asks, and a disabled account must stop soon."""

    def __init__(self, ttl: float = 5.0):
        self.ttl, self.lock, self.items = ttl, threading.Lock(), {}

    def get(self, username: str):
        now = time.monotonic()
        with self.lock:
            hit = self.items.get(username)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        viewer = viewer_by_name(username)
        with self.lock:
            self.items[username] = (now, viewer)
        return viewer


def viewer_by_name(username: str):
    """The Viewer for an account name (NOBODY when unknown or disabled). Reads the users table with Core,
    outside the ORM hooks (which ask for the viewer themselves)."""
    from models_db import get_engine

    with get_engine().connect() as conn:
        row = conn.execute(select(User.__table__).where(User.__table__.c.name == username)).first()
    return NOBODY if row is None else viewer_from_user(User(**row._asdict()))


_cache = _ViewerCache()


def gradio_viewer():
    """The logged-in user of the Gradio event being handled (gradio sets its request in a context
    variable around every handler); NOBODY outside a handler or without a login."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    username = getattr(request, "username", None) if request is not None else None
    return _cache.get(username) if username else NOBODY


def require_login() -> None:
    """From now on this process filters every query by the logged-in Gradio user (`studio serve` with accounts)."""
    set_resolver(gradio_viewer)


def cli_viewer():
    """The CLI acts as the embedded/admin user, or as the account named by ``STUDIO_USER``."""
    name = os.environ.get("STUDIO_USER", "").strip()
    if not name:
        return None
    viewer = viewer_by_name(name)
    if viewer is NOBODY:
        raise AuthError(f"STUDIO_USER={name!r} is not an enabled account (studio users list)")
    return viewer


def cli_acting(as_user: bool = True):
    """A context manager running a CLI command as :func:`cli_viewer` (``as_user`` False: as everyone)."""
    return acting_as(cli_viewer() if as_user else None)


# --- serving --------------------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def login_needed(host: str) -> bool:
    """Whether `studio serve` on ``host`` must require a login; raises AuthError when it must but cannot.

    Embedded use on a loopback address without accounts needs none; any other address needs an admin
    account; once accounts exist, every address requires a login."""
    if admin_exists():
        return True
    if not is_loopback(host):
        raise AuthError(f"refusing to serve on {host}: a non-loopback address requires accounts and there is no "
                        "admin yet. Create one with `studio users add NAME --role admin` (it prompts for the "
                        "password), or serve on 127.0.0.1.")
    if accounts_exist():
        raise AuthError("accounts exist but none is an enabled admin: create one with "
                        "`studio users add NAME --role admin`")
    return False


def redact_url(url: str) -> str:
    """A database or broker URL fit for a log: the password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["AuthError", "Viewer", "add_user", "check_login", "hash_password", "list_users", "login_needed",
           "redact_url", "require_login", "set_disabled", "set_role", "unlock_login", "verify_password",
           "viewer_by_name"]


def launch_options(host: str) -> dict:
    """Gradio ``launch()`` keyword arguments for serving on ``host``: the login (when needed), the upload
    size limit and the file-route guard (studio.webguard). Raises AuthError when it must not serve."""
    from starlette.middleware import Middleware

    from studio.settings import get_settings
    from studio.webguard import FileGuard

    need = login_needed(host)
    FileGuard.login_required = need
    s = get_settings()
    opts = {"max_file_size": f"{s.max_upload_mb}mb", "app_kwargs": {"middleware": [Middleware(FileGuard)]}}
    if need:
        from studio.login_guard import LoginGuard
        from studio.login_sessions import persistent_logins

        require_login()  # from here on every query in this process is filtered by the logged-in user
        opts["app_kwargs"]["lifespan"] = persistent_logins  # logins kept in the database, across restarts
        # throttling, audit, session rotation and cookie flags around Gradio's /login
        opts["app_kwargs"]["middleware"].append(Middleware(LoginGuard))
        opts.update(auth=check_login, auth_message=(
            "Log in with your FineTune Studio account (an admin creates accounts with `studio users add`). "
            f"Failed logins slow down, and after {s.login_lock_after} in a row the account is locked for "
            f"{s.login_lock_minutes:g} minutes: the right password is refused too until then."))
    return opts
