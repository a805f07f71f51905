"""Datasets tab: upload, check row by row, preview, register."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from models_db import session_scope
from models_db import queries as q
from studio import services
from studio.datasets import DatasetError, ingest
from studio.settings import get_settings
from studio.shell import Shell, friendly

FORMATS = ["auto", "instruction", "chat", "text", "classification", "preference"]


def report_markdown(report) -> str:
    """The intake report as the person reads it: counts first, then the first examples of each problem."""
    bad = report.total_rows - report.valid_rows
    head = (f"**{report.original_name}** — {report.file_type}, detected **{report.format}** "
            f"({', '.join(f'`{k}` ← `{v}`' for k, v in report.mapping.items())})\n\n"
            f"**{report.total_rows}** rows, **{report.valid_rows}** usable")
    if not bad and not report.problems:
        return head + ". No problems found."
    lines = [head + f", **{bad}** with problems:\n", "| problem | count | first examples |", "|---|---|---|"]
    for kind, count in report.problem_counts.items():
        ex = "; ".join(f"row {p.row}: {p.message}" for p in report.problems if p.kind == kind)[:300]
        lines.append(f"| {kind} | {count} | {ex} |")
    if bad:
        lines.append("\nFix the file and upload it again, or tick **Drop the bad rows** to register the "
                     f"{report.valid_rows} good rows.")
    return "\n".join(lines)


def preview_frame(rows: list[dict]) -> pd.DataFrame:
    """Canonical rows flattened for a table (chat turns shown as 'role: content')."""
    flat = []
    for r in rows:
        if "messages" in r:
            flat.append({m["role"]: m["content"] for m in r["messages"]})
        else:
            flat.append(r)
    return pd.DataFrame(flat)


@friendly
def check_upload(file_path: str | None, fmt: str):
    """Run intake on the uploaded file without registering it; show the report and a preview."""
    if not file_path:
        return "", None
    work = Path(tempfile.mkdtemp(dir=get_settings().path("tmp")))
    try:
        report = ingest(Path(file_path), original_name=Path(file_path).name, out_dir=work, format=fmt,
                        max_bytes=get_settings().max_upload_mb * 2**20)
    except DatasetError as e:
        return f"**Cannot use this file.** {e}", None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report_markdown(report), preview_frame(report.preview)


@friendly
def register(file_path: str | None, name: str, fmt: str, drop_bad: bool):
    if not file_path:
        raise gr.Error("Upload a file first.")
    ds, report, reused = services.add_dataset(Path(file_path), original_name=Path(file_path).name,
                                              name=name or None, format=fmt, drop_bad_rows=drop_bad)
    verb = "Already registered as" if reused else "Registered"
    gr.Info(f"{verb} dataset {ds.id} ({ds.rows} rows)")
    return f"{verb} data set **#{ds.id} {ds.name}** — {ds.rows} rows ({ds.format}).", datasets_frame()


def datasets_frame() -> pd.DataFrame:
    with session_scope() as db:
        rows = [{"id": d.id, "name": d.name, "format": d.format, "rows": d.rows, "dropped": d.dropped_rows,
                 "file": d.original_name, "created": d.created_at.strftime("%Y-%m-%d %H:%M")}
                for d in q.list_datasets(db)]
    return pd.DataFrame(rows, columns=["id", "name", "format", "rows", "dropped", "file", "created"])


def render(shell: Shell) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label="Data file (JSONL, JSON, CSV/TSV, Parquet, TXT; .gz too)", type="filepath",
                             elem_id="dataset-upload")
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="defaults to the file name")
                fmt = gr.Dropdown(FORMATS, value="auto", label="Format")
            drop_bad = gr.Checkbox(label="Drop the bad rows", value=False)
            register_btn = gr.Button("Register data set", variant="primary", elem_id="register-dataset")
            status = gr.Markdown(elem_id="dataset-status")
            report = gr.Markdown(elem_id="dataset-report")
            preview = gr.Dataframe(label="Preview (first rows, as the model will see them)", wrap=True,
                                   elem_id="dataset-preview")
        with gr.Column(scale=1):
            table = gr.Dataframe(value=datasets_frame, label="Registered data sets", interactive=False,
                                 elem_id="dataset-table")
    upload.change(check_upload, [upload, fmt], [report, preview])
    fmt.change(check_upload, [upload, fmt], [report, preview])
    register_btn.click(register, [upload, name, fmt, drop_bad], [status, table])
