"""A real studio (`studio serve` with its embedded worker) on a free port, and headless Chromium.

Without Chromium these tests skip on a laptop; with STUDIO_TEST_E2E=1 (CI) they fail instead."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.backends import backend_env
from tests.cli import Cli, stop_process

SHOTS = Path(__file__).parent / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        if os.environ.get("STUDIO_TEST_E2E") == "1":
            pytest.fail("STUDIO_TEST_E2E=1 but Chromium or playwright is missing (apt-get install chromium)")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    """A served studio with the tiny model imported; yields (base_url, Cli)."""
    home = tmp_path_factory.mktemp("e2e") / "home"
    with backend_env("embedded", home) as env:
        port = _free_port()
        env["STUDIO_PORT"] = str(port)
        cli = Cli(env)
        cli.run("db", "upgrade")
        cli.run("models", "import", str(tiny_llama_dir), "--name", "tiny-llama")
        proc = cli.serve(log_path=home / "serve.log")
        try:
            yield f"http://127.0.0.1:{port}", cli
        finally:
            stop_process(proc)


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Save what the browser showed when a test failed."""
    outcome = yield
    rep = outcome.get_result()
    pg = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if rep.when == "call" and rep.failed and pg is not None:
        try:
            pg.screenshot(path=str(SHOTS / f"FAILED-{item.name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - best effort
            pass
