"""The guard in front of Gradio's file routes (``/gradio_api/file=PATH`` and its older alias
``/gradio_api/file/PATH``, which serves the same files).

Gradio already serves only its upload/cache folders, its static files and ``allowed_paths`` (the
export directory). This ASGI middleware adds what Gradio cannot know:
- nothing under ``STUDIO_HOME`` except ``exports/`` (the database, models, data sets, checkpoints);
- no dot-files or dot-folders, and no ``..`` in a requested path, however it was encoded;
- an export zip (``version-N-...zip``, in ``exports/`` or Gradio's cached copy of it) only to a
  person who may see version N (models_db.access).
Uvicorn hands over the path already percent-decoded once, so ``%2e%2e%2f`` arrives as ``../``; a
double-encoded ``%252e`` arrives as a literal ``%2e`` name, which matches no file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import anyio

from studio.settings import get_settings

# ``file=PATH`` and the alias ``file/PATH`` (Gradio's ``file_deprecated``, the same handler): both, or the
# alias would hand another team's export zip to anyone logged in
FILE_ROUTE = re.compile(r"^(?:/[^/]*)*?/gradio_api/file(?:=|/)(?P<path>.*)$")
EXPORT_ZIP = re.compile(r"^version-(?P<id>\d+)-")


def refusal(requested: str, username: str | None, login_required: bool) -> str | None:
    """Why ``requested`` must not be served to ``username`` (None: let Gradio decide)."""
    from models_db import ModelVersion, session_scope
    from models_db.access import NOBODY, acting_as

    parts = Path(requested).parts
    if ".." in parts:
        return "paths with .. are refused"
    if any(p.startswith(".") for p in parts):
        return "hidden files are never served"
    target = Path(os.path.abspath(requested))
    try:
        target = target.resolve()
    except OSError:
        return "not a servable file"
    home = get_settings().home_abs
    exports = home / "exports"
    if target.is_relative_to(home) and not target.is_relative_to(exports):
        return "only the export folder is served"
    if any(p.startswith(".") for p in target.parts):  # a link into a hidden folder
        return "hidden files are never served"
    m = EXPORT_ZIP.match(target.name)
    if m is None:
        return None if not target.is_relative_to(exports) or not login_required else "not an export"
    if not login_required:
        return None
    from studio.auth import viewer_by_name

    viewer = viewer_by_name(username) if username else NOBODY
    with acting_as(viewer), session_scope() as db:  # the owner filter decides, as for every query
        if db.get(ModelVersion, int(m["id"])) is None:
            return "this export belongs to another user"
    return None


class FileGuard:
    """ASGI middleware: refuse (403) what :func:`refusal` refuses; pass everything else through."""

    login_required = False  # set by `studio serve` when accounts are required

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            m = FILE_ROUTE.match(scope.get("path", ""))
            if m:
                why = await anyio.to_thread.run_sync(refusal, m["path"], _username(scope), self.login_required)
                if why:
                    return await _forbid(send, why)
        await self.app(scope, receive, send)


def _username(scope) -> str | None:
    """The Gradio login behind this request's cookie (the app keeps token -> user name)."""
    from starlette.requests import HTTPConnection

    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    cookies = HTTPConnection(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token)


async def _forbid(send, why: str) -> None:
    body = json.dumps({"detail": f"File not allowed: {why}."}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
