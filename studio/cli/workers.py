"""`studio workers list`: the fleet, its GPUs, which workers are alive and what each runs."""
from __future__ import annotations

from models_db import session_scope
from studio import fleet
from studio.cli.common import emit


def _line(w: dict) -> str:
    state = "alive" if w["alive"] else f"dead (last seen {w['last_heartbeat']})"
    job = f", running job {w['current_job_id']}" if w["current_job_id"] else (", idle" if w["alive"] else "")
    return f"{w['id']}  {w['host']}  {w['gpu_text']}  {state}{job}\n  queues: {', '.join(w['queues'])}"


def cmd_workers_list(args):
    with session_scope() as db:
        rows = fleet.list_workers(db, include_dead=not args.alive)
        running = fleet.where_jobs_run(db)
    text = "\n".join(_line(w) for w in rows) or "no workers have registered yet: start one with `studio worker`"
    emit(args, {"workers": rows, "running": running}, text)


def register(sub, add, group) -> None:
    g = group("workers", "the fleet of workers")
    sp = add(g, "list", cmd_workers_list, "registered workers, their GPUs, alive or dead, and their current job")
    sp.add_argument("--alive", action="store_true", help="only the workers alive now")
