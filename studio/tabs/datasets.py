"""Datasets tab: upload, check row by row with a column mapping the person can correct, see the token
lengths for a model, the labels and the first rows as the model reads them, choose the eval split,
register; browse the versions with their lineage and the jobs and models that used them, and derive
a version with a corrected mapping."""
from __future__ import annotations

import html
import re
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from models_db import Dataset, session_scope
from models_db import queries as q
from studio import operations
from studio.datasets import FIELDS, DatasetError, ingest, versions
from studio.datasets.errors import Found
from studio.datasets.formats import match_columns
from studio.datasets.split import Split
from studio.datasets.tokens import LengthLimit, ModelText, histogram, render_row, token_lengths
from studio.settings import get_settings
from studio.tab_state import Shell, friendly
from studio.tabs import share_box

FORMATS = ["auto", "instruction", "chat", "text", "classification", "preference", "feedback"]
FIELD_NAMES = list(dict.fromkeys(f.name for fields in FIELDS.values() for f in fields))  # one dropdown each
NONE = ("— none —", "")
HIST_COLORS = {"fits": "#4f46e5", "too long": "#f97316"}


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ;,")
    return cut + " …"


def report_markdown(report) -> str:
    """The intake report as the person reads it: counts first, then the first examples of each problem."""
    bad = report.total_rows - report.valid_rows
    head = (f"**{report.original_name}** — {report.file_type}, detected **{report.format}** "
            f"({', '.join(f'`{k}` ← `{v}`' for k, v in report.mapping.items())})\n\n"
            f"**{report.total_rows}** rows, **{report.valid_rows}** usable")
    if not bad and not report.problems:
        return head + ". No problems found."
    lines = [head + f", **{bad}** with problems:\n", "| problem | count | first examples |", "|---|---|---|"]
    for kind, count in report.problem_counts.items():  # each message names its own row or line
        ex = clip("; ".join(p.message for p in report.problems if p.kind == kind), 300)
        lines.append(f"| {kind.replace('_', ' ')} | {count} | {ex} |")
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


def highlight(text: str, spans: list[tuple[int, int]]) -> str:
    """HTML of ``text`` with the trained ``spans`` marked."""
    out, at = [], 0
    for a, b in spans:
        out.append(html.escape(text[at:a]))
        out.append(f'<mark class="trained">{html.escape(text[a:b])}</mark>')
        at = b
    out.append(html.escape(text[at:]))
    return "".join(out)


def rendered_html(rows: list[dict], model: ModelText | None, model_name: str | None) -> str:
    """The first rows exactly as the model reads them (chat template applied), the trained part marked."""
    if not rows:
        return ""
    if model is None:
        how = "No model picked: chat turns are shown as <code>role: content</code>; pick a model to see its chat template."
    elif model.template is None:
        how = f"{html.escape(model_name)} has no chat template: chat turns are shown as <code>role: content</code>."
    else:
        how = f"As {html.escape(model_name)} reads them, chat template applied."
    blocks = []
    for row in rows:
        text, spans = model.render(row) if model else render_row(row)
        blocks.append(f'<pre class="model-view">{highlight(text, spans)}</pre>')
    return (f'<div class="dataset-rendered"><p>{how} <mark class="trained">Highlighted</mark>: what the loss is '
            f'computed on.</p>{"".join(blocks)}</div>')


def _bin_label(tokens: str) -> str:
    """'30-30' -> '30': a bin one token wide is labelled with that length."""
    lo, _, hi = tokens.partition("-")
    return lo if lo == hi else tokens


def histogram_frame(lengths: list[int], max_len: int | None) -> pd.DataFrame:
    """Token-length bins for the bar plot; bins over ``max_len`` are coloured 'too long'. The colour
    column is "length", so the legend reads "length: fits / too long"."""
    rows = [{"tokens": _bin_label(b["tokens"]), "rows": b["rows"], "length": "fits" if b["fits"] else "too long"}
            for b in histogram(lengths, max_len)]
    return pd.DataFrame(rows, columns=["tokens", "rows", "length"])


def labels_frame(stats: dict) -> pd.DataFrame:
    """Rows per label (classification)."""
    return pd.DataFrame([{"label": k, "rows": v} for k, v in (stats.get("labels") or {}).items()],
                        columns=["label", "rows"])


def _model(model_id) -> tuple[ModelText | None, str | None]:
    """The picked base model's tokenizer and chat template (None, None when none is picked)."""
    if model_id in (None, ""):
        return None, None
    with session_scope() as db:
        base = q.model_by_ref(db, model_id)
        if base is None:
            raise gr.Error(f"Model {model_id} does not exist any more; pick another one.")
        path, name = Path(base.path), base.name
    return ModelText.from_model_dir(path), name  # DatasetError (no tokenizer.json) reaches the person


def _dropdowns(fmt: str, columns: list[str] | None, mapping: dict[str, str]) -> list:
    """One dropdown per canonical field: shown for the fields of ``fmt``, offering the file's columns."""
    shown = {f.name for f in FIELDS.get(fmt, ())} if columns is not None else set()
    choices = [NONE] + [(c, c) for c in columns or []]
    return [gr.Dropdown(choices=choices, value=mapping.get(name, ""), visible=name in shown) for name in FIELD_NAMES]


def _mapping(fmt: str, values) -> dict[str, str] | None:
    """The person's mapping for ``fmt`` from the dropdown values (None: let detection choose)."""
    fields = {f.name for f in FIELDS.get(fmt, ())}
    mapping = {name: v for name, v in zip(FIELD_NAMES, values) if v and name in fields}
    return mapping or None


def _no_plots() -> list:
    return [gr.BarPlot(value=None, visible=False), gr.BarPlot(value=None, visible=False)]


def _preview(rows: list[dict] | None) -> gr.Dataframe:
    """The preview table, shown only when there are rows to preview."""
    return gr.Dataframe(value=preview_frame(rows) if rows else None, visible=bool(rows))


def inspect(source: dict | None, fmt: str, mapping: dict | None, model_id, max_len) -> list:
    """Run the intake on the current file without registering it; return the tab's check outputs:
    format, one dropdown per field, report, preview table, histogram, labels, rendered rows."""
    if not source:
        return [gr.Dropdown(choices=FORMATS, value="auto"), *_dropdowns("auto", None, {}), "", _preview(None),
                *_no_plots(), ""]
    model, model_name = _model(model_id)
    limit = LengthLimit(model, int(max_len or versions.DEFAULT_MAX_SEQ_LENGTH), model_name) if model else None
    work = Path(tempfile.mkdtemp(dir=get_settings().path("tmp")))
    try:
        report = ingest(Path(source["path"]), original_name=source["name"], out_dir=work, format=fmt, mapping=mapping,
                        max_bytes=get_settings().max_upload_mb * 2**20, length_limit=limit)
        # the rows left out as too long belong in the picture too (its overflow bin)
        lengths = token_lengths(report.canonical_path, model) + report.too_long_lengths if model else []
    except DatasetError as e:
        found = e.found or Found()
        shown = found.format or fmt
        guess = match_columns(shown, found.columns) if found.columns and shown in FIELDS else {}
        hint = " Choose the format and the columns under **Column mapping** above." if found.columns else ""
        return [gr.Dropdown(choices=FORMATS, value=shown), *_dropdowns(shown, found.columns, found.mapping or mapping or guess),
                f"**Cannot use this file.** {for_form(str(e))}{hint}", _preview(None), *_no_plots(), ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hist = histogram_frame(lengths, limit.max_tokens if limit else None) if model else None
    labels = labels_frame(report.stats) if report.format == "classification" else None
    return [gr.Dropdown(choices=FORMATS, value=report.format), *_dropdowns(report.format, report.columns, report.mapping),
            report_markdown(report), _preview(report.preview),
            gr.BarPlot(value=hist, sort=list(hist["tokens"]) if hist is not None else None, visible=hist is not None),
            gr.BarPlot(value=labels, visible=labels is not None), rendered_html(report.preview, model, model_name)]


# What belongs to one file, and the value each starts from: a new file (or a version opened for correcting)
# starts from these, so a name, a "drop the bad rows" tick or a "Registered #N" line is never carried over
# to the next file. The model and max_seq_length are about the model, not the file: they stay.
PER_FILE = {"name": "", "eval_ratio": 0, "eval_seed": 42, "eval_file": None, "drop_bad": False, "status": ""}


def clean_form() -> list:
    """The per-file fields' starting values, in :data:`PER_FILE` order."""
    return list(PER_FILE.values())


def for_form(message: str) -> str:
    """An intake message worded for this tab: the CLI's ``--map output="Answer"`` is the Column mapping's
    ``output`` field here."""
    message = re.sub(r'e\.g\. --map (\w+)="([^"]*)"', r"e.g. pick '\2' for \1 under Column mapping", message)
    return message.replace("map them (--map FIELD=COLUMN)", "map them under Column mapping")


@friendly
def on_upload(file_path: str | None, model_id, max_len):
    """A new file: detect its format and mapping from scratch, on a clean form."""
    source = {"path": file_path, "name": Path(file_path).name, "parent": None} if file_path else None
    return [source, "", *inspect(source, "auto", None, model_id, max_len), *clean_form()]


@friendly
def on_format(source, fmt, model_id, max_len):
    """Another format: the mapping is detected again for it."""
    return inspect(source, fmt, None, model_id, max_len)


@friendly
def on_mapping(source, fmt, model_id, max_len, *values):
    """A corrected mapping (or another model or length): check the file again with it."""
    return inspect(source, fmt, _mapping(fmt, values), model_id, max_len)


@friendly
def register(source, name: str, fmt: str, model_id, max_len, ratio, seed, eval_file, drop_bad: bool, *values):
    """Register the checked file (or, when editing a version, derive a new version from it)."""
    if not source:
        raise gr.Error("Upload a file first.")
    common = {"format": fmt, "mapping": _mapping(fmt, values), "drop_bad_rows": drop_bad, "model": model_id or None,
              "max_seq_length": int(max_len) if model_id and max_len else None}
    if source.get("parent"):
        ds, _report, reused = versions.edit_mapping(source["parent"], name=name or None, **common)
    else:
        split = Split(ratio=float(ratio or 0), seed=int(seed or 0), eval_file=Path(eval_file) if eval_file else None)
        ds, _report, reused = operations.add_dataset(Path(source["path"]), original_name=source["name"],
                                                   name=name or None, split=split, **common)
    verb = "Already registered as" if reused else "Registered"
    gr.Info(f"{verb} data set #{ds.id} {ds.name} ({ds.rows} rows)")
    evals = f", {ds.eval_rows} eval rows" if ds.eval_rows else ""
    parent = f", a new version of #{ds.parent_id}" if ds.parent_id and not reused else ""
    text = f"{verb} data set **#{ds.id} {ds.name}** — {ds.rows} rows{evals} ({ds.format}{parent})."
    return text, datasets_frame(), gr.Dropdown(choices=dataset_choices(), value=ds.id), details_markdown(ds.id)


def datasets_frame() -> pd.DataFrame:
    with session_scope() as db:
        rows = [{"id": d.id, "name": d.name, "format": d.format, "rows": d.rows, "eval": d.eval_rows,
                 "dropped": d.dropped_rows, "parent": d.parent_id or "", "file": d.original_name,
                 "created": d.created_at.strftime("%Y-%m-%d %H:%M")}
                for d in q.list_datasets(db)]
    return pd.DataFrame(rows, columns=["id", "name", "format", "rows", "eval", "dropped", "parent", "file", "created"])


def dataset_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{d.id} {d.name} ({d.format}, {d.rows} rows)", d.id) for d in q.list_datasets(db)]


def model_choices() -> list[tuple[str, int | str]]:
    with session_scope() as db:
        return [NONE] + [(m.name, m.id) for m in q.list_models(db)]


def _split_text(split: dict, eval_rows: int) -> str:
    if split.get("kind") == "ratio":
        return f"{eval_rows} eval rows, stored split: {split['eval_ratio']:.0%} held out by seed {split['seed']}"
    if split.get("kind") == "file":
        return f"{eval_rows} eval rows, from the eval file `{split['eval_file']}`"
    return "no stored split (a job holds out its eval_split)"


def details_markdown(dataset_id) -> str:
    """A version's mapping, split, lineage and the jobs and model versions that used it (with none
    registered yet: how to register the first)."""
    if dataset_id in (None, ""):
        return "" if dataset_choices() else ("No data set registered yet: upload a file on the left, check the "
                                             "report, and press **Register data set**.")
    with session_scope() as db:
        d = db.get(Dataset, int(dataset_id))
        if d is None:
            return f"Data set {dataset_id} does not exist."
        info = versions.describe(db, d)
    mapping = ", ".join(f"`{k}` ← `{v}`" for k, v in info["mapping"].items())
    head = (f"**#{info['id']} {info['name']}** — {info['format']} from `{info['original_name']}`, "
            f"{info['rows']} training rows; {_split_text(info['split'], info['eval_rows'])}")
    lines = [head, f"- mapping: {mapping}", f"- content hash: `{info['content_hash'][:16]}`"]
    if info["ancestors"]:
        lines.append("- derived from: " + " ← ".join(f"#{a['id']} {a['name']}" for a in info["ancestors"]))
    if info["children"]:
        lines.append("- newer versions: " + ", ".join(f"#{c['id']}" for c in info["children"]))
    jobs = [f"#{j['id']} {j['method'] or j['kind']} ({j['state']})" + (f" → version #{j['version_id']}"
                                                                     if j["version_id"] else "") for j in info["jobs"]]
    lines.append("- jobs: " + (", ".join(jobs) if jobs else "none yet"))
    models = [f"#{v['id']} {v['name']}" + (f" (eval loss {v['eval_loss']:.4f})" if v["eval_loss"] is not None else "")
              for v in info["versions"]]
    lines.append("- model versions: " + (", ".join(models) if models else "none yet"))
    return "\n".join(lines)


@friendly
def edit_version(dataset_id, model_id, max_len):
    """Load a registered version's kept upload to correct its mapping; registering makes a new version."""
    if dataset_id in (None, ""):
        raise gr.Error("Pick a registered data set first.")
    with session_scope() as db:
        d = db.get(Dataset, int(dataset_id))
        if d is None:
            raise gr.Error(f"Data set {dataset_id} does not exist.")
        path = get_settings().home_abs / d.source_path if d.source_path else None
        if path is None or not path.is_file():
            raise gr.Error(f"Data set {d.id} was registered without keeping its upload: upload the file again.")
        source = {"path": str(path), "name": d.original_name, "parent": d.id}
        fmt, mapping, name = d.format, dict(d.mapping), d.name
    note = (f"Correcting the mapping of **#{source['parent']} {name}** (`{source['name']}`). Registering makes a new "
            "version of it, with the same split; the old version stays as it is.")
    return [source, note, *inspect(source, fmt, mapping, model_id, max_len), *clean_form()]


def refresh():
    """Lists that change elsewhere: models for the token view, registered data sets."""
    models, data = model_choices(), dataset_choices()
    return (gr.Dropdown(choices=models, value=models[1][1] if len(models) > 1 else ""),
            datasets_frame(), gr.Dropdown(choices=data, value=data[0][1] if data else None))


def render(shell: Shell) -> None:
    source = gr.State(None)  # the file being checked: {"path", "name", "parent"} (parent: a version being edited)
    with gr.Row():
        with gr.Column(scale=3):
            upload = gr.File(label="Data file (JSONL, JSON, CSV/TSV, Parquet, TXT; .gz too)", type="filepath",
                             elem_id="dataset-upload")
            source_note = gr.Markdown(elem_id="dataset-source-note")
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="defaults to the file name", elem_id="dataset-name")
                fmt = gr.Dropdown(FORMATS, value="auto", label="Format", elem_id="dataset-format")
            with gr.Accordion("Column mapping (field ← your column)", open=True), gr.Row():
                fields = [gr.Dropdown(label=f, choices=[NONE], value="", visible=False, elem_id=f"map-{f}")
                          for f in FIELD_NAMES]
            with gr.Row():
                model = gr.Dropdown(label="Model (its tokenizer and chat template)", choices=[NONE], value="",
                                    info="token lengths, the too-long check, and the rows as this model reads them",
                                    elem_id="dataset-model")
                max_len = gr.Number(value=versions.DEFAULT_MAX_SEQ_LENGTH, precision=0, minimum=1,
                                    label="max_seq_length", info="rows longer than this are reported")
            with gr.Accordion("Evaluation rows, stored with the version", open=False), gr.Row():
                ratio = gr.Slider(0, 0.5, value=0, step=0.01, label="Hold out a fraction",
                                  info="0: none stored; then each job holds out its own eval_split")
                seed = gr.Number(value=42, precision=0, label="Seed", info="picks the held-out rows")
                eval_file = gr.File(label="…or a separate eval file (same columns)", type="filepath")
            drop_bad = gr.Checkbox(label="Drop the bad rows", value=False, elem_id="dataset-drop-bad")
            register_btn = gr.Button("Register data set", variant="primary", elem_id="register-dataset")
            status = gr.Markdown(elem_id="dataset-status")
            report = gr.Markdown(elem_id="dataset-report")
            with gr.Row():
                hist = gr.BarPlot(x="tokens", y="rows", color="length", color_map=HIST_COLORS, height=260,
                                  title="Token lengths (rows per bin)", x_title="tokens", x_label_angle=-45,
                                  visible=False, elem_id="dataset-lengths")
                labels = gr.BarPlot(x="label", y="rows", height=260, title="Labels", visible=False,
                                    elem_id="dataset-labels")
            rendered = gr.HTML(elem_id="dataset-rendered")
            preview = gr.Dataframe(label="Preview (first rows)", wrap=True, visible=False, elem_id="dataset-preview")
        with gr.Column(scale=2):
            table = gr.Dataframe(value=datasets_frame, label="Registered data sets", interactive=False,
                                 elem_id="dataset-table")
            picker = gr.Dropdown(label="Data set version", elem_id="dataset-picker")
            share = gr.Checkbox(label="Shared with my team", interactive=False, elem_id="dataset-share")
            details = gr.Markdown(value=lambda: details_markdown(None), elem_id="dataset-details")
            edit_btn = gr.Button("Correct the mapping of this version", elem_id="edit-dataset")
    checked = [fmt, *fields, report, preview, hist, labels, rendered]
    per_file = dict(name=name, eval_ratio=ratio, eval_seed=seed, eval_file=eval_file, drop_bad=drop_bad, status=status)
    assert list(per_file) == list(PER_FILE)
    upload.change(on_upload, [upload, model, max_len], [source, source_note, *checked, *per_file.values()])
    fmt.input(on_format, [source, fmt, model, max_len], checked)
    for control in (*fields, model, max_len):
        control.input(on_mapping, [source, fmt, model, max_len, *fields], checked)
    register_btn.click(register, [source, name, fmt, model, max_len, ratio, seed, eval_file, drop_bad, *fields],
                       [status, table, picker, details])
    picker.change(details_markdown, picker, details)
    picker.change(lambda d: share_box.shared_box("dataset", d), picker, share)
    share.input(share_box.toggle("dataset"), [picker, share], share)
    edit_btn.click(edit_version, [picker, model, max_len], [source, source_note, *checked, *per_file.values()])
    shell.on_select["datasets"] = (refresh, [], [model, table, picker])
