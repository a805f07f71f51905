"""Versions tab: every model version in a searchable, sortable table; one version's story (lineage
picture, metrics, config), its name, tags and notes, delete, and downloads built by a worker; and
2 to 4 versions compared (loss curves overlaid, metric differences, the config keys that differ)."""
from __future__ import annotations

import html
import json

import gradio as gr
import pandas as pd

from models_db import Job, JobState, session_scope
from models_db import queries as q
from studio import evidence, exports, methods, operations, store, versions
from studio.settings import get_settings
from studio.tab_state import Shell, friendly
from studio.tabs import side_by_side
from studio.tabs import version_jobs
from studio.tabs.jobs import COUNT_FORMAT, chart_limits
from studio.tabs import share_box

# a light and a strong shade per compared version: train loss strong, eval loss light
PALETTE = [("#4f46e5", "#a5b4fc"), ("#ea580c", "#fdba74"), ("#059669", "#6ee7b7"), ("#db2777", "#f9a8d4")]
AXES = {"step": ("step", "optimizer step"), "tokens seen": ("tokens", "tokens seen")}


# --- the table ---------------------------------------------------------------------------------------

def versions_frame() -> pd.DataFrame:
    """The table: numbers stay numeric (so columns sort as numbers); measures no version has are left out."""
    df = pd.DataFrame(versions.rows(), columns=["id", "name", "tags", "method", "dataset",
                                                *(s.label for s in versions.STATS), "base", "created"])
    for s in versions.STATS:
        df[s.label] = pd.to_numeric(df[s.label], errors="coerce").round(s.digits)
    if len(df):  # the forgetting badge: worse than the model it was trained from on a pinned benchmark
        worse = evidence.forgetting([int(i) for i in df["id"]])
        df.insert(4, "vs parent", [("▼ worse on " + ", ".join(f"#{d}" for d in worse[int(i)])) if int(i) in worse
                                   else None for i in df["id"]])
    return df.dropna(axis=1, how="all") if len(df) else df


def version_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{v.id} {v.name}", v.id) for v in q.list_versions(db)]


def pick_row(evt: gr.SelectData):
    """Clicking a row of the table opens that version."""
    return int(evt.row_value[0])


# --- one version ---------------------------------------------------------------------------------------

def _key_metrics(v) -> str:
    """The comparable measures on one wrapping line."""
    s = versions.stats(v)
    shown = [f"{st.label} **{s[st.key]:.{st.digits}f}**" for st in versions.STATS if s[st.key] is not None]
    return "  ·  ".join(shown) or "_No metrics recorded._"


def _all_metrics(m: dict) -> str:
    rows = "\n".join(f"| {k} | {val:.6g} |" if isinstance(val, float) else f"| {k} | {val} |"
                     for k, val in m.items() if k != "rows" and val is not None)
    return f"| metric | value |\n|---|---|\n{rows}"


def nothing_picked() -> str:
    """What the details column says with no version picked: how to pick one, or how to make the first."""
    if not version_choices():
        return ("No model versions yet. A version appears here when a training job succeeds: start one on the "
                "**Train** tab and watch it on **Jobs**.")
    return "Pick a version above, or click a row of the table."


def version_details(version_id: int | None) -> str:
    """The version's story as Markdown: lineage in words, tags, notes, metrics and full config."""
    if not version_id:
        return nothing_picked()
    with session_scope() as db:
        v = versions.get(db, version_id)
        anc = q.ancestors(db, v.id)
        lineage = " → ".join([v.base_model.name] + [f"#{a.id}" for a in reversed(anc)] + [f"**#{v.id}**"])
        children = ", ".join(f"#{k.id}" for k in q.children(db, [v.id])) or "none"  # combined ones too
        dataset = f"#{v.dataset.id} {v.dataset.name}" if v.dataset else "—"
        tags = " ".join(f"`{t}`" for t in v.tags) or "none"
        notes = "\n".join(f"> {html.escape(line)}" for line in v.notes.splitlines()) if v.notes.strip() else ""
        title, method, metrics, cfg, job = f"#{v.id} {html.escape(v.name)}", v.method, v.metrics, v.config, v.job_id
        key_metrics = _key_metrics(v)
    note = ("" if methods.get(method).mergeable else
            f"\n\n**Note:** `{method}` cannot be merged into the base weights: download the adapter; "
            "its README has the loading code.")
    return f"""### {title}
**Lineage:** {lineage}  ·  **Children:** {children}  ·  **Data set:** {dataset}  ·  **Method:** `{method}`
 ·  **Job:** {f"#{job}" if job else "—"}  ·  **Tags:** {tags}

{notes}

{key_metrics}

<details><summary>All metrics</summary>

{_all_metrics(metrics)}
</details>

<details><summary>Full config</summary>

```json
{json.dumps(cfg, indent=2, default=str)}
```
</details>{note}"""


def lineage_picture(version_id: int | None) -> str:
    if not version_id:
        return ""
    return "**Lineage** (base model → versions → children; dotted: the data set each was trained on)\n\n" + \
        versions.lineage_mermaid(int(version_id))


@friendly
def show_version(version_id: int | None):
    """Everything that follows the picked version: story, picture, edit fields, merge button, delete reset."""
    if not version_id:
        return nothing_picked(), "", "", "", "", gr.Button(interactive=False), gr.Group(visible=False)
    with session_scope() as db:
        v = versions.get(db, version_id)
        name, tags, notes, method = v.name, ", ".join(v.tags), v.notes, v.method
    return (version_details(version_id), lineage_picture(version_id), name, tags, notes,
            export_picker(method), gr.Group(visible=False))


@friendly
def save_version(version_id: int | None, name: str, tags: str, notes: str):
    if not version_id:
        raise gr.Error("Select a version first.")
    versions.update(int(version_id), name=name, tags=tags, notes=notes)
    gr.Info(f"Version #{version_id} saved.")
    return versions_frame(), gr.Dropdown(choices=version_choices(), value=version_id)


@friendly
def ask_delete(version_id: int | None, cascade: bool):
    """First click: check the delete is allowed and say what it removes; the person then confirms."""
    if not version_id:
        raise gr.Error("Select a version first.")
    plan = versions.plan_delete(int(version_id), cascade=cascade)
    return (f"Delete {plan.describe()}? This cannot be undone.", gr.Group(visible=True),
            {"id": int(version_id), "cascade": bool(cascade)})


@friendly
def confirm_delete(pending: dict | None, compared: list | None):
    if not pending:
        raise gr.Error("Nothing to delete.")
    plan = versions.delete(pending["id"], cascade=pending["cascade"])
    gr.Info(f"Deleted {plan.describe()}.")
    choices = version_choices()
    left = [c for c in (compared or []) if c not in plan.ids]
    return (versions_frame(), gr.Dropdown(choices=choices, value=choices[0][1] if choices else None),
            gr.Dropdown(choices=choices, value=left, multiselect=True), gr.Group(visible=False), None)


# --- downloads ------------------------------------------------------------------------------------------

def export_picker(method: str) -> gr.Dropdown:
    """The formats this version's method allows (non-mergeable methods: the adapter only), said up front."""
    mergeable = methods.get(method).mergeable
    info = ("Merged formats are standalone models; adapter is the trained part with a loading snippet." if mergeable
            else f"{method} cannot be merged into the base: adapter + loading snippet only.")
    return gr.Dropdown(choices=exports.format_choices(method), value="merged" if mergeable else "adapter", info=info)


def export_hint(version_id: int | None, format: str | None) -> str:
    """Under the picker, before the click: the format and the memory its merge needs here (or the refusal)."""
    if not version_id or not format:
        return ""
    with session_scope() as db:
        return exports.preview(db, int(version_id), format)


def known_export(version_id: int | None, format: str | None):
    """A version reopened whose zip in this format was built before: its download is offered at once; one
    still building shows where it is (the export timer reads the job); otherwise nothing until Build."""
    job_id = operations.export_job_for(int(version_id), format) if version_id and format else None
    if job_id is None:
        return None, "", gr.DownloadButton(visible=False)
    return job_id, gr.skip(), gr.skip()


@friendly
def build_export(version_id: int | None, format: str | None):
    if not version_id:
        raise gr.Error("Select a version first.")
    job = operations.submit_export(int(version_id), format=format or "adapter")
    return job.id, f"Building the {job.config['format']} zip (job {job.id})…"


def export_status(job_id: int | None):
    """Timer tick: once the export job finished, offer its zip for download."""
    if not job_id:
        return gr.skip(), gr.skip()
    with session_scope() as db:
        job = db.get(Job, int(job_id))
    if job is None:  # someone else's export (models_db.access), or gone
        return "", gr.DownloadButton(visible=False)
    if job.state == JobState.succeeded:
        try:  # built by a worker on another machine: fetched from the shared store (studio/store.py)
            path = store.local(job.result["zip"], into_home=True)
        except store.StoreError:
            path = get_settings().home_abs / job.result["zip"]
        if not path.exists():
            return "The zip was deleted with its version.", gr.DownloadButton(visible=False)
        size = path.stat().st_size / 2**20
        return (f"Ready: `{path.name}` ({size:.1f} MB). {fidelity_line(job.result.get('fidelity'))}",
                gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True))
    if job.state in (JobState.failed, JobState.cancelled):
        return f"Export {job.state}: {job.error or ''}", gr.DownloadButton(visible=False)
    pct = f" ({job.step}/{job.max_steps})" if job.max_steps else ""
    why = operations.waiting_for(job.id) if job.state == JobState.queued else job.message
    return f"{job.state.capitalize()}: {why or 'starting'}{pct}", gr.DownloadButton(visible=False)


def fidelity_line(record: dict | None) -> str:
    """The export's own check (worker/fidelity.py), in one line: verified with its figures, or why not."""
    if not record:
        return ""
    if record.get("verified"):
        eos = ", stops at EOS" if record.get("stops_at_eos") else ""
        llama = f" In llama.cpp: {phrase}." if (phrase := exports.llama_cpp_phrase(record)) else ""
        return (f"✓ **Verified**: greedy-token agreement {record['token_agreement']:.1%}, mean KL "
                f"{record['mean_kl']:.2g}{eos} ({record['prompts']} prompts, {record['runtime']}).{llama}")
    return f"✗ **Not verified**: {html.escape(str(record.get('reason')))}."


# --- comparison ---------------------------------------------------------------------------------------

def curve_frame(result: dict, axis: str = "step") -> tuple[pd.DataFrame, dict]:
    """The compared versions' curves as one long frame (x, value, series) and the colour of each series."""
    col = AXES[axis][0]
    rows, colors = [], {}
    for (strong, light), v in zip(PALETTE, result["versions"]):
        for name, shade, label in (("loss", strong, "train"), ("eval_loss", light, "eval")):
            series = f"#{v['id']} {label}"
            pts = result["curves"][str(v["id"])].get(name, [])
            rows += [{"step": s, "tokens": t, "value": val, "series": series} for s, t, val in pts]
            if pts:
                colors[series] = shade
    df = pd.DataFrame(rows, columns=["step", "tokens", "value", "series"]).astype(
        {"step": "int64", "tokens": "float64", "value": "float64"})
    return df.dropna(subset=[col]), colors


def _delta(m: dict, i: int) -> str:
    d, pct = m["diff"][i], m["pct"][i]
    if i == 0 or d is None:  # the reference, or nothing to compare
        return ""
    if abs(d) < 10 ** -m["digits"] / 2:
        return '<span class="delta same">same</span>'
    good = m["better"] and ((d < 0) == (m["better"] == "lower"))
    cls = "same" if m["better"] is None else ("good" if good else "bad")
    rel = f", {pct:+.1f}%" if pct is not None else ""
    return f'<span class="delta {cls}">{"▲" if d > 0 else "▼"} {d:+.{m["digits"]}f}{rel}</span>'


def metrics_html(result: dict) -> str:
    """Each measure per version, with the difference to the first (green: better, red: worse)."""
    vs = result["versions"]
    head = "".join(f"<th>#{v['id']} {html.escape(v['name'])}<div class='sub'>{html.escape(v['method'])}"
                   f"{' · reference' if i == 0 else ''}</div></th>" for i, v in enumerate(vs))
    body = ""
    for m in result["metrics"]:
        n = m["digits"]
        cells = "".join(f"<td><span class='val'>{'—' if x is None else f'{x:.{n}f}'}</span>{_delta(m, i)}</td>"
                        for i, x in enumerate(m["values"]))
        hint = {"lower": " ↓", "higher": " ↑"}.get(m["better"], "")
        body += f"<tr><th class='k'>{m['label']}<span class='hint'>{hint}</span></th>{cells}</tr>"
    kinds = result.get("peak_memory_kinds", [])
    warn = ("<p class='cmp-note'>Peak memory was measured differently across these versions "
            f"({', '.join(kinds)}): compare it only between runs on the same kind of device.</p>"
            if len(kinds) > 1 else "")
    return f"<table class='cmp'><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>{warn}"


def config_html(result: dict) -> str:
    rows = result["config_diff"]
    if not rows:
        return "<p class='cmp-note'>Same configuration: method, hyperparameters, data set and base are identical.</p>"
    head = "".join(f"<th>#{v['id']}</th>" for v in result["versions"])

    def cell(x) -> str:
        text = "—" if x is None else json.dumps(x, default=str) if isinstance(x, (dict, list)) else str(x)
        return f"<td>{html.escape(text)}</td>"
    body = "".join(f"<tr><th class='k'>{html.escape(r['key'])}</th>{''.join(map(cell, r['values']))}</tr>"
                   for r in rows)
    return (f"<div class='cmp-title'>Config: only what differs ({len(rows)} key{'s' if len(rows) != 1 else ''})</div>"
            f"<table class='cmp'><thead><tr><th>key</th>{head}</tr></thead><tbody>{body}</tbody></table>")


def curve_plot(chart: dict | None) -> gr.LinePlot | None:
    """The compared versions' loss curves on one chart, or None when there is nothing to draw.

    Built afresh for every comparison (inside gr.render): a chart that is only given new data keeps
    the colour domain of its first series and silently drops series it has not seen."""
    if not chart:
        return None
    df, colors = curve_frame(chart, chart["axis"])
    if df.empty:  # never draw an empty frame: the chart would lose its encoding
        return None
    col, title = AXES[chart["axis"]]
    # steps and tokens are counts: whole-number labels, on an axis wide enough not to repeat them
    return gr.LinePlot(value=df, x=col, y="value", color="series", color_map=colors, x_title=title,
                       y_title="loss", title="Train and eval loss", height=320, elem_id="compare-curves",
                       x_axis_format=COUNT_FORMAT, **chart_limits(df, col))


@friendly
def compare_view(version_ids: list | None, axis: str):
    """Metric differences, config diff and the curves to draw (gr.State) for the picked versions (2 to 4)."""
    ids = list(version_ids or [])
    if len(ids) == 1:
        return f"Pick one more version to compare with #{ids[0]} (up to 4 in all).", "", "", None
    if len(ids) < 2:
        return "Pick 2 to 4 versions to compare; the first one picked is the reference.", "", "", None
    result = versions.compare(ids)
    chart = {"axis": axis, "versions": result["versions"], "curves": result["curves"]}
    missing = [f"#{v['id']}" for v in result["versions"] if not result["curves"][str(v["id"])]]
    note = f"No logged loss curve for {', '.join(missing)}." if missing else ""
    if curve_plot(chart) is None:
        note = note or f"No curve has a {axis} axis."
    return note, metrics_html(result) + version_jobs.evaluations_html(result), config_html(result), chart


# --- layout ---------------------------------------------------------------------------------------------

def on_open(current, compared):
    choices = version_choices()
    ids = {c[1] for c in choices}
    value = current if current in ids else (choices[0][1] if choices else None)
    return (versions_frame(), gr.Dropdown(choices=choices, value=value),
            gr.Dropdown(choices=choices, value=[c for c in (compared or []) if c in ids], multiselect=True))


def render(shell: Shell) -> None:
    export_job, pending = gr.State(None), gr.State(None)
    table = gr.Dataframe(label="Model versions (click a row to open it; a column's ⋮ menu sorts and filters)",
                         interactive=False, show_search="search", max_height=340, elem_id="versions-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            picker = gr.Dropdown(label="Version", elem_id="version-picker")
            details = gr.Markdown(elem_id="version-details")
        with gr.Column(scale=2):
            with gr.Group():
                name = gr.Textbox(label="Name", elem_id="version-name")
                tags = gr.Textbox(label="Tags", placeholder="best, prod (comma-separated)", elem_id="version-tags")
                notes = gr.Textbox(label="Notes", lines=3, elem_id="version-notes")
            save = gr.Button("Save name, tags and notes", elem_id="save-version")
            share = gr.Checkbox(label="Shared with my team", interactive=False, elem_id="version-share")
            gr.Markdown("**Download**")
            export_format = gr.Dropdown(label="Format", elem_id="export-format")
            export_note = gr.Markdown(elem_id="export-note")
            build_btn = gr.Button("Build .zip", variant="primary", elem_id="export-build")
            export_msg = gr.Markdown(elem_id="export-status")
            download = gr.DownloadButton("Download", visible=False, elem_id="download-zip")
            with gr.Accordion("Delete", open=False, elem_id="delete-box"):
                cascade = gr.Checkbox(label="Also delete its descendants (versions trained from it)",
                                      elem_id="delete-cascade")
                delete_btn = gr.Button("Delete this version…", variant="stop", elem_id="delete-version")
                with gr.Group(visible=False) as confirm_box:
                    confirm_msg = gr.Markdown(elem_id="delete-confirm-msg")
                    with gr.Row():
                        yes = gr.Button("Yes, delete", variant="stop", elem_id="confirm-delete")
                        no = gr.Button("Keep it", elem_id="keep-version")
    lineage = gr.Markdown(elem_id="version-lineage")
    version_jobs.render(picker)  # "Evaluate on dataset…", its evaluations, the Combine accordion

    gr.Markdown("### Compare versions", elem_id="compare-title")
    with gr.Row():
        compared = gr.Dropdown(label="Versions to compare (2 to 4; the first is the reference)", multiselect=True,
                               max_choices=4, scale=4, elem_id="compare-picker")
        axis = gr.Radio(list(AXES), value="step", label="Curves by", scale=1, elem_id="compare-axis")
    compare_note = gr.Markdown(elem_id="compare-note")
    chart = gr.State(None)

    @gr.render(inputs=chart, triggers=[chart.change])
    def _curves(c):
        curve_plot(c)  # created inside gr.render, so it appears here

    cmp_metrics = gr.HTML(elem_id="compare-metrics")
    cmp_config = gr.HTML(elem_id="compare-config")
    side_by_side.render(compared)  # the same prompts through every compared version

    # another version opened: its own zip (built or building) or none, never the previous version's download (the
    # format often stays "merged", and an unchanged value fires no export_format.change)
    picker.change(show_version, picker, [details, lineage, name, tags, notes, export_format, confirm_box]).then(
        export_hint, [picker, export_format], export_note).then(
        known_export, [picker, export_format], [export_job, export_msg, download])
    table.select(pick_row, None, picker)
    picker.change(lambda v: share_box.shared_box("version", v), picker, share)
    share.input(share_box.toggle("version"), [picker, share], share)
    save.click(save_version, [picker, name, tags, notes], [table, picker]).success(
        show_version, picker, [details, lineage, name, tags, notes, export_format, confirm_box])
    delete_btn.click(ask_delete, [picker, cascade], [confirm_msg, confirm_box, pending])
    no.click(lambda: (gr.Group(visible=False), None), None, [confirm_box, pending])
    yes.click(confirm_delete, [pending, compared], [table, picker, compared, confirm_box, pending])
    export_format.change(export_hint, [picker, export_format], export_note)
    # a zip built before (this session or another) is offered again as soon as its version and format show
    export_format.change(known_export, [picker, export_format], [export_job, export_msg, download])
    build_btn.click(build_export, [picker, export_format], [export_job, export_msg])
    gr.Timer(1.5).tick(export_status, export_job, [export_msg, download], show_progress="hidden")
    for event in (compared.change, axis.change):
        event(compare_view, [compared, axis], [compare_note, cmp_metrics, cmp_config, chart])
    shell.on_select["versions"] = (on_open, [picker, compared], [table, picker, compared])
