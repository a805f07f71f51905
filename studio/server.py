"""`studio serve`: migrate, start the embedded worker beside the UI, serve the app."""
from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys

from models_db.migrate import upgrade
from studio.auth import launch_options, redact_url
from studio.settings import get_settings

log = logging.getLogger("studio")


def _die_with_the_studio() -> None:
    """In an embedded worker, before exec: the kernel sends it SIGTERM (a warm shutdown) when the studio
    process dies, even by SIGKILL, so no worker outlives the studio that started it (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exit_on_sigterm(signum, frame) -> None:
    # SIGTERM's default action ends the process at once, skipping the finally below that stops the workers
    raise SystemExit(128 + signum)


def serve(host: str | None = None, port: int | None = None, worker: bool = True) -> None:
    s = get_settings()
    host = host or s.host
    # the database and broker as a log may show them: never their passwords (docs/security.md)
    print(f"studio: database {redact_url(s.db_url)}, broker {redact_url(s.broker)}", file=sys.stderr)
    upgrade()  # migrations run once here, never concurrently from workers
    secure = launch_options(host)  # login, upload limit, file guard; refuses a public host without an admin
    # Gradio takes seconds to import: a refusal above comes first
    from studio.app import STATIC, build_app, theme

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    procs = []
    if worker:
        # A separate process: the UI stays free of torch, and the worker's training children are its own.
        # A second one serves generations (playground, side by side): a chat never waits behind training.
        for queues in ([], ["--queues", s.interactive_queue]):
            procs.append(subprocess.Popen([sys.executable, "-m", "studio.cli", "worker", *queues],
                                          preexec_fn=_die_with_the_studio))  # noqa: PLW1509  one prctl, before exec
            log.info("embedded worker %s started (pid %s)", " ".join(queues) or "(training)", procs[-1].pid)
    try:
        build_app().queue(default_concurrency_limit=8).launch(
            server_name=host, server_port=port or s.port, allowed_paths=[str(s.path("exports"))], **secure,
            theme=theme(), css_paths=[str(STATIC / "style.css")], favicon_path=str(STATIC / "favicon.svg"),
            show_error=True, footer_links=[])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
