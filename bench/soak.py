"""Chaos soak: a queue of mixed jobs on real Postgres and Redis while a controller breaks things at random.

Loopback only, bounded in time and in count. It starts its own ``redis-server`` (no persistence: a restart
loses every message, as a crash of a default install can) on a free port, uses a fresh schema of the
Postgres at ``--pg`` (``STUDIO_TEST_POSTGRES_URL``; dropped at the end), a scratch ``STUDIO_HOME``, a
``studio serve --no-worker`` for the UI, ``--workers`` training workers and one interactive worker. It
submits ``--jobs`` jobs of mixed kinds (train first; evaluate, export and generate on the versions as they
appear) while a controller, every 2-6 s (seeded), does one of: kill -9 a worker (a new one replaces it),
kill -9 a running job's training process, restart Redis, kill -9 and restart the studio process, cancel a
job (at most a few). A poller times the UI (``GET /config``: any answer counts) every second and the CLI
(``studio jobs list --json``) every few seconds. Then it waits for every job to end and checks:

- **stuck**: a job or generation not in a final state at the deadline, or a row left ``running``;
- **lost**: a succeeded training job without its version, an export without its zip, a generation lost;
- **duplicated**: a training job with more than one version, or more than one attempt that succeeded;
- **torn**: a checkpoint folder without its completion mark left by a succeeded job, or a version whose
  adapter file does not read as safetensors.

It prints the counts (jobs by kind and state, faults by kind, lost, duplicated, stuck, torn, the poll
latencies) and exits 1 when any of lost, duplicated, stuck or torn is not 0. ``--json`` prints them as one
JSON object. ``tests/faults/test_soak.py`` runs a short form in CI; the figures of a full run are in
docs/reliability.md.

    .venv/bin/python bench/soak.py [--jobs 20] [--workers 2] [--minutes 10] [--faults 30] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FINAL = ("succeeded", "failed", "cancelled")
TRAIN = {"max_steps": 24, "save_steps": 4, "logging_steps": 2, "learning_rate": 5e-3, "per_device_train_batch_size": 4,
         "eval_split": 0, "eval_steps": 100000, "seed": 7, "r": 4, "save_total_limit": 2}
FAULTS = ("kill_worker", "kill_training", "restart_redis", "restart_studio", "cancel")


def say(*args) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(proc: subprocess.Popen | None) -> bool:
    return proc is not None and proc.poll() is None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Redis:
    """A redis-server of the soak's own on a free loopback port, without persistence."""

    def __init__(self, root: Path):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise SystemExit("soak: redis-server is not installed (apt-get install redis-server)")
        self.root, self.port, self.proc = root, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("soak: redis-server did not start")

    def kill(self) -> None:
        if alive(self.proc):
            self.proc.kill()
            self.proc.wait()


class Soak:
    """The studio under test: its environment, processes, submitted work and the faults done to it."""

    def __init__(self, args, root: Path, pg_url: str, redis: Redis):
        self.args, self.root, self.redis = args, root, redis
        self.rng = random.Random(args.seed)
        self.port = free_port()
        self.env = {**os.environ, "STUDIO_HOME": str(root / "home"), "STUDIO_DATABASE_URL": pg_url,
                    "STUDIO_BROKER_URL": redis.url, "STUDIO_PORT": str(self.port),
                    "STUDIO_WORKER_QUEUES": f"soak{uuid.uuid4().hex[:8]}", "STUDIO_HEARTBEAT_SECONDS": "1",
                    "STUDIO_LEASE_SECONDS": "10", "STUDIO_RESEND_SECONDS": "3", "STUDIO_MAX_ATTEMPTS": "8",
                    "STUDIO_GENERATION_STALE_SECONDS": "15"}
        self.env.pop("STUDIO_USER", None)
        self.workers: list[subprocess.Popen] = []
        self.interactive = self.studio = None
        self.jobs: dict[int, str] = {}  # job id -> kind
        self.generations: list[int] = []
        self.faults: Counter = Counter()
        self.studio_down_until = 0.0
        self.ui: list[float | None] = []  # seconds per poll; None: no answer
        self.ui_during_restart = 0
        self.cli: list[float | None] = []
        self.stop = threading.Event()

    # --- processes -----------------------------------------------------------------------------------------
    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.root / log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "studio.cli", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self) -> None:
        self.workers.append(self._spawn(["worker"], f"worker-{len(self.workers) + 1}.log"))

    def start_studio(self) -> None:
        self.studio_down_until = time.monotonic() + 90  # until its first answer: starting, not failing
        self.studio = self._spawn(["serve", "--no-worker"], "studio.log")

    def stop_all(self) -> None:
        procs = [p for p in [*self.workers, self.interactive, self.studio] if alive(p)]
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # --- set-up --------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Migrate, a tiny model and a data set with a stored eval split, the processes."""
        for key in ("STUDIO_HOME", "STUDIO_DATABASE_URL", "STUDIO_BROKER_URL", "STUDIO_WORKER_QUEUES",
                    "STUDIO_RESEND_SECONDS", "STUDIO_MAX_ATTEMPTS", "STUDIO_LEASE_SECONDS", "STUDIO_HEARTBEAT_SECONDS"):
            os.environ[key] = self.env[key]
        from models_db.migrate import upgrade
        from studio import operations
        from studio.datasets.split import Split
        from tests.cli import write_instruction_jsonl
        from tests.tiny import build_tiny_llama, register_tiny_base

        upgrade()
        model_dir = build_tiny_llama(self.root / "tiny")
        self.model_id = register_tiny_base(model_dir)
        data, held_out = self.root / "pairs.jsonl", self.root / "held_out.jsonl"
        write_instruction_jsonl(data)
        write_instruction_jsonl(held_out, 4)
        self.dataset_id = operations.add_dataset(data, split=Split(eval_file=held_out))[0].id
        self.start_studio()
        for _ in range(self.args.workers):
            self.start_worker()
        self.interactive = self._spawn(["worker", "--queues", "interactive"], "interactive.log")

    # --- work ----------------------------------------------------------------------------------------------
    def submit_train(self) -> None:
        from studio import operations
        from studio.jobspec import build_train_spec

        spec = build_train_spec(model_id=self.model_id, dataset_id=self.dataset_id, method="lora", settings=TRAIN)
        job, _ = operations.submit_train(spec, idempotency_key=uuid.uuid4().hex)
        self.jobs[job.id] = "train"

    def versions(self) -> list[int]:
        from sqlalchemy import select

        from models_db import ModelVersion, session_scope

        with session_scope() as db:
            return list(db.scalars(select(ModelVersion.id).order_by(ModelVersion.id)))

    def submit_follow_up(self) -> bool:
        """One evaluate, export or generate request on a version made so far (False: no version yet)."""
        from studio import evaluations, generations, operations

        made = self.versions()
        if not made:
            return False
        vid = self.rng.choice(made)
        kind = ("evaluate", "export", "generate")[len([k for k in self.jobs.values() if k != "train"]
                                                      + self.generations) % 3]
        if kind == "evaluate":
            job, _ = evaluations.submit_evaluate(vid, self.dataset_id)
            self.jobs[job.id] = "evaluate"
        elif kind == "export":
            job = operations.submit_export(vid, format="adapter")
            self.jobs[job.id] = "export"
        else:
            [row] = generations.request([vid], [f"What is {len(self.generations)} plus 1?"], {"max_new_tokens": 4})
            self.generations.append(row["id"])
        return True

    def feed(self) -> None:
        """Submit the queue: about half training first, the rest as versions appear."""
        trains = max(2, self.args.jobs // 2)
        for _ in range(trains):
            self.submit_train()
        while not self.stop.is_set() and len(self.jobs) + len(self.generations) < self.args.jobs:
            try:
                if not self.submit_follow_up():
                    time.sleep(1)
            except Exception as e:  # noqa: BLE001  a refusal (a version deleted meanwhile): try another
                say(f"follow-up not queued: {e}")
                time.sleep(1)

    # --- faults --------------------------------------------------------------------------------------------
    def running_children(self) -> list[int]:
        from sqlalchemy import select

        from models_db import Job, session_scope

        with session_scope() as db:
            jobs = list(db.scalars(select(Job).where(Job.state == "running", Job.kind == "train")))
            return [int(j.history[-1]["pid"]) for j in jobs if j.history and j.history[-1].get("pid")
                    and pid_alive(int(j.history[-1]["pid"]))]

    def fault(self, kind: str) -> bool:
        """Do one fault of ``kind``; False when there was nothing to do it to."""
        if kind == "kill_worker":
            live = [p for p in self.workers if alive(p)]
            if not live:
                return False
            victim = self.rng.choice(live)
            os.killpg(victim.pid, signal.SIGKILL)  # the worker and its training process (PR_SET_PDEATHSIG too)
            victim.wait()
            self.start_worker()
        elif kind == "kill_training":
            pids = self.running_children()
            if not pids:
                return False
            os.kill(self.rng.choice(pids), signal.SIGKILL)
        elif kind == "restart_redis":
            self.redis.kill()
            time.sleep(self.rng.uniform(0.5, 2.0))
            self.redis.start()
        elif kind == "restart_studio":
            os.killpg(self.studio.pid, signal.SIGKILL)
            self.studio.wait()
            self.start_studio()
        elif kind == "cancel":
            from studio.operations import cancel_job

            open_jobs = [j for j in self.jobs if self.state(j) not in FINAL]
            if not open_jobs or self.faults["cancel"] >= max(1, self.args.jobs // 8):
                return False
            cancel_job(self.rng.choice(open_jobs))
        self.faults[kind] += 1
        return True

    def controller(self, until: float) -> None:
        while not self.stop.is_set() and time.monotonic() < until and sum(self.faults.values()) < self.args.faults:
            self.stop.wait(self.rng.uniform(2, 6))
            if self.stop.is_set() or self.all_final():
                return
            kinds = list(FAULTS)
            self.rng.shuffle(kinds)
            for kind in kinds:  # the first fault that has something to act on
                if self.fault(kind):
                    say(f"fault: {kind} ({dict(self.faults)})")
                    break

    # --- polling -------------------------------------------------------------------------------------------
    def poll_ui(self) -> None:
        while not self.stop.wait(1.0):
            start = time.monotonic()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/config", timeout=5).close()
                answered = True
            except urllib.error.HTTPError:  # 401 without a login: the server answered
                answered = True
            except OSError:
                answered = False
            took = time.monotonic() - start
            if answered:
                self.ui.append(took)
                if self.studio_down_until:  # back up after a restart
                    self.studio_down_until = 0.0
            elif time.monotonic() < self.studio_down_until:
                self.ui_during_restart += 1
            else:
                self.ui.append(None)

    def poll_cli(self) -> None:
        while not self.stop.wait(4.0):
            start = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "studio.cli", "jobs", "list", "--json"], env=self.env,
                               capture_output=True, timeout=60, check=False)
            self.cli.append(time.monotonic() - start if p.returncode == 0 else None)

    # --- the end -------------------------------------------------------------------------------------------
    def state(self, job_id: int) -> str:
        from models_db import Job, session_scope

        with session_scope() as db:
            return db.get(Job, job_id).state

    def all_final(self) -> bool:
        from sqlalchemy import select

        from models_db import Generation, Job, session_scope

        with session_scope() as db:
            open_jobs = db.scalar(select(Job.id).where(Job.id.in_(list(self.jobs)), Job.state.not_in(FINAL)).limit(1))
            open_gens = db.scalar(select(Generation.id).where(Generation.id.in_(self.generations),
                                                              Generation.state.not_in(("done", "failed"))).limit(1))
        return len(self.jobs) + len(self.generations) >= self.args.jobs and open_jobs is None and open_gens is None

    def verdict(self) -> dict:
        from sqlalchemy import func, select

        from models_db import Generation, Job, ModelVersion, session_scope

        home = Path(self.env["STUDIO_HOME"])
        with session_scope() as db:
            jobs = {j.id: j for j in db.scalars(select(Job))}
            per_job = dict(db.execute(select(ModelVersion.job_id, func.count()).group_by(ModelVersion.job_id)).all())
            versions = list(db.scalars(select(ModelVersion)))
            gens = {g.id: g.state for g in db.scalars(select(Generation).where(Generation.id.in_(self.generations)))}
            db.expunge_all()
        stuck = [j for j in self.jobs if jobs[j].state not in FINAL] + \
            [j for j, job in jobs.items() if job.state == "running"]
        stuck += [g for g in self.generations if gens.get(g) not in ("done", "failed")]
        duplicated = [j for j, n in per_job.items() if n > 1]
        duplicated += [j for j in self.jobs if sum(1 for a in jobs[j].history or [] if a.get("outcome") == "succeeded") > 1]
        lost = [j for j in self.jobs if self.jobs[j] == "train" and jobs[j].state == "succeeded" and not per_job.get(j)]
        lost += [j for j in self.jobs if self.jobs[j] == "export" and jobs[j].state == "succeeded"
                 and not (home / (jobs[j].result or {}).get("zip", "missing")).exists()]
        lost += [g for g in self.generations if g not in gens]
        torn = []
        for j in self.jobs:
            folder = home / "jobs" / str(j) / "checkpoints"
            if jobs[j].state == "succeeded" and folder.is_dir():
                torn += [str(p) for p in folder.glob("checkpoint-*") if p.is_dir() and not (p / "STUDIO_COMPLETE").exists()]
        for v in versions:
            adapter = home / v.artifacts.get("adapter", "") / "adapter_model.safetensors" if v.artifacts.get("adapter") else None
            if adapter is not None and not _reads_as_safetensors(adapter):
                torn.append(str(adapter))
        kinds = Counter(f"{self.jobs[j]} {jobs[j].state}" for j in self.jobs)
        kinds.update(f"generate {gens.get(g, 'lost')}" for g in self.generations)
        return {"jobs": len(self.jobs) + len(self.generations), "by_kind_and_state": dict(sorted(kinds.items())),
                "attempts": sum(jobs[j].attempt for j in self.jobs), "faults": dict(self.faults),
                "faults_total": sum(self.faults.values()), "lost": len(lost), "duplicated": len(duplicated),
                "stuck": len(stuck), "torn": len(torn), "details": {"lost": lost, "duplicated": duplicated,
                                                                    "stuck": stuck, "torn": torn},
                "ui": _latency(self.ui, self.ui_during_restart), "cli": _latency(self.cli, 0)}


def _reads_as_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > path.stat().st_size:
                return False
            json.loads(f.read(length))
        return True
    except (OSError, ValueError):
        return False


def _latency(samples: list[float | None], during_restart: int) -> dict:
    took = sorted(s for s in samples if s is not None)
    pct = (lambda q: round(took[min(len(took) - 1, int(q * len(took)))] * 1000)) if took else (lambda q: None)
    return {"polls": len(samples) + during_restart, "answered": len(took), "unanswered": len(samples) - len(took),
            "unanswered_while_the_studio_restarted": during_restart,
            "p50_ms": round(statistics.median(took) * 1000) if took else None, "p95_ms": pct(0.95),
            "max_ms": round(took[-1] * 1000) if took else None}


def _schema(pg: str, name: str, create: bool) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(pg)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {name}" if create else f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()
    return f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{name}"


def run(args) -> dict:
    pg = args.pg or os.environ.get("STUDIO_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("soak: give --pg URL or set STUDIO_TEST_POSTGRES_URL (a Postgres on loopback)")
    root = Path(tempfile.mkdtemp(prefix="studio-soak-"))
    schema = f"soak{uuid.uuid4().hex[:10]}"
    redis = Redis(root)
    soak = Soak(args, root, _schema(pg, schema, True), redis)
    threads = []
    try:
        say(f"setting up in {root} (schema {schema}, redis {redis.url})")
        soak.setup()
        deadline = time.monotonic() + args.minutes * 60
        threads = [threading.Thread(target=t, daemon=True) for t in (soak.feed, soak.poll_ui, soak.poll_cli)]
        for t in threads:
            t.start()
        soak.controller(until=deadline - args.settle)
        say(f"faults over ({dict(soak.faults)}); waiting for every job to end")
        while time.monotonic() < deadline and not soak.all_final():
            time.sleep(1)
        soak.stop.set()
        for t in threads:
            t.join(70)
        return soak.verdict()
    finally:
        soak.stop.set()
        soak.stop_all()
        redis.kill()
        _schema(pg, schema, False)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--jobs", type=int, default=20, help="jobs and generations to submit (at least 4)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--minutes", type=float, default=10, help="the whole run's bound, faults and settling included")
    p.add_argument("--settle", type=float, default=120, help="seconds kept at the end for jobs to finish, faults off")
    p.add_argument("--faults", type=int, default=30, help="at most this many faults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pg", help="Postgres URL (default: STUDIO_TEST_POSTGRES_URL)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs) at the end")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"jobs {out['jobs']} ({out['attempts']} attempts): {out['by_kind_and_state']}")
        print(f"faults {out['faults_total']}: {out['faults']}")
        print(f"lost {out['lost']}, duplicated {out['duplicated']}, stuck {out['stuck']}, torn {out['torn']}")
        for name in ("ui", "cli"):
            print(f"{name}: {out[name]}")
    bad = any(out[k] for k in ("lost", "duplicated", "stuck", "torn"))
    if bad:
        print(f"details: {out['details']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
