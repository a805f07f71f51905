"""Jobs tab: watch a job live (state, progress and ETA, loss curves, throughput, log tail), see its
attempts (where each resumed, how each ended) and the queue (running jobs, then queued ones in order),
and cancel a queued or running job.

Every kind of job is listed (train, evaluate, combine, export), with its kind in the picker; the page
shows what fits the kind (``job_views.VIEWS``): a training job its loss and system charts and training stats, the
others their log and result (an export's zip, an evaluation's metrics, a combination's new version);
studio/tabs/job_views.py renders those.

A gr.Timer polls the database; each poll reads only metric points newer than the last one seen,
kept per browser tab in gr.State as curves thinned to a few thousand points (studio/curves.py), so a
run with a million points stays light. Under the loss curves, the system chart (CPU, RAM, GPU memory
and utilisation, sampled by the worker). Reloading the page loses nothing: the job lives in the database."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from models_db import Dataset, Job, JobState, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from studio import operations
from studio.curves import LiveCurves
from studio.settings import get_settings
from studio.tab_state import Shell, friendly
from studio.tabs.job_views import has_charts, job_label, status_html, view

CURVES = ("loss", "eval_loss")
# the system chart: percentages only, so the curves share one axis (the worker's sys_* GiB figures are in
# TensorBoard and the job's metrics)
SYSTEM = {"sys_cpu_pct": "CPU", "sys_ram_pct": "RAM", "sys_gpu_util_pct": "GPU util", "sys_gpu_mem_pct": "GPU memory"}
ATTEMPT_COLUMNS = ["#", "worker", "started", "resumed at", "reached", "outcome", "reason"]
QUEUE_COLUMNS = ["place", "job", "what", "state", "waits for job", "step", "submitted"]
# A count axis (steps, tokens) shows whole numbers (",d"). Vega puts a tick every ~40 px, so a short axis
# would get ticks at 1.2, 1.4 ... which a whole-number format prints as "1, 1, 2, 2": an axis shorter than
# this many units is widened to it, enough for steps of at least 1 on a chart up to ~2,200 px wide.
COUNT_FORMAT = ",d"
MIN_COUNT_SPAN = 40


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
    pick = [j for j in jobs if j.state == JobState.running] or jobs
    return pick[0].id if pick else None


def attempt_rows(job: Job) -> list[list]:
    """One row per attempt: where it ran, the step it resumed from and reached, how it ended and why."""
    rows = []
    for a in job.history or []:
        current = a.get("attempt") == job.attempt and a.get("outcome") == JobState.running
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


def chart_limits(frame: pd.DataFrame, x: str, min_span: float = MIN_COUNT_SPAN) -> dict:
    """``x_lim`` and ``y_lim`` for a chart of ``frame``: None (the chart's own fit) unless an axis is
    degenerate. Vega labels a one-point axis with its raw value ("1.000000", "0.000012") and a short
    count axis with repeated whole numbers, so the x axis spans at least ``min_span`` (from 0 when it
    fits) and a flat y range is opened by 10 % of its value either side. Set both on every redraw: a
    None clears a widening that the grown curve no longer needs."""
    xs, ys = frame[x].dropna(), frame["value"].dropna()
    x_lim = y_lim = None
    if not xs.empty and xs.max() - xs.min() < min_span:
        start = max(0.0, float(xs.min() + xs.max()) / 2 - min_span / 2)
        x_lim = [start, start + min_span]
    if not ys.empty and ys.max() - ys.min() <= abs(ys.max()) * 1e-6:
        pad = abs(float(ys.max())) * 0.1 or 1.0
        y_lim = [float(ys.max()) - pad, float(ys.max()) + pad]
    return {"x_lim": x_lim, "y_lim": y_lim}


def loss_update(frame: pd.DataFrame) -> gr.LinePlot:
    """The loss chart's new points, with the axis limits that keep its labels readable."""
    return gr.LinePlot(value=frame, **chart_limits(frame, "step"))


def system_update(frame: pd.DataFrame) -> gr.LinePlot:
    """The system chart's new points; its minutes axis spans at least 6 s (its first sample alone would
    be a zero-width axis labelled with the raw value)."""
    return gr.LinePlot(value=frame, **chart_limits(frame, "minutes", 0.1))


PALETTE = ("#16a34a", "#dc2626", "#2563eb", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")


def objective_series(job: Job) -> tuple[str, ...]:
    """The figures the job's objective logs besides its loss (DPO: chosen/rejected rewards, margins, reward
    accuracy; GRPO: rewards, KL...), with their held-out twins when the job evaluates; none for SFT."""
    from studio import objectives

    if job.kind != "train":
        return ()
    try:
        name = objectives.of_config(job.config)
        # counts of tokens (GRPO's completion lengths) would flatten the rewards' 0-1 scale: they stay in the
        # job's metrics and TensorBoard
        curves = tuple(c for c in objectives.get(name).curves if not c.startswith("completions/"))
    except objectives.ObjectiveError:
        return ()
    return (*curves, *(f"eval_{c}" for c in curves)) if _evaluates(job) else tuple(curves)


def objective_poll(job_id: int | None, cache: dict | None):
    """Timer tick for the objective's chart (its own cache, beside the loss chart's): new points of the watched
    job's objective figures. Returns (chart update, cache); the chart stays hidden for a job without them."""
    if not job_id:
        return gr.LinePlot(visible=False), None
    if not (cache and cache.get("job") == job_id):
        with session_scope() as db:
            job = db.get(Job, job_id)
            if job is not None:
                db.expunge(job)
        # outside the session: objective_series opens its own (nested, it would wait on this one's SQLite lock)
        names = objective_series(job) if job is not None else ()
        cache = {"job": job_id, "after": 0, "names": names, "curves": LiveCurves(), "shown": False}
        if not names:
            return gr.LinePlot(visible=False), cache
    if not cache["names"]:
        return gr.skip(), cache
    with session_scope() as db:
        rows = jobq.metric_rows_since(db, job_id, cache["after"], names=cache["names"])
    for _id, step, name, value, attempt, _when in rows:
        cache["curves"].add(name, step, value, attempt)
        cache["after"] = _id
    if not rows and cache["shown"]:
        return gr.skip(), cache
    frame = cache["curves"].frame(cache["names"], cache["names"])
    if frame.empty:
        return gr.LinePlot(visible=False), cache
    cache["shown"] = True
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(cache["names"])}
    return gr.LinePlot(value=frame, visible=True, color_map=colours, **chart_limits(frame, "step")), cache


SAMPLE_COLUMNS = ["step", "prompt", "completion", "reference", "rewards", "reward"]
SAMPLES_SHOWN = 12  # the newest sampled completions (a few per logging step: the last steps' groups)


def sample_rows(job_id: int | None) -> list[list]:
    """A GRPO job's newest sampled completions (worker/rewards.py writes a few per logging step), newest first,
    each with its reference answer, the value of every reward and their weighted sum; [] for any other job (or
    one the viewer may not see: the job's own owner filter decides)."""
    from sqlalchemy import select

    from models_db.schema import GrpoSample

    with session_scope() as db:
        if not job_id or db.get(Job, job_id) is None:
            return []
        samples = db.scalars(select(GrpoSample).where(GrpoSample.job_id == job_id)
                             .order_by(GrpoSample.id.desc()).limit(SAMPLES_SHOWN)).all()
        return [[s.step, s.prompt, s.completion, s.reference,
                 ", ".join(f"{n} {v:.3g}" if v is not None else f"{n} —" for n, v in (s.rewards or {}).items()),
                 None if s.reward is None else round(s.reward, 4)] for s in samples]


def samples_poll(job_id: int | None, cache: dict | None):
    """Timer tick for the sampled-completions table under the charts: shown only for a job that has samples,
    redrawn only when new ones arrived. Returns (table update, cache)."""
    if not (cache and cache.get("job") == job_id):  # once per job: only a sampling objective's job has any
        cache = {"job": job_id, "rows": None, "samples": _samples_completions(job_id)}
        if not cache["samples"]:
            return gr.Dataframe(visible=False), cache
    if not cache["samples"]:
        return gr.skip(), cache  # no query on every tick for the other jobs
    rows = sample_rows(job_id)
    if cache.get("rows") == rows:
        return gr.skip(), cache
    cache["rows"] = rows
    return gr.Dataframe(value=rows or None, visible=bool(rows)), cache


def _samples_completions(job_id: int | None) -> bool:
    """Whether the job trains an objective that samples completions (GRPO, RLOO)."""
    from studio import objectives

    with session_scope() as db:
        job = db.get(Job, job_id) if job_id else None
        config = dict(job.config or {}) if job is not None and job.kind == "train" else None
    if config is None:
        return False
    try:
        return objectives.get(objectives.of_config(config)).samples_completions
    except objectives.ObjectiveError:
        return False


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


TAIL_BYTES = 16384  # the log's end that is read on each tick


def log_tail(job_id: int, lines: int = 40, counted: dict | None = None) -> str:
    """The log's last ``lines`` lines, each after its line number in log.txt, right-aligned to one width
    (the code box's own gutter would count the tail from 1, so "line 1042" could not be found). ``counted``
    (the tab's cache) keeps how far the log has been counted, so each tick counts only new bytes."""
    path = get_settings().home_abs / "jobs" / str(job_id) / "log.txt"
    if not path.exists():
        return "(no log yet: the job has not started)"
    with open(path, "rb") as f:
        start = max(0, f.seek(0, 2) - TAIL_BYTES)
        first = _lines_before(f, start, {} if counted is None else counted) + 1
        f.seek(start)
        rows = f.read().split(b"\n")
    if start and len(rows) > 1:  # the read began inside a line: that line is cut, the next ones are whole
        rows, first = rows[1:], first + 1
    if rows and rows[-1] == b"":  # the newline that ends the file starts no line
        rows.pop()
    shown = list(enumerate(rows, first))[-lines:]
    if not shown:
        return "(the log is empty)"
    width = len(str(shown[-1][0]))
    # a head line first: the code box strips the text's leading spaces, which would shift line one's number
    return "\n".join([f"lines {shown[0][0]}–{shown[-1][0]} of log.txt",
                      *(f"{n:>{width}} │ {_as_shown(row)}" for n, row in shown)])


def _as_shown(row: bytes) -> str:
    """A log line as a terminal shows it: a progress bar redrawn with "\\r" shows its last state (the code
    box would break the line at each "\\r" and the numbers would no longer match)."""
    return row.decode(errors="replace").rstrip("\r").rsplit("\r", 1)[-1]


def _lines_before(f, end: int, counted: dict) -> int:
    """Newlines in the file's first ``end`` bytes, counting on from what ``counted`` already holds (the log
    only grows; a shorter one was replaced and is counted afresh)."""
    at, n = counted.get("at", 0), counted.get("lines", 0)
    if at > end or counted.get("size", 0) > f.seek(0, 2):
        at, n = 0, 0
    f.seek(at)
    while at < end:
        chunk = f.read(min(1 << 20, end - at))
        if not chunk:
            break
        n, at = n + chunk.count(b"\n"), at + len(chunk)
    counted.update(at=at, lines=n, size=f.seek(0, 2))
    return n


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
        charts = has_charts(job.kind)
        if charts and cache["after"] == 0:  # first read: the charted series in full, the other metrics' newest value only
            upto, latest = jobq.latest_metrics(db, job_id)
            new = jobq.metric_rows_since(db, job_id, 0, upto=upto, names=(*CURVES, *SYSTEM))
            cache["latest"].update(latest)
        elif charts:
            new = jobq.metric_rows_since(db, job_id, cache["after"])
            upto = new[-1][0] if new else cache["after"]
    if not charts:  # an export, evaluation or combination: its status, log, attempts and result
        return (status_html(job), gr.skip(), gr.skip(), log_tail(job_id, counted=cache.setdefault("log", {})),
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
    plot = loss_update(frame) if drawn else gr.skip()
    sys_frame = system_frame(cache["system"]) if redraw else None
    sys_drawn = sys_frame is not None and not sys_frame.empty
    sys_plot = system_update(sys_frame) if sys_drawn else gr.skip()
    if sys_drawn:
        cache["sys_drawn"] = job_id
    pace = cache["pace"] if cache["pace"] and cache["pace"][4] == job.attempt else None
    log = log_tail(job_id, counted=cache.setdefault("log", {}))
    return (status_html(job, cache["latest"], pace and pace[:4]), plot, sys_plot, log,
            _changed(cache, "attempts", attempt_rows(job)), _changed(cache, "queue", queue_rows()), cache)


@friendly
def cancel(job_id: int | None) -> None:
    if not job_id:
        raise gr.Error("No job selected.")
    state = operations.cancel_job(int(job_id))
    text = cancel_message(int(job_id), state)
    (gr.Info if state in (JobState.cancelled, JobState.running) else gr.Warning)(text)


ACTIVE = (JobState.queued, JobState.running)  # the states a cancel acts on


def cancel_button(job_id: int | None) -> gr.Button:
    """Cancel is offered only while the watched job can still be cancelled (queued or running)."""
    if not job_id:
        return gr.Button(interactive=False)
    with session_scope() as db:
        job = db.get(Job, int(job_id))
        active = job is not None and job.state in ACTIVE
    return gr.Button(interactive=active)


def cancel_message(job_id: int, state: str) -> str:
    """What Cancel did, from the job's state after the request (a bare "Job 3: succeeded" read as if it
    had been cancelled into success)."""
    if state == JobState.cancelled:
        return f"Job {job_id} is cancelled."
    if state == JobState.running:
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
        if job is None or not has_charts(job.kind):
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


def loss_plot(elem_id: str = "loss-curve", **props) -> gr.LinePlot:
    """The loss chart: steps as whole numbers, a fixed colour per series (the chart's first value is often
    empty, and an empty colour domain draws no lines)."""
    return gr.LinePlot(x="step", y="value", color="series", title="Loss", height=320, elem_id=elem_id,
                       x_title="optimizer step", y_title="loss", x_axis_format=COUNT_FORMAT,
                       color_map={"loss": "#4f46e5", "eval_loss": "#f97316"}, **props)


def log_box(**props) -> gr.Code:
    """The log's end, without the box's own gutter: it would number the tail from 1; the numbers shown are
    log.txt's, written beside each line by :func:`log_tail`."""
    return gr.Code(label="Log (last lines, numbered as in log.txt)", language=None, lines=12, elem_id="job-log",
                   show_line_numbers=False, **props)


def render(shell: Shell) -> None:
    cache = gr.State(None)
    with gr.Row():
        picker = gr.Dropdown(label="Job", elem_id="job-picker", scale=4)
        cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="cancel-job", scale=1, interactive=False)
    status = gr.HTML(elem_id="job-status")
    plot = loss_plot()
    objective_cache = gr.State(None)
    objective = gr.LinePlot(x="step", y="value", color="series", title="Objective figures (held-out ones: eval_…)",
                            height=280, elem_id="objective-curve", x_title="optimizer step", y_title="value",
                            x_axis_format=COUNT_FORMAT, visible=False)
    system = gr.LinePlot(x="minutes", y="value", color="series", title="System (sampled by the worker)", height=220,
                         elem_id="system-curve", x_title="minutes into the job", y_title="%",
                         color_map={"CPU": "#0ea5e9", "RAM": "#84cc16", "GPU util": "#f43f5e", "GPU memory": "#a855f7"})
    samples_cache = gr.State(None)
    samples = gr.Dataframe(headers=SAMPLE_COLUMNS, label="Sampled completions (GRPO: the newest logging steps' "
                           "groups, each with its reference and the value of every reward)", interactive=False,
                           wrap=True, elem_id="grpo-samples", visible=False,
                           column_widths=["6%", "22%", "36%", "10%", "18%", "8%"])
    attempts = gr.Dataframe(headers=ATTEMPT_COLUMNS, label="Attempts (a retry resumes at the step of the last "
                            "complete checkpoint)", interactive=False, wrap=True, elem_id="job-attempts",
                            column_widths=["5%", "14%", "17%", "9%", "8%", "10%", "37%"])
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, label="Queue: running, then queued in the order they start "
                         "(click a row to watch it; Cancel works on queued jobs too)", interactive=False,
                         elem_id="job-queue")
    log = log_box()
    timer = gr.Timer(get_settings().poll_seconds)
    timer.tick(poll, [shell.job_id, cache], [status, plot, system, log, attempts, queue, cache],
               show_progress="hidden").then(reveal, [shell.job_id, cache], [plot, system, cache], show_progress="hidden")
    timer.tick(objective_poll, [shell.job_id, objective_cache], [objective, objective_cache], show_progress="hidden")
    timer.tick(samples_poll, [shell.job_id, samples_cache], [samples, samples_cache], show_progress="hidden")
    picker.input(select_job, picker, [shell.job_id, cache])
    queue.select(pick_from_queue, queue, [shell.job_id, cache])
    shell.job_id.change(lambda j: gr.Dropdown(choices=job_choices(), value=j), shell.job_id, picker)
    shell.job_id.change(layout, shell.job_id, [plot, system])
    cancel_btn.click(cancel, shell.job_id, None).then(cancel_button, shell.job_id, cancel_btn, show_progress="hidden")
    # finished jobs have nothing to cancel: the button follows the watched job's state
    gr.on([timer.tick, shell.job_id.change], cancel_button, shell.job_id, cancel_btn, show_progress="hidden")
    shell.on_select["jobs"] = (on_open, [shell.job_id], [picker, shell.job_id])
