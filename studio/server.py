"""`studio serve`: migrate, start the embedded worker beside the UI, serve the app."""
from __future__ import annotations

import logging
import subprocess
import sys

from models_db.migrate import upgrade
from studio.app import STATIC, build_app, theme
from studio.settings import get_settings

log = logging.getLogger("studio")


def serve(host: str | None = None, port: int | None = None, worker: bool = True) -> None:
    s = get_settings()
    upgrade()  # migrations run once here, never concurrently from workers
    proc = None
    if worker:
        # A separate process: the UI stays free of torch, and the worker's training children are its own.
        proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "worker"])
        log.info("embedded worker started (pid %s)", proc.pid)
    try:
        build_app().queue(default_concurrency_limit=8).launch(
            server_name=host or s.host, server_port=port or s.port, allowed_paths=[str(s.path("exports"))],
            theme=theme(), css_paths=[str(STATIC / "style.css")], favicon_path=str(STATIC / "favicon.svg"),
            show_error=True, footer_links=[])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
