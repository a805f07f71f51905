"""Sweeps tab: pick a sweep, see its trials' curves overlaid, a parallel-coordinates plot (params -> metric), the
parameters' importances and the trials table; promote the best trial's version with a tag; start a sweep.
The search runs on the workers (studio/sweeps/); this tab only reads and asks."""
from __future__ import annotations

import html
import json
import math

import gradio as gr
import pandas as pd

from models_db import session_scope
from models_db import jobs as jobq
from studio import sweeps
from studio.jobspec import parse_set_args
from studio.tab_state import Shell, friendly

PALETTE = ("#16a34a", "#dc2626", "#2563eb", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
REFRESH_SECONDS = 10.0


def sweep_choices() -> gr.Dropdown:
    """The sweeps the person may see, newest first."""
    rows = sweeps.list_sweeps()
    choices = [(f"#{r['id']} {r['method']} · {r['direction']} {r['metric']} · {r['state']}", r["id"]) for r in rows]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def summary_md(s: dict) -> str:
    best = s["best"]
    lines = [f"**Sweep #{s['id']}** · {html.escape(s['state'])} · {s['method']} on {html.escape(s['model'] or '?')} / "
             f"{html.escape(s['dataset'] or '?')} (#{s['dataset_id']}) · {s['direction']} `{s['metric']}` by "
             f"{s['sampler']} · {len(s['trials'])} of {s['trials_wanted']} trials",
             f"Space: {' · '.join(f'`{t}`' for t in s['space'].values())}"]
    if s["seed"].get("params"):
        lines.append(f"First trial from {html.escape(s['seed']['from'])}: `{s['seed']['params']}`")
    lines.append(f"Best: trial {best['number']}, {s['metric']} **{best['value']:.4g}**, version #{best['version_id']}"
                 if best else f"Best: none yet ({html.escape(s['message'])})")
    return "\n\n".join(lines)


def trial_rows(s: dict) -> pd.DataFrame:
    keys = list(s["space"])
    rows = [[t["number"], t["state"], *[_fmt(t["params"].get(k)) for k in keys], _fmt(t["value"]),
             t["job_id"] or "", t["version_id"] or "", t["error"] or ""] for t in s["trials"]]
    return pd.DataFrame(rows, columns=["trial", "state", *keys, s["metric"], "job", "version", "note"])


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)


def curve_frame(s: dict) -> pd.DataFrame:
    """Every trial's curve of the sweep's metric (the training loss for a metric logged only at the end), by
    step, one series per trial."""
    name = s["metric"] if s["metric"].startswith("eval_") else "loss"
    points = []
    with session_scope() as db:
        for t in s["trials"]:
            if t["job_id"]:
                points += [(step, value, f"trial {t['number']}")
                           for _i, step, _n, value, _a, _w in jobq.metric_rows_since(db, t["job_id"], names=(name,))]
    return pd.DataFrame(points, columns=["step", "value", "trial"])


def parallel_html(s: dict, width: int = 640, height: int = 260) -> str:
    """Parallel coordinates as an inline SVG: one axis per searched setting and one for the metric, one line per
    finished trial, coloured from best (green) to worst (red). No plotting library needed."""
    done = [t for t in s["trials"] if t["value"] is not None]
    axes = [*s["space"], s["metric"]]
    if not done:
        return "<p>The plot appears once a trial has finished with a value.</p>"
    space = s["space"]

    def position(axis: str, value) -> float:
        """0 (bottom) to 1 (top) on the axis."""
        if axis == s["metric"]:
            values = [t["value"] for t in done]
        else:
            values = [t["params"].get(axis) for t in done]
            text = space[axis]
            if "=choice:" in text:
                choices = text.split(":", 1)[1].split(",")
                return (choices.index(str(value)) + 0.5) / len(choices) if str(value) in choices else 0.5
            if "loguniform" in text:
                values, value = [math.log(v) for v in values], math.log(value)
        lo, hi = min(values), max(values)
        return 0.5 if hi == lo else (value - lo) / (hi - lo)

    pad, gap = 40, (width - 80) / max(len(axes) - 1, 1)
    xs = [pad + i * gap for i in range(len(axes))]
    order = sorted(done, key=lambda t: t["value"], reverse=s["direction"] == "maximize")
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="parallel coordinates">']
    for x, axis in zip(xs, axes):
        parts.append(f'<line x1="{x}" y1="20" x2="{x}" y2="{height - 30}" stroke="#94a3b8"/>'
                     f'<text x="{x}" y="{height - 10}" font-size="11" text-anchor="middle">{html.escape(axis)}</text>')
    for rank, t in enumerate(order):
        colour = PALETTE[0] if rank == 0 else PALETTE[1] if rank == len(order) - 1 else "#64748b"
        values = [t["params"].get(a) if a != s["metric"] else t["value"] for a in axes]
        pts = " ".join(f"{x:.1f},{20 + (1 - position(a, v)) * (height - 50):.1f}" for x, a, v in zip(xs, axes, values))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2" opacity="0.8">'
                     f'<title>trial {t["number"]}: {html.escape(str(t["params"]))} -> {t["value"]:.4g}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts) + '<p style="font-size:12px">green: best trial · red: worst · hover a line for its trial</p>'


def importance_rows(sweep_id: int) -> pd.DataFrame:
    found = sweeps.importances(sweep_id)
    return pd.DataFrame([[k, round(v, 3)] for k, v in found.items()], columns=["setting", "importance (PED-ANOVA)"])


@friendly
def show(sweep_id):
    """Everything the tab shows for one sweep."""
    if not sweep_id:
        empty = pd.DataFrame(columns=["step", "value", "trial"])
        return ("No sweep yet: start one below or with `studio sweep`.", pd.DataFrame(), gr.LinePlot(value=empty),
                "", pd.DataFrame())
    s = sweeps.sweep_json(int(sweep_id))
    frame = curve_frame(s)
    names = sorted(frame["trial"].unique()) if not frame.empty else []
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    return (summary_md(s), trial_rows(s), gr.LinePlot(value=frame, color_map=colours or None), parallel_html(s),
            importance_rows(int(sweep_id)))


def tick(sweep_id, seen: str | None):
    """Timer tick: the sweep again only when it changed (a running sweep's trials move, a finished one's do not),
    so an open page does not redraw its chart and tables every few seconds. Returns (*outputs, what was drawn)."""
    unchanged = (gr.skip(),) * 5
    if not sweep_id:
        return (*unchanged, seen)
    drawn = json.dumps(sweeps.sweep_json(int(sweep_id)), sort_keys=True, default=str)
    if drawn == seen:
        return (*unchanged, seen)
    return (*show(sweep_id), drawn)


@friendly
def promote(sweep_id, tag: str) -> str:
    if not sweep_id:
        raise gr.Error("No sweep selected.")
    best = sweeps.promote_best(int(sweep_id), (tag or "best").strip() or "best")
    return f"Tagged version #{best['version_id']} (trial {best['number']}) as `{tag or 'best'}`."


@friendly
def start(model: str, dataset, method: str, trials, space: str, metric: str, sampler: str, fixed: str):
    """Start a sweep from the form (one --space per line, one --set KEY=VALUE per line)."""
    if not (model or "").strip() or not dataset:
        raise gr.Error("Give a base model and a data set id.")
    lines = [x.strip() for x in (space or "").splitlines() if x.strip()]
    settings = parse_set_args([x.strip() for x in (fixed or "").splitlines() if x.strip()])
    sweep_id = sweeps.create(model=model.strip(), dataset_id=int(dataset), method=method or "lora",
                             space=lines, trials=int(trials or 0), metric=(metric or "eval_loss").strip(),
                             sampler=sampler or "tpe", settings=settings)
    gr.Info(f"Sweep #{sweep_id} started: its trials are queued as training jobs.")
    return sweep_choices_with(sweep_id)


def sweep_choices_with(sweep_id: int) -> gr.Dropdown:
    choices = sweep_choices()
    return gr.Dropdown(choices=choices.choices, value=sweep_id)


def render(shell: Shell) -> None:
    with gr.Row():
        pick = gr.Dropdown(label="Sweep", choices=[], elem_id="sweeps-pick", scale=3)
        refresh = gr.Button("Refresh", scale=0, elem_id="sweeps-refresh")
    summary = gr.Markdown(elem_id="sweeps-summary")
    with gr.Row():
        curves = gr.LinePlot(x="step", y="value", color="trial", label="Trials' curves", elem_id="sweeps-curves")
        parallel = gr.HTML(elem_id="sweeps-parallel")
    with gr.Row():
        table = gr.Dataframe(label="Trials", interactive=False, wrap=True, elem_id="sweeps-trials", scale=3)
        weights = gr.Dataframe(label="Parameter importances", interactive=False, elem_id="sweeps-importances", scale=1)
    with gr.Row():
        tag = gr.Textbox(value="best", label="Tag for the best trial's version", scale=2)
        promote_btn = gr.Button("Promote best", elem_id="sweeps-promote", scale=1)
    promoted = gr.Markdown()
    with gr.Accordion("Start a sweep", open=False):
        with gr.Row():
            model = gr.Textbox(label="Base model (id or name)")
            dataset = gr.Number(label="Data set id", precision=0)
            method = gr.Textbox(value="lora", label="Method")
            trials = gr.Number(value=4, label="Trials", precision=0)
        with gr.Row():
            space = gr.Textbox(value="learning_rate=loguniform:1e-5:1e-3\nr=choice:4,16", lines=3,
                               label="Search space (one per line: KEY=loguniform|uniform|int:LOW:HIGH or KEY=choice:A,B)")
            fixed = gr.Textbox(lines=3, label="Fixed settings (one KEY=VALUE per line)")
        with gr.Row():
            metric = gr.Textbox(value="eval_loss", label="Metric")
            sampler = gr.Dropdown(choices=list(sweeps.SAMPLERS), value="tpe", label="Sampler")
            go = gr.Button("Start sweep", variant="primary", elem_id="sweeps-start")
    outputs = [summary, table, curves, parallel, weights]
    pick.change(show, pick, outputs)
    refresh.click(sweep_choices, None, pick).then(show, pick, outputs)
    drawn = gr.State(None)
    gr.Timer(REFRESH_SECONDS).tick(tick, [pick, drawn], [*outputs, drawn], show_progress="hidden")
    promote_btn.click(promote, [pick, tag], promoted)
    go.click(start, [model, dataset, method, trials, space, metric, sampler, fixed], pick)
    shell.on_select["sweeps"] = (sweep_choices, [], [pick])
