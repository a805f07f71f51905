"""Fleet tab: the registered workers (host, GPUs with name and memory, alive or dead by their last
heartbeat, the queues they consume, the job each runs) and which job runs where. Read-only; it
refreshes when opened, on a slow timer and with its button."""
from __future__ import annotations

import gradio as gr

from models_db import session_scope
from studio import fleet
from studio.tabs import audit_box
from studio.tab_state import Shell

WORKER_COLUMNS = ["worker", "host", "GPUs", "state", "last heartbeat", "current job", "queues"]
RUNNING_COLUMNS = ["job", "method", "worker", "host", "GPUs", "queue", "step", "attempt"]
REFRESH_SECONDS = 10.0


def _since(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def _queues(queues: list[str]) -> str:
    """The default queue and the largest tier, not every tier (a worker with 8 GPUs consumes dozens)."""
    return queues[0] if len(queues) == 1 else f"{queues[0]} + {len(queues) - 1} tiers up to {queues[-1]}"


def worker_rows() -> list[list]:
    """One row per registered worker, alive ones first."""
    with session_scope() as db:
        workers = fleet.list_workers(db)
    return [[w["id"], w["host"], w["gpu_text"], "alive" if w["alive"] else "dead",
             _since(w["seconds_since_heartbeat"]), w["current_job"] or (f"#{w['current_job_id']}" if
                                                                         w["current_job_id"] else "idle"),
             _queues(w["queues"])] for w in workers]


def running_rows() -> list[list]:
    """One row per running job: where it runs."""
    with session_scope() as db:
        jobs = fleet.where_jobs_run(db)
    return [[j["job_id"], j["method"], j["worker"], j["host"], j["gpus"], j["queue"],
             f"{j['step']} / {j['max_steps'] or '?'}", j["attempt"]] for j in jobs]


def summary(rows: list[list]) -> str:
    alive = [r for r in rows if r[3] == "alive"]
    busy = [r for r in alive if r[5] != "idle"]
    if not rows:
        return "No worker has registered yet. Start one with `studio worker` (embedded mode starts one with `studio serve`)."
    return f"**{len(alive)}** of {len(rows)} registered workers alive · **{len(busy)}** busy, {len(alive) - len(busy)} idle"


def refresh():
    """The tab's tables and summary line, read fresh from the database."""
    workers = worker_rows()
    return summary(workers), workers, running_rows()


def render(shell: Shell) -> None:
    with gr.Row():
        line = gr.Markdown(elem_id="fleet-summary")
        button = gr.Button("Refresh", scale=0, elem_id="fleet-refresh")
    workers = gr.Dataframe(headers=WORKER_COLUMNS, label="Workers (dead: no heartbeat for a lease)",
                           interactive=False, wrap=True, elem_id="fleet-workers")
    running = gr.Dataframe(headers=RUNNING_COLUMNS, label="Running jobs and where they run", interactive=False,
                           elem_id="fleet-running")
    outputs = [line, workers, running]
    button.click(refresh, None, outputs)
    gr.Timer(REFRESH_SECONDS).tick(refresh, None, outputs, show_progress="hidden")
    shell.on_select["fleet"] = (refresh, [], outputs)
    audit_box.render(shell.on_load)
