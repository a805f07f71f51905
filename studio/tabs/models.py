"""Models tab: the versions, each with method, data set, base, config and final metrics; downloads
of the merged model or the adapter, built by a worker in the background."""
from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from models_db import Job, ModelVersion, session_scope
from models_db import queries as q
from studio import services
from studio.settings import get_settings
from studio.shell import Shell, friendly
from worker import methods


def _pct(x) -> str:
    return f"{100 * x:.3f}%" if isinstance(x, (int, float)) else ""


def _num(x) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else ""


def versions_frame() -> pd.DataFrame:
    cols = ["id", "name", "method", "base", "dataset", "train loss", "eval loss", "trainable", "train time", "created"]
    with session_scope() as db:
        rows = [{"id": v.id, "name": v.name, "method": v.method, "base": v.base_model.name,
                 "dataset": v.dataset.name if v.dataset else "", "train loss": _num(v.metrics.get("train_loss")),
                 "eval loss": _num(v.metrics.get("eval_loss")), "trainable": _pct(v.metrics.get("trainable_ratio")),
                 "train time": f"{v.metrics.get('train_seconds', 0):.0f}s",
                 "created": v.created_at.strftime("%Y-%m-%d %H:%M")} for v in q.list_versions(db)]
    return pd.DataFrame(rows, columns=cols)


def version_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{v.id} {v.name}", v.id) for v in q.list_versions(db)]


def version_details(version_id: int | None):
    """The version's story as Markdown, and whether a merged download is possible."""
    if not version_id:
        return "Select a version.", gr.Button(interactive=False)
    with session_scope() as db:
        v = db.get(ModelVersion, int(version_id))
        anc = q.ancestors(db, v.id)
        m, cfg = v.metrics, v.config
        lineage = " → ".join([v.base_model.name] + [f"#{a.id}" for a in reversed(anc)] + [f"**#{v.id}**"])
        base, dataset = v.base_model.name, v.dataset.name if v.dataset else "—"
    mergeable = methods.get(v.method).mergeable
    metrics = "\n".join(f"| {k} | {val:.6g} |" if isinstance(val, float) else f"| {k} | {val} |"
                        for k, val in m.items() if k != "rows")
    text = f"""### #{v.id} {v.name}
**Lineage:** {lineage}  ·  **Base:** {base}  ·  **Data set:** {dataset}  ·  **Method:** `{v.method}`

| metric | value |
|---|---|
{metrics}

<details><summary>Full config</summary>

```json
{json.dumps(cfg, indent=2, default=str)}
```
</details>
""" + ("" if mergeable else f"\n**Note:** `{v.method}` cannot be merged into the base weights: download the adapter; "
                              "its README has the loading code.")
    return text, gr.Button(interactive=mergeable)


@friendly
def build_export(version_id: int | None, merged: bool):
    if not version_id:
        raise gr.Error("Select a version first.")
    job = services.submit_export(int(version_id), merged=merged)
    return job.id, f"Building the {'merged model' if merged else 'adapter'} zip (job {job.id})…"


def export_status(job_id: int | None):
    """Timer tick: once the export job finished, offer its zip for download."""
    if not job_id:
        return gr.skip(), gr.skip()
    with session_scope() as db:
        job = db.get(Job, int(job_id))
    if job.state == "succeeded":
        path = get_settings().home_abs / job.result["zip"]
        size = path.stat().st_size / 2**20
        return (f"Ready: `{path.name}` ({size:.1f} MB)",
                gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True))
    if job.state in ("failed", "cancelled"):
        return f"Export {job.state}: {job.error or ''}", gr.DownloadButton(visible=False)
    pct = f" ({job.step}/{job.max_steps})" if job.max_steps else ""
    return f"{job.state.capitalize()}: {job.message or 'waiting for a worker'}{pct}", gr.DownloadButton(visible=False)


def on_open(current):
    choices = version_choices()
    value = current if current else (choices[0][1] if choices else None)
    return versions_frame(), gr.Dropdown(choices=choices, value=value)


def render(shell: Shell) -> None:
    export_job = gr.State(None)
    table = gr.Dataframe(label="Model versions", interactive=False, elem_id="versions-table")
    picker = gr.Dropdown(label="Version", elem_id="version-picker")
    details = gr.Markdown(elem_id="version-details")
    with gr.Row():
        merged_btn = gr.Button("Build merged model (.zip)", variant="primary", elem_id="export-merged")
        adapter_btn = gr.Button("Build adapter only (.zip)", elem_id="export-adapter")
    export_msg = gr.Markdown(elem_id="export-status")
    download = gr.DownloadButton("Download", visible=False, elem_id="download-zip")
    picker.change(version_details, picker, [details, merged_btn])
    merged_btn.click(lambda v: build_export(v, True), picker, [export_job, export_msg])
    adapter_btn.click(lambda v: build_export(v, False), picker, [export_job, export_msg])
    gr.Timer(1.5).tick(export_status, export_job, [export_msg, download], show_progress="hidden")
    shell.on_select["models"] = (on_open, [picker], [table, picker])
