"""The fleet as people see it: each registered worker with its GPUs, whether it is alive (by its last
heartbeat), the queues it consumes and the job it runs. The Fleet tab and ``studio workers list`` read
this; the worker writes it (worker/consumer.py registers and heartbeats, worker/fleet.py the current job)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from models_db import Job, JobState, Worker
from models_db.schema import utcnow
from studio import routing


def takes_jobs(queues: str | None) -> bool:
    """Whether a worker started on ``queues`` takes jobs (it consumes the default queue: training,
    evaluations, exports), as opposed to an interactive-only worker that serves generations."""
    names = [n.strip() for n in (queues or routing.default_queue()).split(",")]
    return routing.default_queue() in names


def alive_job_workers(db) -> list[Worker]:
    """The alive workers that take jobs (an export goes to any of them)."""
    since = routing.alive_since(utcnow())
    return [w for w in db.scalars(select(Worker).where(Worker.last_heartbeat >= since)) if takes_jobs(w.queues)]


def gpu_text(gpus: list[dict]) -> str:
    """'2 × NVIDIA H100 80GB HBM3 (79.2 GB)', or 'CPU only'."""
    if not gpus:
        return "CPU only"
    groups: dict[str, int] = {}
    for g in gpus:
        label = f"{g.get('name', 'GPU')} ({float(g.get('memory_gb') or 0):g} GB)"
        groups[label] = groups.get(label, 0) + 1
    return ", ".join(f"{n} × {label}" if n > 1 else label for label, n in groups.items())


def worker_json(w: Worker, running: dict[str, Job], now: datetime) -> dict:
    """One worker as ``studio workers list --json`` prints it. Its current job is the one it recorded,
    checked against the jobs table (a job running under its id counts even if the record lags)."""
    alive = w.last_heartbeat is not None and w.last_heartbeat >= routing.alive_since(now)
    job = running.get(w.id)
    current = job.id if job is not None else (w.current_job_id if alive else None)
    return {
        "id": w.id, "host": w.host, "alive": alive, "gpus": list(w.gpus or []), "gpu_text": gpu_text(w.gpus or []),
        "queues": routing.consumed_queues(w.queues or routing.default_queue(), list(w.gpus or [])),
        "current_job_id": current, "current_job": _job_text(job) if job is not None else "",
        "last_heartbeat": w.last_heartbeat.isoformat(timespec="seconds") if w.last_heartbeat else None,
        "seconds_since_heartbeat": round((now - w.last_heartbeat).total_seconds(), 1) if w.last_heartbeat else None,
        "started_at": w.started_at.isoformat(timespec="seconds") if w.started_at else None,
    }


def _job_text(job: Job) -> str:
    method = (job.config or {}).get("method", job.kind)
    return f"#{job.id} {method} step {job.step}/{job.max_steps or '?'}"


def list_workers(db, *, include_dead: bool = True) -> list[dict]:
    """Every registered worker, alive ones first (then by host and id)."""
    now = utcnow()
    running = {j.worker_id: j for j in db.scalars(select(Job).where(Job.state == JobState.running)) if j.worker_id}
    rows = [worker_json(w, running, now) for w in db.scalars(select(Worker))]
    rows = [r for r in rows if include_dead or r["alive"]]
    return sorted(rows, key=lambda r: (not r["alive"], r["host"], r["id"]))


def where_jobs_run(db) -> list[dict]:
    """Running jobs and the worker (host, GPUs) each runs on, oldest first."""
    workers = {w.id: w for w in db.scalars(select(Worker))}
    out = []
    for j in db.scalars(select(Job).where(Job.state == JobState.running).order_by(Job.started_at, Job.id)):
        w = workers.get(j.worker_id or "")
        out.append({"job_id": j.id, "kind": j.kind, "method": (j.config or {}).get("method", j.kind),
                    "worker": j.worker_id, "host": w.host if w else "", "gpus": gpu_text(w.gpus or []) if w else "",
                    "queue": j.queue or routing.default_queue(), "step": j.step, "max_steps": j.max_steps,
                    "attempt": j.attempt})
    return out
