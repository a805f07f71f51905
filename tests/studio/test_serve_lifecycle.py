"""`studio serve` owns the embedded workers it starts: they stop when it is stopped (SIGTERM runs its
shutdown) and also when it dies without a shutdown (SIGKILL: the kernel tells them), so no worker
outlives the studio, as two did after a test run once, for fifteen minutes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.backends import backend_env
from tests.cli import Cli, answers, stop_process, wait_until
from tests.e2e.conftest import _free_port


def gone(pids: list[int]) -> bool:
    return not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_embedded_workers_stop_with_the_studio(sig, tmp_path):
    with backend_env("embedded", tmp_path / "home") as env:
        env["STUDIO_PORT"] = str(_free_port())
        cli = Cli(env)
        with open(tmp_path / "serve.log", "a") as out:  # not in a session of its own: only the studio's own
            proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve"], env=cli.env, stdout=out,
                                    stderr=subprocess.STDOUT)  # shutdown or the kernel may stop its workers
        workers: list[int] = []
        try:
            wait_until(lambda: answers(f"http://127.0.0.1:{env['STUDIO_PORT']}"), timeout=90)
            workers = wait_until(lambda: [c.pid for c in psutil.Process(proc.pid).children()] if len(
                psutil.Process(proc.pid).children()) == 2 else None, timeout=30)
            os.kill(proc.pid, sig)
            proc.wait(60)
            wait_until(lambda: gone(workers), timeout=60, every=0.2)
        finally:
            for pid in workers:
                if not gone([pid]):
                    os.kill(pid, signal.SIGKILL)
            stop_process(proc)
