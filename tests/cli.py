"""Drive the real `studio` CLI and a real worker process, as a person would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager


class Cli:
    def __init__(self, env: dict):
        self.env = {**os.environ, **env}

    def run(self, *args: str, ok: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "studio.cli", *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout, check=False)
        if ok and p.returncode != 0:
            raise AssertionError(f"studio {' '.join(args)} exited {p.returncode}\n{p.stderr[-3000:]}")
        return p

    def json(self, *args: str, **kw) -> dict:
        p = self.run(*args, "--json", **kw)
        return json.loads(p.stdout)  # --json prints exactly one JSON object

    def serve(self, *args: str, log_path) -> subprocess.Popen:
        """`studio serve ARGS` on the env's ``STUDIO_PORT``, returned once its page answers (its output
        appended to ``log_path``); stop it with :func:`stop_process`."""
        url = f"http://127.0.0.1:{self.env['STUDIO_PORT']}"
        with open(log_path, "a") as log:  # the server keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", *args], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: answers(url), timeout=90)
        except BaseException:
            stop_process(proc)
            raise
        return proc

    @contextmanager
    def worker(self):
        """A worker process for the duration of the block. It is not waited for beyond a short grace: a warm
        shutdown would first finish the job it took last (the evaluation a training job queues at its end),
        which the test has no use for; its training process dies with it (worker.job_process)."""
        proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "worker"], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield proc
        finally:
            stop_process(proc, grace=3)


def stop_process(proc: subprocess.Popen, grace: float = 30) -> None:
    """Terminate a child the test started, killing it if it lingers. A child started in a session of its
    own (``studio serve``) is stopped with its whole process group: the workers it started go with it
    even when it could not stop them itself."""
    group = proc.pid if _leads_its_group(proc) else None
    _signal(proc, group, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal(proc, group, signal.SIGKILL)
        proc.wait(10)
    if group is not None:  # its workers, which may still be finishing their warm shutdown
        end = time.monotonic() + grace
        while _group_alive(group) and time.monotonic() < end:
            time.sleep(0.1)
        _signal(proc, group, signal.SIGKILL)


def _leads_its_group(proc: subprocess.Popen) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def _signal(proc: subprocess.Popen, group: int | None, sig: int) -> None:
    try:
        if group is not None:
            os.killpg(group, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (a server that is up; a login page counts)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def write_instruction_jsonl(path, n: int = 40) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps({"instruction": f"What is {i} plus 1?", "input": "", "output": f"The answer is {i + 1}."})
                     + "\n" for i in range(n))


def wait_until(pred, timeout: float = 60, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")
