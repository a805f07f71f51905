import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.tiny import build_tiny_llama

# Every process this suite starts inherits this mark; at the end none may be left (tests/conftest.py).
# Under pytest-xdist each worker process has its own mark and checks its own processes: the workers finish at
# different times, and one must not count another's running training child as left behind.
SUITE_MARK = "STUDIO_TEST_SUITE_RUN"
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ[SUITE_MARK] = f"{uuid.uuid4().hex}-{XDIST_WORKER}"
else:
    os.environ.setdefault(SUITE_MARK, uuid.uuid4().hex)


def leftover_processes() -> list[tuple[int, str]]:
    """(pid, command line) of the processes started by this test run that are still alive (not this one)."""
    mark = f"{SUITE_MARK}={os.environ[SUITE_MARK]}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie is already gone; its parent reaps it
                    found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    """The suite's last step: a process it started and left running (a served studio's worker, a training
    child) fails the run, and is killed so it cannot hold the machine."""
    if not Path("/proc").is_dir() or session.config.option.collectonly:
        return
    if getattr(session.config.option, "numprocesses", None) and not XDIST_WORKER:
        return  # the controller of an xdist run: each worker checks its own processes
    import time

    left = leftover_processes()
    end = time.monotonic() + 10  # a worker in its warm shutdown gets a moment
    while left and time.monotonic() < end:
        time.sleep(0.5)
        left = leftover_processes()
    if not left:
        return
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in left)
    session.config.get_terminal_writer().line(f"\nprocesses left running by the test suite (now killed):\n{lines}",
                                               red=True)
    session.exitstatus = 1


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A saved tiny Llama + ChatML tokenizer directory, built once per test session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(params=["embedded", "services"])
def backend(request, tmp_path, monkeypatch):
    """A migrated studio database for in-process tests, on each backend."""
    from models_db.migrate import upgrade
    from tests.backends import backend_env, in_process

    with backend_env(request.param, tmp_path / "home") as env:
        with in_process(monkeypatch, env) as settings:
            upgrade()
            yield settings
