"""What bench/overhead.py and bench/throughput.py share: a scratch studio home with the demo model
imported once (reused on the next run with the same ``--home``), data sets, the bare baseline run in
its own process, and studio jobs run through the queue (a real ``studio worker``) or by the job's
child entry point directly."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def use_home(home: Path) -> dict:
    """Point this process (and the processes it starts) at an embedded studio under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"STUDIO_HOME": str(home)}
    for key in ("STUDIO_DATABASE_URL", "STUDIO_BROKER_URL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    return {**os.environ}


def hardware() -> str:
    """The machine in words, with the load other work puts on it (shared CPU figures move with it)."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"CPU only: {model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, torch {torch.__version__}; "
            f"load average {os.getloadavg()[0]:.1f} (1 min) at the end")


def demo_model() -> tuple[int, str]:
    """Migrate and import the demo model once. Returns (model id, its folder)."""
    from models_db import session_scope
    from models_db import queries as q
    from models_db.migrate import upgrade
    from worker.importer import DEMO_NAME, demo_gguf, register

    upgrade()
    with session_scope() as db:
        model = q.model_by_ref(db, DEMO_NAME)
        if model:
            return model.id, model.path
    say(f"importing the demo model {DEMO_NAME} (about a minute)")
    return register(demo_gguf(), DEMO_NAME)


def add_rows(home: Path, name: str, rows: list[dict]) -> tuple[int, Path]:
    """Register ``rows`` (instruction/input/output) as a data set; returns (its id, the JSONL file)."""
    from studio import operations

    path = home / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset, _, _ = operations.add_dataset(path, name=name)
    return dataset.id, path


def run_bare(model_dir: str, data: Path, steps: int, batch: int, max_len: int) -> dict:
    """The hand-written Trainer + peft script in its own process; its JSON plus the wall time seen here."""
    started = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bare_sft.py"), "--model", model_dir, "--data",
                        str(data), "--steps", str(steps), "--batch", str(batch), "--max-len", str(max_len)],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    if p.returncode:
        raise SystemExit(f"bare script failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {**out, "process_wall_s": wall}


def submit(model_id: int, dataset_id: int, method: str, settings: dict):
    from studio import operations
    from studio.jobspec import build_train_spec

    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings=settings)
    job, _ = operations.submit_train(spec)
    return job.id


def finished(job_id: int, timeout: float = 3600) -> dict:
    """Wait for the job; its result metrics (raises on failure)."""
    from models_db import Job, session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as db:
            job = db.get(Job, job_id)
            if job.state == "succeeded":
                return dict(job.result.get("metrics", {}))
            if job.state in ("failed", "cancelled"):
                raise SystemExit(f"job {job_id} {job.state}: {job.error}")
        time.sleep(0.25)
    raise SystemExit(f"job {job_id} did not finish in {timeout:.0f} s")


def run_child(job_id: int, log: Path) -> None:
    """Claim the job and run its child entry point in a process of its own, as a worker does."""
    from models_db import session_scope
    from models_db import jobs as jobq

    with session_scope() as db:
        claim = jobq.claim(db, job_id, "bench", lease_seconds=3600)
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-m", "worker.job_process", str(job_id), str(claim.fence)], cwd=ROOT,
                       stdout=out, stderr=subprocess.STDOUT, check=False)


class Worker:
    """A real ``studio worker`` process on the scratch home, registered before use."""

    def __init__(self, log: Path):
        self.log = open(log, "ab")  # noqa: SIM115 - held open for the worker's lifetime, closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "worker"], cwd=ROOT, env={**os.environ},
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        from models_db import Worker as Row
        from models_db import session_scope

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited with {self.proc.returncode}; see {self.log.name}")
            with session_scope() as db:
                if db.query(Row).filter(Row.id.like(f"%-{self.proc.pid}")).count():
                    return
            time.sleep(0.5)
        raise SystemExit("the worker did not register in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def cancel_leftovers() -> None:
    """Cancel jobs an interrupted earlier run left queued or running in this scratch home."""
    from models_db import Job, session_scope
    from studio.operations import cancel_job

    with session_scope() as db:
        ids = [j.id for j in db.query(Job).filter(Job.state.in_(("queued", "running")))]
    for job_id in ids:
        cancel_job(job_id)


def wait_idle(timeout: float = 1800) -> None:
    """Wait until the queue is empty: the studio queues follow-up work after a training job (an
    evaluation of the new version), which must not run beside the next timed run."""
    from models_db import Job, session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as db:
            if not db.query(Job).filter(Job.state.in_(("queued", "running"))).count():
                return
        time.sleep(0.5)
    raise SystemExit("the queue did not empty in time")
