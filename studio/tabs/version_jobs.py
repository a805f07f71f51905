"""The Versions tab's worker jobs on versions: "Evaluate on dataset..." (the picked version measured on
any data set version: eval split, else its training rows), its evaluations table, and the "Combine"
accordion (2+ LoRA versions of one base merged with peft's weighted adapter combination into a new
version). Rendered inside the Versions tab (studio/tabs/versions.py); handlers are module-level."""
from __future__ import annotations

import html

import gradio as gr

from models_db import Job, JobState, session_scope
from models_db import queries as q
from studio import combine, evaluations, operations
from studio.tab_state import friendly


def dataset_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{d.id} {d.name} ({d.format}{', eval split' if d.eval_rows else ''})", d.id)
                for d in q.list_datasets(db)]


def version_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{v.id} {v.name} ({v.method})", v.id) for v in q.list_versions(db)]


def evaluations_md(version_id: int | None) -> str:
    """The picked version's evaluations, one row per data set."""
    if not version_id:
        return ""
    with session_scope() as db:
        rows = evaluations.table(db, [int(version_id)])
    return "**Evaluations** (per data set)\n\n" + evaluations.markdown(rows, [f"#{version_id}"])


@friendly
def start_evaluate(version_id: int | None, dataset_id: int | None):
    """Queue an evaluate job; returns (job id to watch, message)."""
    if not version_id:
        raise gr.Error("Select a version first.")
    if not dataset_id:
        raise gr.Error("Pick the data set to evaluate it on.")
    job, created = evaluations.submit_evaluate(int(version_id), int(dataset_id))
    verb = "Evaluating" if created else "Already evaluating"
    return job.id, f"{verb} version #{version_id} on data set #{dataset_id} (job {job.id})…"


@friendly
def start_combine(parents: list | None, weights: str, how: str, density: float, name: str):
    """Queue a combine job from the accordion's fields; returns (job id to watch, message)."""
    if len(set(parents or [])) < 2:  # said before the weights are parsed: with no versions they divide by zero
        raise gr.Error("Pick 2 or more LoRA versions of one base in “Versions to combine” first.")
    job, spec = combine.submit_combine(list(parents or []), weights=weights, how=how, density=density, name=name)
    mix = " + ".join(f"#{p} x {w:g}" for p, w in zip(spec.parents, spec.weights))
    return job.id, f"Combining {mix} with {how} into “{html.escape(spec.name)}” (job {job.id})…"


def job_status(job_id: int | None, version_id: int | None = None):
    """Timer tick: where the watched job is; once an evaluation finished, the refreshed table."""
    if not job_id:
        return gr.skip(), gr.skip()
    with session_scope() as db:
        job = db.get(Job, int(job_id))
        if job is None:
            return "", gr.skip()
        state, kind, message, error, result = job.state, job.kind, job.message, job.error, job.result or {}
    if state == JobState.succeeded:
        made = f": new version #{result['version_id']}" if result.get("version_id") else ""
        return f"{kind.capitalize()} job {job_id} done{made}.", evaluations_md(version_id)
    if state in (JobState.failed, JobState.cancelled):
        return f"{kind.capitalize()} job {job_id} {state}: {html.escape(error or '')}", gr.skip()
    why = operations.waiting_for(int(job_id)) if state == JobState.queued else message
    return f"{state.capitalize()}: {html.escape(why or 'starting')}", gr.skip()


def evaluations_html(result: dict) -> str:
    """The compare view's version x data set table (studio.versions.compare's "evaluations")."""
    rows = result.get("evaluations") or []
    if not rows:
        return ("<p class='cmp-note'>None of these versions was evaluated on a data set yet: use "
                "“Evaluate on dataset…” above.</p>")
    vs = result["versions"]
    head = "".join(f"<th>#{v['id']}</th>" for v in vs)
    body = ""
    for r in rows:
        only_train = {c["split"] for c in r["cells"] if c} == {"train"}
        where = html.escape(r["dataset"]) + (" <span class='sub'>(training rows: no eval split)</span>"
                                             if only_train else "")
        for key, label, better in evaluations.measures([r]):
            cells = "".join(_cell(c, key) for c in r["cells"])
            hint = "↓" if better == "lower" else "↑"
            body += f"<tr><th class='k'>{where}</th><th class='k'>{label} {hint}</th>{cells}</tr>"
    return (f"<div class='cmp-title'>Evaluations: each version on each data set</div>"
            f"<table class='cmp' id='compare-evaluations'><thead><tr><th>data set</th><th>measure</th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>")


def _cell(c: dict | None, key: str) -> str:
    value = None if not c else c["metrics"].get(key)
    return "<td>—</td>" if value is None else f"<td>{value:.4f}</td>"


def on_open():
    return gr.Dropdown(choices=dataset_choices()), gr.Dropdown(choices=version_choices())


def render(picker: gr.Dropdown) -> tuple:
    """The evaluate row and the Combine accordion, under the picked version; returns what the tab refreshes."""
    watched = gr.State(None)
    evals = gr.Markdown(elem_id="version-evaluations")
    with gr.Row():
        dataset = gr.Dropdown(label="Evaluate on dataset…", scale=3, elem_id="evaluate-dataset",
                              info="its eval split, or its training rows when it has none")
        evaluate_btn = gr.Button("Evaluate", scale=1, elem_id="evaluate-version")
    with gr.Accordion("Combine versions", open=False, elem_id="combine-box"):
        gr.Markdown("Merge 2 or more LoRA versions of one base into a new version (peft's weighted adapter "
                    "combination); it is evaluated on each parent's data set.")
        parents = gr.Dropdown(label="Versions to combine", multiselect=True, elem_id="combine-versions")
        with gr.Row():
            weights = gr.Textbox(label="Weights", placeholder="0.5, 0.5 (empty: the method's default)",
                                 elem_id="combine-weights")
            how = gr.Dropdown(list(combine.HOWS), value="linear", label="Method", elem_id="combine-how",
                              info="; ".join(f"{k}: {v}" for k, v in combine.HOWS.items()))
            density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Density (TIES, DARE)",
                                elem_id="combine-density")
        name = gr.Textbox(label="Name of the new version (optional)", elem_id="combine-name")
        combine_btn = gr.Button("Combine", variant="primary", elem_id="combine-start")
    status = gr.Markdown(elem_id="version-job-status")

    picker.change(evaluations_md, picker, evals)
    picker.change(on_open, None, [dataset, parents])  # fresh lists whenever the tab opens or a version is picked
    evaluate_btn.click(start_evaluate, [picker, dataset], [watched, status])
    combine_btn.click(start_combine, [parents, weights, how, density, name], [watched, status])
    gr.Timer(2.0).tick(job_status, [watched, picker], [status, evals], show_progress="hidden")
    return dataset, parents
