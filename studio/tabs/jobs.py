"""Jobs tab: watch a job live (state, progress and ETA, loss curves, throughput, log tail), see its
attempts (where each resumed, how each ended) and the queue (running jobs, then queued ones in order),
and cancel a queued or running job.

Every kind of job is listed (train, evaluate, combine, export), with its kind in the picker; the page
shows what fits the kind (``VIEWS``): a training job its loss and system charts and training stats, the
others their log and result (an export's zip, an evaluation's metrics, a combination's new version).

A gr.Timer polls the database; each poll reads only metric points newer than the last one seen,
kept per browser tab in gr.State as curves thinned to a few thousand points (studio/curves.py), so a
run with a million points stays light. Under the loss curves, the system chart (CPU, RAM, GPU memory
and utilisation, sampled by the worker). Reloading the page loses nothing: the job lives in the database."""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from models_db import Dataset, Job, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from models_db.schema import utcnow
from studio import services
from studio.advisor.jobcost import describe_memory, estimate_vs_measured
from studio.curves import LiveCurves
from studio.settings import get_settings
from studio.shell import Shell, friendly

CURVES = ("loss", "eval_loss")
# the system chart: percentages only, so the curves share one axis (the worker's sys_* GiB figures are in
# TensorBoard and the job's metrics)
SYSTEM = {"sys_cpu_pct": "CPU", "sys_ram_pct": "RAM", "sys_gpu_util_pct": "GPU util", "sys_gpu_mem_pct": "GPU memory"}
ATTEMPT_COLUMNS = ["#", "worker", "started", "resumed at", "reached", "outcome", "reason"]
QUEUE_COLUMNS = ["place", "job", "what", "state", "waits for job", "step", "submitted"]


def _train_what(j: Job) -> str:
    method = (j.config or {}).get("method", "train")
    return f"{method} on data set #{j.dataset_id}" if j.dataset_id else method


def _export_what(j: Job) -> str:
    cfg = j.config or {}
    return f"version #{cfg.get('version_id')} as {cfg.get('format') or ('merged' if cfg.get('merged') else 'adapter')}"


def _evaluate_what(j: Job) -> str:
    cfg = j.config or {}
    return f"version #{cfg.get('version_id')} on data set #{cfg.get('dataset_id')}"


def _combine_what(j: Job) -> str:
    cfg = j.config or {}
    parents, weights = cfg.get("parents") or [], cfg.get("weights") or []
    parts = [f"#{p} × {w:g}" for p, w in zip(parents, weights)] if len(weights) == len(parents) else [f"#{p}" for p in parents]
    return f"{cfg.get('combination', 'linear')} of {' + '.join(parts)}"


def _metrics_text(metrics: dict) -> str:
    return " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _evaluations_html(result: dict) -> str:
    items = "".join(f"<li>data set #{e.get('dataset_id')} ({e.get('split', 'eval')}, {e.get('rows', '?')} rows): "
                    f"{html.escape(_metrics_text(e.get('metrics') or {}))}</li>" for e in result.get("evaluations") or [])
    return f"<ul class='job-evals'>{items}</ul>" if items else ""


def _train_result(j: Job) -> str:
    version = (j.result or {}).get("version_id")
    return f"Model version #{version} is ready on the Versions tab." if version else ""


def _export_result(j: Job) -> str:
    r = j.result or {}
    if not r.get("zip"):
        return ""
    speed = f" · {r['ms_per_token']:.3g} ms/token measured on the export" if r.get("ms_per_token") else ""
    return (f"The {html.escape(str(r.get('format', 'export')))} export of version #{r.get('version_id')} is ready to "
            f"download on the Versions tab: <code>{html.escape(str(r['zip']))}</code>{speed}")


def _evaluate_result(j: Job) -> str:
    evals = _evaluations_html(j.result or {})
    return f"Evaluated (the Versions tab compares versions on it):{evals}" if evals else ""


def _combine_result(j: Job) -> str:
    r = j.result or {}
    if not r.get("version_id"):
        return ""
    evals = _evaluations_html(r)
    kept = f" On each parent's data set:{evals}" if evals else ""
    return f"Combined version #{r['version_id']} is ready on the Versions tab.{kept}"


@dataclass(frozen=True)
class KindView:
    """What the job page shows for one kind of job: what it works on, whether it has the training charts
    and stats (loss, throughput, system), and its result once it succeeded (HTML)."""

    what: Callable[[Job], str]
    charts: bool
    result: Callable[[Job], str]


VIEWS = {
    "train": KindView(_train_what, True, _train_result),
    "evaluate": KindView(_evaluate_what, False, _evaluate_result),
    "combine": KindView(_combine_what, False, _combine_result),
    "export": KindView(_export_what, False, _export_result),
}


def view(kind: str) -> KindView:
    """The kind's view; a kind this tab does not know shows its progress, log and raw result."""
    return VIEWS.get(kind) or KindView(lambda j: j.kind, False, lambda j: html.escape(str(j.result or "")))


def job_label(j: Job) -> str:
    """The picker's label: the kind, then what it works on ('#12 export · version #4 as merged · Mar 01 10:00')."""
    return f"#{j.id} {j.kind} · {view(j.kind).what(j)} · {j.created_at:%b %d %H:%M}"


def job_choices() -> list[tuple[str, int]]:
    """Every job, newest first, whatever its kind."""
    with session_scope() as db:
        return [(job_label(j), j.id) for j in q.list_jobs(db, kind=None)]


def default_job(current: int | None) -> int | None:
    """The job to show when the page opens: the one already watched, else the newest running one, else the newest."""
    if current:
        return current
    with session_scope() as db:
        jobs = q.list_jobs(db, kind=None, limit=50)
    pick = [j for j in jobs if j.state == "running"] or jobs
    return pick[0].id if pick else None


def eta_seconds(pace: list | None, step: int, max_steps: int) -> float | None:
    """Remaining time from the pace of the logged steps of the current attempt: ``pace`` is
    [time of its first loss point, its step, time of its latest, its step]."""
    if not pace or not max_steps or step >= max_steps:
        return None
    t0, s0, t1, s1 = pace
    dt, ds = (t1 - t0).total_seconds(), s1 - s0
    return dt / ds * (max_steps - step) if ds > 0 and dt > 0 else None


def _fmt_secs(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _fmt(latest: dict, name: str, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return f"{latest[name] * scale:{spec}}{unit}" if latest.get(name) is not None else "—"


def throughput_stats(latest: dict) -> list[tuple[str, str]]:
    """The latest logging step's speed: real tokens/s (padding excluded), samples/s, step time, and on
    CUDA the model FLOPs utilisation (with HFU beside it when activations are recomputed)."""
    stats = [("tokens/s", _fmt(latest, "tokens_per_s", ",.0f")), ("samples/s", _fmt(latest, "samples_per_s", ".3g")),
             ("step time", _fmt(latest, "step_time_s", ".3g", unit=" s"))]
    if latest.get("mfu") is not None:
        hfu = f" (HFU {100 * latest['hfu']:.1f}%)" if latest.get("hfu") is not None else ""
        stats.append(("MFU", f"{100 * latest['mfu']:.1f}%{hfu}"))
    return stats


def _stats(job: Job, latest: dict, pace: list | None) -> list[tuple[str, str]]:
    """The stat cards: a training job's speed, losses, ETA and memory; any other job's attempt and timing."""
    if not view(job.kind).charts:
        took = ((job.finished_at or utcnow()) - job.started_at).total_seconds() if job.started_at else None
        return [("attempt", f"{job.attempt} of {job.max_attempts}"),
                ("started", f"{job.started_at:%b %d %H:%M:%S}" if job.started_at else "—"),
                ("took" if job.finished_at else "running for", _fmt_secs(took))]
    eta = eta_seconds(pace, job.step, job.max_steps)
    memory = describe_memory(estimate_vs_measured(job.config, job.result))
    if not job.result and latest.get("peak_memory_gb") is not None:  # running: the peak so far
        memory = f"{latest['peak_memory_gb']:.2f} GB so far · {memory}"
    return [("learning rate", f"{latest['learning_rate']:.3g}" if "learning_rate" in latest else "—"),
            *throughput_stats(latest),
            ("train loss", f"{latest['loss']:.4f}" if "loss" in latest else "—"),
            ("eval loss", f"{latest['eval_loss']:.4f}" if "eval_loss" in latest else "—"),
            ("attempt", f"{job.attempt} of {job.max_attempts}"),
            ("ETA", _fmt_secs(eta) if job.state == "running" else "—"),
            ("peak memory", memory)]


def status_html(job: Job, latest: dict | None = None, pace: list | None = None) -> str:
    """The job's head, progress bar, stat cards and, once it succeeded, its result; ``latest`` holds each
    metric's newest value. What the cards and the result say follows the job's kind (``VIEWS``)."""
    frac = job.step / job.max_steps if job.max_steps else 0.0
    cards = "".join(f'<div class="stat"><div class="k">{k}</div><div class="v">{v}</div></div>'
                    for k, v in _stats(job, dict(latest or {}), pace))
    err = f'<div class="job-error">{html.escape(job.error)}</div>' if job.error else ""
    result = view(job.kind).result(job) if job.result else ""
    done = f'<div class="job-done">{result}</div>' if result else ""
    what = html.escape(f"{job.kind}: {view(job.kind).what(job)}")
    return f"""<div class="job-status">
  <div class="job-head"><span class="badge {job.state}">{job.state}</span>
    <span class="job-title">Job #{job.id} · {what}</span>
    <span class="job-msg">{html.escape(job.message or '')}</span></div>
  <div class="bar"><div class="fill" style="width:{100 * frac:.1f}%"></div></div>
  <div class="bar-label">step {job.step} / {job.max_steps or '?'} ({100 * frac:.0f}%){_resumed(job)}</div>
  <div class="stats">{cards}</div>{err}{done}</div>"""


def _resumed(job: Job) -> str:
    return f" · attempt {job.attempt} resumed from step {job.resume_step}" if job.resume_step else ""


def attempt_rows(job: Job) -> list[list]:
    """One row per attempt: where it ran, the step it resumed from and reached, how it ended and why."""
    rows = []
    for a in job.history or []:
        current = a.get("attempt") == job.attempt and a.get("outcome") == "running"
        resumed = job.resume_step if current else a.get("resumed_from", 0)
        reached = job.step if current else a.get("reached_step", "")
        rows.append([a.get("attempt"), a.get("worker", ""), (a.get("started_at") or "").replace("T", " "),
                     resumed or "start", reached, a.get("outcome", ""), a.get("reason") or ""])
    return rows


def queue_rows() -> list[list]:
    """Running jobs, then queued ones in the order they will start, with what each waits for."""
    with session_scope() as db:
        places = q.queue_positions(db)
        active = q.active_jobs(db)
        return [[places.get(j.id, "running"), j.id, f"{j.kind} · {view(j.kind).what(j)}", j.state,
                 j.after_job_id or "", f"{j.step} / {j.max_steps or '?'}", f"{j.created_at:%b %d %H:%M}"]
                for j in active]


def curve_frame(points: list[dict] | LiveCurves, series: tuple[str, ...] = ("loss",)) -> pd.DataFrame:
    """The loss chart's rows (step, value, series), each curve thinned to at most a few thousand points
    (min/max buckets). A retry resumes at its checkpoint and logs those steps again: its points win.
    Every name in ``series`` gets at least a blank (NaN) row once any point exists (studio/curves.py)."""
    curves = points if isinstance(points, LiveCurves) else _curves_of(points)
    return curves.frame(CURVES, series)


def _curves_of(points: list[dict]) -> LiveCurves:
    curves = LiveCurves()
    for p in sorted(points, key=lambda p: (p["attempt"], p["step"])):
        if p["name"] in CURVES:
            curves.add(p["name"], p["step"], p["value"], p["attempt"])
    return curves


def system_frame(curves: LiveCurves) -> pd.DataFrame:
    """The system chart's rows (minutes since the job's first point, percent, series label)."""
    df = curves.frame(SYSTEM, x="minutes", x_type="float64")
    df["series"] = df["series"].map(SYSTEM)
    return df


def _take(cache: dict, rows) -> None:
    """Fold new metric rows (id, step, name, value, attempt, time) into the tab's cache: the loss curves
    by step, the system curves by time, each metric's latest value, and the current attempt's pace."""
    curves, system, latest = cache["curves"], cache["system"], cache["latest"]
    for _id, step, name, value, attempt, when in rows:
        latest[name] = value
        if name in CURVES:
            curves.add(name, step, value, attempt)
            if name == "loss":
                pace = cache["pace"]
                if pace is None or pace[4] != attempt:
                    cache["pace"] = [when, step, when, step, attempt]
                else:
                    pace[2:4] = [when, step]
        elif name in SYSTEM:
            cache["t0"] = cache["t0"] or when
            system.add(name, (when - cache["t0"]).total_seconds() / 60, value)


def log_tail(job_id: int, lines: int = 40) -> str:
    path = get_settings().home_abs / "jobs" / str(job_id) / "log.txt"
    if not path.exists():
        return "(no log yet: the job has not started)"
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 16384))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def _changed(cache: dict, key: str, rows: list[list]):
    """``rows`` as a table when they differ from what this browser tab shows, else gr.skip()."""
    if cache.get(key) == rows:
        return gr.skip()
    cache[key] = rows
    return rows


def _evaluates(job: Job) -> bool:
    """Whether the job will log eval_loss: its eval_split, or its data set's stored split."""
    if job.kind != "train":
        return False
    if (job.config or {}).get("eval_split", 0) > 0:
        return True
    with session_scope() as db:
        ds = db.get(Dataset, job.dataset_id) if job.dataset_id else None
        return bool(ds and ds.eval_rows)


def poll(job_id: int | None, cache: dict | None):
    """One timer tick: read the job and only the metric points newer than the cached ones, its attempts
    and the queue. Returns (status, curve, system curve, log, attempts, queue, cache)."""
    if not job_id:
        cache = cache or {}
        return ("<div class='job-status empty'>No job selected. Start one on the Train tab.</div>", None, None, "",
                gr.skip(), _changed(cache, "queue", queue_rows()), cache)
    if not (cache and cache.get("job") == job_id):
        cache = {"job": job_id, "after": 0, "curves": LiveCurves(), "system": LiveCurves(), "latest": {},
                 "pace": None, "t0": None}
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is None:
            return f"Job {job_id} does not exist.", None, None, "", gr.skip(), gr.skip(), cache
        charts = view(job.kind).charts
        if charts and cache["after"] == 0:  # first read: the charted series in full, the other metrics' newest value only
            upto, latest = jobq.latest_metrics(db, job_id)
            new = jobq.metric_rows_since(db, job_id, 0, upto=upto, names=(*CURVES, *SYSTEM))
            cache["latest"].update(latest)
        elif charts:
            new = jobq.metric_rows_since(db, job_id, cache["after"])
            upto = new[-1][0] if new else cache["after"]
    if not charts:  # an export, evaluation or combination: its status, log, attempts and result
        return (status_html(job), gr.skip(), gr.skip(), log_tail(job_id),
                _changed(cache, "attempts", attempt_rows(job)), _changed(cache, "queue", queue_rows()), cache)
    _take(cache, new)
    cache["after"] = upto
    if "series" not in cache:  # read once per job, not on every tick
        cache["series"] = list(CURVES if _evaluates(job) else ("loss",))
    # redraw only when points arrived, and never send an empty frame (the chart would lose its encoding)
    redraw = bool(new) or cache.get("drawn") != job_id
    frame = curve_frame(cache["curves"], tuple(cache["series"])) if redraw else None
    drawn = frame is not None and not frame.empty
    if drawn:
        cache["drawn"] = job_id
    plot = frame if drawn else gr.skip()
    sys_frame = system_frame(cache["system"]) if redraw else None
    sys_plot = sys_frame if sys_frame is not None and not sys_frame.empty else gr.skip()
    if sys_plot is sys_frame:
        cache["sys_drawn"] = job_id
    pace = cache["pace"] if cache["pace"] and cache["pace"][4] == job.attempt else None
    return (status_html(job, cache["latest"], pace and pace[:4]), plot, sys_plot, log_tail(job_id),
            _changed(cache, "attempts", attempt_rows(job)), _changed(cache, "queue", queue_rows()), cache)


@friendly
def cancel(job_id: int | None) -> None:
    if not job_id:
        raise gr.Error("No job selected.")
    state = services.cancel_job(int(job_id))
    text = cancel_message(int(job_id), state)
    (gr.Info if state in ("cancelled", "running", "interrupted") else gr.Warning)(text)


def cancel_message(job_id: int, state: str) -> str:
    """What Cancel did, from the job's state after the request (a bare "Job 3: succeeded" read as if it
    had been cancelled into success)."""
    if state == "cancelled":
        return f"Job {job_id} is cancelled."
    if state in ("running", "interrupted"):
        return f"Cancelling job {job_id}: its worker stops it at the next step."
    return f"Job {job_id} already {state}: there is nothing to cancel."


def select_job(job_id):
    return job_id, None  # reset the cache so the new job's curve is read from its start


def layout(job_id: int | None):
    """The charts for a training job only, and each only once it has points (an empty chart is a large
    blank box; :func:`reveal` shows it with its first points): an export, evaluation or combination has no
    loss curve and no system samples; its log and result are the page. Returns (loss, system) updates."""
    with session_scope() as db:
        job = db.get(Job, job_id) if job_id else None
        if job is None or not view(job.kind).charts:
            return gr.LinePlot(visible=job is None), gr.LinePlot(visible=job is None)
        loss, system = jobq.has_metrics(db, job_id, CURVES), jobq.has_metrics(db, job_id, SYSTEM)
    return gr.LinePlot(visible=loss), gr.LinePlot(visible=system)


def reveal(job_id: int | None, cache: dict | None):
    """After a tick: show a chart that has just drawn its first points (once per job and chart)."""
    if not cache or cache.get("job") != job_id:
        return gr.skip(), gr.skip(), cache
    out = []
    for chart, drawn in (("loss", "drawn"), ("system", "sys_drawn")):
        if cache.get(drawn) == job_id and cache.get(f"shown_{chart}") != job_id:
            cache[f"shown_{chart}"] = job_id
            out.append(gr.LinePlot(visible=True))
        else:
            out.append(gr.skip())
    return (*out, cache)


def pick_from_queue(rows, evt: gr.SelectData):
    """Clicking a queue row watches that job (and the Cancel button then acts on it)."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    job_id = int(rows.iloc[row]["job"]) if hasattr(rows, "iloc") else int(rows[row][1])
    return job_id, None


def on_open(job_id):
    jid = default_job(job_id)
    return gr.Dropdown(choices=job_choices(), value=jid), jid


def render(shell: Shell) -> None:
    cache = gr.State(None)
    with gr.Row():
        picker = gr.Dropdown(label="Job", elem_id="job-picker", scale=4)
        cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="cancel-job", scale=1)
    status = gr.HTML(elem_id="job-status")
    # a fixed colour map: the chart's first value is often empty, and an empty colour domain draws no lines
    plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=320, elem_id="loss-curve",
                       x_title="optimizer step", y_title="loss", color_map={"loss": "#4f46e5", "eval_loss": "#f97316"})
    system = gr.LinePlot(x="minutes", y="value", color="series", title="System (sampled by the worker)", height=220,
                         elem_id="system-curve", x_title="minutes into the job", y_title="%",
                         color_map={"CPU": "#0ea5e9", "RAM": "#84cc16", "GPU util": "#f43f5e", "GPU memory": "#a855f7"})
    attempts = gr.Dataframe(headers=ATTEMPT_COLUMNS, label="Attempts (a retry resumes at the step of the last "
                            "complete checkpoint)", interactive=False, wrap=True, elem_id="job-attempts",
                            column_widths=["5%", "14%", "17%", "9%", "8%", "10%", "37%"])
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, label="Queue: running, then queued in the order they start "
                         "(click a row to watch it; Cancel works on queued jobs too)", interactive=False,
                         elem_id="job-queue")
    log = gr.Code(label="Log (last lines)", language=None, lines=12, elem_id="job-log")
    timer = gr.Timer(get_settings().poll_seconds)
    timer.tick(poll, [shell.job_id, cache], [status, plot, system, log, attempts, queue, cache],
               show_progress="hidden").then(reveal, [shell.job_id, cache], [plot, system, cache], show_progress="hidden")
    picker.input(select_job, picker, [shell.job_id, cache])
    queue.select(pick_from_queue, queue, [shell.job_id, cache])
    shell.job_id.change(lambda j: gr.Dropdown(choices=job_choices(), value=j), shell.job_id, picker)
    shell.job_id.change(layout, shell.job_id, [plot, system])
    cancel_btn.click(cancel, shell.job_id, None)
    shell.on_select["jobs"] = (on_open, [shell.job_id], [picker, shell.job_id])
