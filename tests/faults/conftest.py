"""A studio for fault injection: real worker processes (``studio worker``) whose training children we
kill, against real Postgres + Redis (or embedded SQLite), driven from the test process, which shares
the database (as the UI process does). Each test gets its own schema, queue and artifact root."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models_db import Job, Metric, ModelVersion, session_scope
from tests.backends import REDIS, backend_env, in_process
from tests.cli import stop_process, wait_until, write_instruction_jsonl

# Short runs: a tiny model, 40 rows, a checkpoint every few steps; seconds of training per job. The one
# evaluation is the recipe's final one, on the data set's stored eval rows (eval_steps past the end).
TRAIN = {"max_steps": 40, "save_steps": 5, "logging_steps": 1, "learning_rate": 5e-3, "per_device_train_batch_size": 4,
         "eval_split": 0, "eval_steps": 100000, "seed": 7, "r": 4, "save_total_limit": 2}


class Studio:
    """One isolated studio: its settings in this process, its workers, its jobs."""

    def __init__(self, env: dict, root: Path):
        self.env, self.root = env, root
        self.home = Path(env["STUDIO_HOME"])
        self.workers: list[subprocess.Popen] = []
        self.model_id = self.dataset_id = self.unsplit_dataset_id = None

    # --- set-up -----------------------------------------------------------------------------------
    def add_model_and_data(self, model_dir: Path) -> None:
        from studio import operations
        from tests.tiny import register_tiny_base

        self.model_id = register_tiny_base(model_dir)
        from studio.datasets.split import Split

        data, held_out = self.root / "pairs.jsonl", self.root / "held_out.jsonl"
        write_instruction_jsonl(data)
        write_instruction_jsonl(held_out, 4)
        # With stored eval rows the recipe's final evaluation is the version's own, so a success queues no
        # follow-up evaluate job: one more training process per job, which only test_parallel_workers is
        # about (it trains on ``unsplit_dataset_id``); elsewhere it would compete for the CPU and hold up
        # the workers' shutdown.
        self.dataset_id = operations.add_dataset(data, split=Split(eval_file=held_out))[0].id
        self.unsplit_dataset_id = operations.add_dataset(data)[0].id

    # --- workers ------------------------------------------------------------------------------------
    def start_worker(self, *, prefix: tuple[str, ...] = (), **env) -> subprocess.Popen:
        """A real worker process; returns once it has registered (its id is ``host-pid``). ``prefix``
        runs it through a command that execs it in place (``ip netns exec NAME``), keeping its pid."""
        from models_db import Worker

        log_path = self.root / f"worker-{len(self.workers) + 1}.log"
        with open(log_path, "ab") as log:  # the worker keeps its own copy of the descriptor
            proc = subprocess.Popen([*prefix, sys.executable, "-m", "studio.cli", "worker"],
                                    env={**os.environ, **self.env, **env}, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log_path
        self.workers.append(proc)

        def registered():
            assert proc.poll() is None, f"worker exited:\n{proc.log_path.read_text()[-3000:]}"
            with session_scope() as db:
                return db.get(Worker, worker_id(proc)) is not None
        wait_until(registered, timeout=60, every=0.2)
        return proc

    def stop_workers(self) -> None:
        running = [proc for proc in self.workers if proc.poll() is None]
        for proc in running:  # all at once: each takes a few seconds to shut down
            proc.terminate()
        for proc in running:
            stop_process(proc, grace=10)

    # --- jobs ---------------------------------------------------------------------------------------
    def submit(self, *, after: int | None = None, key: str | None = None, dataset_id: int | None = None,
               **settings) -> int:
        from studio import operations
        from studio.jobspec import build_train_spec

        spec = build_train_spec(model_id=self.model_id, dataset_id=dataset_id or self.dataset_id, method="lora",
                                settings={**TRAIN, **settings})
        job, _ = operations.submit_train(spec, idempotency_key=key, after=after)
        return job.id

    def job(self, job_id: int) -> Job:
        with session_scope() as db:
            job = db.get(Job, job_id)
            db.expunge(job)
            return job

    def wait_state(self, job_id: int, *states: str, timeout: float = 120) -> Job:
        try:
            wait_until(lambda: self.job(job_id).state in states, timeout=timeout, every=0.2)
        except AssertionError:
            job = self.job(job_id)
            raise AssertionError(f"job {job_id} is {job.state} ({job.message}; {job.error}), not {states}\n"
                                 f"{self.log(job_id)[-3000:]}\n{self.worker_logs()[-3000:]}") from None
        return self.job(job_id)

    def current_pid(self, job_id: int, attempt: int, timeout: float = 60) -> int:
        """The training process of the given attempt, once its worker has started it."""
        def pid():
            h = self.job(job_id).history or []
            return len(h) >= attempt and h[attempt - 1].get("pid")
        return wait_until(pid, timeout=timeout, every=0.05)

    def wait_checkpoint(self, job_id: int, timeout: float = 180) -> list[int]:
        """Poll (fast) until the job has a complete checkpoint; fail at once if the job ends first."""
        end, n = time.monotonic() + timeout, 0
        while time.monotonic() < end:
            steps = self.complete_steps(job_id)
            if steps:
                return steps
            n += 1
            if n % 20 == 0 and self.job(job_id).state not in ("queued", "running"):
                job = self.job(job_id)
                raise AssertionError(f"job {job_id} ended {job.state} before a checkpoint: {job.error}\n"
                                     f"{self.log(job_id)[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} wrote no checkpoint in {timeout} s\n{self.log(job_id)[-3000:]}")

    def hold_after_checkpoint(self, job_id: int, attempt: int = 1, timeout: float = 180) -> int:
        """Stop the attempt's training process (SIGSTOP) once it has a complete checkpoint and return its
        pid: the job is then certainly still running, however fast this machine trains, until ``release``.
        The process runs in slices of 10 ms between checks, so it cannot finish unobserved."""
        pid = self.current_pid(job_id, attempt)
        os.kill(pid, signal.SIGSTOP)
        end = time.monotonic() + timeout
        while not self.complete_steps(job_id):
            if time.monotonic() > end or not alive(pid):
                if alive(pid):
                    os.kill(pid, signal.SIGCONT)
                job = self.job(job_id)
                raise AssertionError(f"job {job_id} ({job.state}) wrote no checkpoint while held: {job.error}\n"
                                     f"{self.log(job_id)[-3000:]}")
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
            os.kill(pid, signal.SIGSTOP)
        return pid

    @staticmethod
    def release(pid: int) -> None:
        """Let a process stopped by ``hold_after_checkpoint`` go on."""
        os.kill(pid, signal.SIGCONT)

    def checkpoints(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id) / "checkpoints"

    def complete_steps(self, job_id: int) -> list[int]:
        from worker.checkpoints import complete_checkpoints

        return [int(p.name.split("-")[1]) for p in complete_checkpoints(self.checkpoints(job_id))]

    def log(self, job_id: int) -> str:
        path = self.home / "jobs" / str(job_id) / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker_logs(self) -> str:
        return "".join(p.log_path.read_text(errors="replace") for p in self.workers)

    def versions(self) -> list[int]:
        with session_scope() as db:
            return list(db.scalars(select(ModelVersion.job_id)))

    def loss_steps(self, job_id: int, attempt: int) -> list[int]:
        with session_scope() as db:
            return list(db.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.attempt == attempt,
                                                             Metric.name == "loss").order_by(Metric.step)))

    def count_jobs(self) -> int:
        with session_scope() as db:
            return db.scalar(select(func.count(Job.id)))

    def adapter(self, job_id: int) -> dict:
        from safetensors.torch import load_file

        return load_file(self.home / "versions" / f"job-{job_id}" / "adapter" / "adapter_model.safetensors")


def worker_id(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}-{proc.pid}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (killed, not yet reaped by its parent) is gone too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@contextmanager
def studio_env(kind: str, tmp_path: Path, monkeypatch, model_dir: Path, **env):
    with backend_env(kind, tmp_path / "home") as base:
        base.update({"STUDIO_RESEND_SECONDS": "3", "STUDIO_MAX_ATTEMPTS": "3"}, **env)
        with in_process(monkeypatch, base):
            from models_db.migrate import upgrade

            upgrade()
            studio = Studio(base, tmp_path)
            studio.add_model_and_data(model_dir)
            try:
                yield studio
            finally:
                studio.stop_workers()


@pytest.fixture
def services_studio(tmp_path, monkeypatch, tiny_llama_dir, request):
    """A studio on real Postgres and Redis (skipped without STUDIO_TEST_POSTGRES_URL/_REDIS_URL).
    ``@pytest.mark.studio_env(KEY=VALUE)`` adds settings."""
    marker = request.node.get_closest_marker("studio_env")
    with studio_env("services", tmp_path, monkeypatch, tiny_llama_dir, **(marker.kwargs if marker else {})) as s:
        yield s


@pytest.fixture
def redis_studio(private_redis, tmp_path, monkeypatch, tiny_llama_dir):
    """A studio on real Postgres and a private Redis the test may kill and restart."""
    with studio_env("services", tmp_path, monkeypatch, tiny_llama_dir, STUDIO_BROKER_URL=private_redis.url) as s:
        s.redis = private_redis
        yield s


@pytest.fixture
def embedded_studio(tmp_path, monkeypatch, tiny_llama_dir):
    with studio_env("embedded", tmp_path, monkeypatch, tiny_llama_dir) as s:
        yield s


class PrivateRedis:
    """A redis-server of the test's own on a free port (never the machine's shared one), without
    persistence: a restart loses every message in it, as a crash of a default install can."""

    def __init__(self, root: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.binary, self.root = binary, root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout=10, every=0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()


@pytest.fixture
def private_redis(tmp_path):
    if not REDIS:
        pytest.skip("set STUDIO_TEST_REDIS_URL (and STUDIO_TEST_POSTGRES_URL) to test against real services")
    r = PrivateRedis(tmp_path)
    yield r
    r.kill()


def pytest_configure(config):
    config.addinivalue_line("markers", "studio_env(**settings): extra STUDIO_* settings for the fault-test studio")
