"""The guard in front of Gradio's login route (``POST /login``): throttling, audit, session rotation, cookies.

Gradio checks the password (``auth=studio.auth.check_login``) and makes the session token; it does not
know the client's address, and it answers every attempt at full speed. This ASGI middleware (passed
through ``launch(app_kwargs=...)`` with the file guard) wraps that route:

- before the password is checked, the attempt is counted per account and per client address
  (studio/login_throttle.py); while either is in its back-off or locked, the attempt is refused with a
  400 whose ``detail`` says why and until when (and a ``Retry-After`` header) — Gradio's login page
  shows its "Incorrect Credentials" for any 400, and its text states the lock policy;
- every attempt is written to the audit log: ``login.ok``, ``login.failed``, ``login.refused``, and
  ``login.locked`` when a failure starts a lock;
- on success the session rotates: Gradio's new token is the only one, and any token the browser brought
  from before (a fixated or older session) is ended;
- the session cookies are ``HttpOnly; SameSite=Lax`` (Gradio sets ``SameSite=None`` on one of its two,
  for iframes on other sites, which the studio does not need), and ``Secure`` when ``STUDIO_BEHIND_TLS``.

The client address is the connection's (``scope["client"]``); uvicorn replaces it with
``X-Forwarded-For`` only for a proxy on 127.0.0.1 (``FORWARDED_ALLOW_IPS`` names others).
"""
from __future__ import annotations

import json
import re

import anyio

LOGIN_ROUTE = re.compile(r"^(?:/[^/]*)*?/login/?$")
MAX_BODY = 64 * 1024  # a login form is a few hundred bytes
COOKIE = re.compile(rb"^(access-token-[^=;]*)=([^;]*)")


class LoginGuard:
    """ASGI middleware over Gradio's ``POST /login`` (see the module doc)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not LOGIN_ROUTE.match(scope.get("path", "")):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if body is None:
            return await _answer(send, 413, "the login form is larger than 64 KiB")
        username, password = await _form(scope, body)
        if username is None or password is None:  # Gradio answers a malformed form (422); nothing to count
            return await self.app(scope, _replay(body, receive), send)
        address = _address(scope)
        verdict = await anyio.to_thread.run_sync(_admit, username, address)
        if not verdict.allowed:
            return await _answer(send, 400, verdict.message, verdict.retry_at)

        async def settle_then_send(message):
            if message["type"] == "http.response.start":
                ok = message["status"] == 200
                old = _tokens(scope) if ok else []
                await anyio.to_thread.run_sync(_settle, scope, username, address, ok, verdict, old)
                if ok:
                    message = {**message, "headers": _secure_cookies(message.get("headers", []))}
            await send(message)

        await self.app(scope, _replay(body, receive), settle_then_send)


def _admit(username: str, address: str):
    from studio import audit, login_throttle

    verdict = login_throttle.admit(username, address)
    if not verdict.allowed:
        audit.record("login.refused", f"user {username}", actor=username, address=address, detail=verdict.message)
        if verdict.locks:  # this early attempt was the one that started the lock
            audit.record("login.locked", f"user {username}", actor=username, address=address,
                         detail=f"locked until {verdict.retry_at:%Y-%m-%d %H:%M:%S} UTC")
    return verdict


def _settle(scope, username: str, address: str, ok: bool, verdict, old_tokens: list[str]) -> None:
    """After Gradio checked the password: clear or keep the count, end the pre-login sessions, audit."""
    from studio import audit, login_throttle

    if ok:
        login_throttle.succeeded(username, address)
        tokens = getattr(scope.get("app"), "tokens", None)
        for token in old_tokens:
            if tokens is not None:
                tokens.pop(token, None)  # the session from before this login ends: the new token is the only one
        audit.record("login.ok", f"user {username}", actor=username, address=address,
                     detail="an earlier session ended" if old_tokens else "")
        return
    audit.record("login.failed", f"user {username}", actor=username, address=address,
                 detail=f"{_why_failed(username)} (failure {verdict.failures} in a row)")
    if verdict.locks:
        state = login_throttle.state(account=username) or {}
        until = state.get("locked_until")
        audit.record("login.locked", f"user {username}", actor=username, address=address,
                     detail=f"locked until {until:%Y-%m-%d %H:%M:%S} UTC" if until else "address locked")


def _why_failed(username: str) -> str:
    from sqlalchemy import select

    from models_db import User, session_scope
    from models_db.access import UNFILTERED

    with session_scope() as db:
        user = db.scalar(select(User).where(User.name == username).execution_options(**{UNFILTERED: True}))
        return "unknown account" if user is None else "disabled account" if user.disabled else "wrong password"


def _address(scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _tokens(scope) -> list[str]:
    """The session tokens the request brought (Gradio's two cookies), to end once a new login replaces them."""
    from starlette.requests import HTTPConnection

    cookie_id = getattr(scope.get("app"), "cookie_id", None)
    if cookie_id is None:
        return []
    cookies = HTTPConnection(scope).cookies
    found = {cookies.get(f"access-token-{cookie_id}"), cookies.get(f"access-token-unsecure-{cookie_id}")}
    return [t for t in found if t]


def _secure_cookies(headers: list) -> list:
    """Gradio's session cookies rewritten: HttpOnly, SameSite=Lax, Path=/, Secure when behind TLS."""
    from studio.settings import get_settings

    flags = b"; HttpOnly; Path=/; SameSite=Lax" + (b"; Secure" if get_settings().behind_tls else b"")
    out = []
    for name, value in headers:
        m = COOKIE.match(value) if name.lower() == b"set-cookie" else None
        out.append((name, m.group(0) + flags) if m else (name, value))
    return out


async def _read_body(receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY:
            return None
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _form(scope, body: bytes) -> tuple[str | None, str | None]:
    """The form's user name (stripped, as Gradio does) and password; None for what is missing or unreadable."""
    from starlette.requests import Request

    try:
        form = await Request(scope, _replay(body, None)).form()
    except Exception:  # noqa: BLE001  any malformed body: Gradio gives its own answer
        return None, None
    username, password = form.get("username"), form.get("password")
    return (username.strip() if isinstance(username, str) else None,
            password if isinstance(password, str) else None)


async def _answer(send, status: int, detail: str, retry_at=None) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_at is not None:
        from studio.login_throttle import clock

        seconds = max(1, int((retry_at - clock()).total_seconds() + 0.999))
        headers.append((b"retry-after", str(seconds).encode()))
    body = json.dumps({"detail": detail}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
