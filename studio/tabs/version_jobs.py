"""The Versions tab's worker jobs on versions: "Evaluate on dataset..." (the picked version measured on
any data set version: eval split, else its training rows), its evaluations table, and the "Combine"
accordion (2+ LoRA versions of one base merged with peft's weighted adapter combination into a new
version). Rendered inside the Versions tab (studio/tabs/versions.py); handlers are module-level."""
from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from models_db import Dataset, Evaluation, Job, JobState, ModelVersion, session_scope
from models_db.access import hidden_reason
from models_db import queries as q
from studio import benchmarks, combine, evaluations, evidence, operations
from studio.tab_state import friendly

EXAMPLE_COLUMNS = ["row", "question", "right answer", "model's answer", "correct"]


def dataset_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{d.id} {d.name} ({d.format}{', eval split' if d.eval_rows else ''})", d.id)
                for d in q.list_datasets(db)]


def version_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{v.id} {v.name} ({v.method})", v.id) for v in q.list_versions(db)]


def evaluations_md(version_id: int | None) -> str:
    """The picked version's evaluations, one row per data set, and how it compares with its parent and base."""
    if not version_id:
        return ""
    with session_scope() as db:
        if db.get(ModelVersion, int(version_id)) is None:  # someone else's (models_db.access), or gone
            return hidden_reason(db, ModelVersion, int(version_id)) or f"Version #{version_id} does not exist."
        rows = evaluations.table(db, [int(version_id)])
    return ("**Evaluations** (per data set)\n\n" + evaluations.markdown(rows, [f"#{version_id}"]) + "\n\n"
            + evidence_md(int(version_id)))


def _against_md(title: str, against: dict | None) -> str:
    if against is None:
        return ""
    lines = [f"**{title}**"]
    if against["datasets"]:
        lines += ["", "| data set | measure | this version | reference | Δ | beyond noise |", "|---|---|---|---|---|---|"]
    for d in against["datasets"]:
        where = d["dataset"] + (" (pinned)" if d["pinned"] else "")
        for m in d["measures"]:
            mark = "—" if m["beyond_noise"] is None else ("yes" if m["beyond_noise"] else "no")
            sign = "" if m["better"] is None else (" ✓" if m["better"] else " ✗ worse")
            lines.append(f"| {where} | {m['label']} | {m['value']:.4f} | {m['reference']:.4f} | "
                         f"{m['delta']:+.4f}{sign} | {mark} |")
    if against["pending"]:
        lines.append("\n_Not evaluated on both sides yet:_ " + ", ".join(f"#{i}" for i in against["pending"]))
    return "\n".join(lines)


def evidence_md(version_id: int) -> str:
    """vs its parent and vs its base, on its own data set and the pinned benchmarks, with the deltas and
    whether each is beyond noise (two standard errors of the difference); pinned benchmarks are marked."""
    result = evidence.comparison(version_id)
    parent = result["vs_parent"]
    return "\n\n".join(x for x in (
        _against_md(f"vs its parent #{parent['version_id']}" if parent else "", parent),
        _against_md(f"vs its base {result['vs_base']['name']}", result["vs_base"])) if x)


# --- a benchmark's questions -------------------------------------------------------------------------------

def benchmark_choices(version_id: int | None) -> gr.Dropdown:
    """The data sets the picked version has per-question results on (its benchmarks)."""
    if not version_id:
        return gr.Dropdown(choices=[], value=None)
    with session_scope() as db:
        found = [(f"#{e.dataset_id} {ds.name if ds else ''} ({ds.format if ds else ''})", e.dataset_id)
                 for e in db.query(Evaluation).filter(Evaluation.version_id == int(version_id)).order_by(
                     Evaluation.dataset_id) if e.examples for ds in [db.get(Dataset, e.dataset_id)]]
    return gr.Dropdown(choices=found, value=found[0][1] if found else None)


def examples_frame(version_id: int | None, dataset_id: int | None, failed_only: bool) -> pd.DataFrame:
    """A benchmark's questions with the right answer and the model's (only the failed ones when asked)."""
    if not version_id or not dataset_id:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    with session_scope() as db:
        row = evaluations.find(db, int(dataset_id), version_id=int(version_id))
        examples = benchmarks.examples_view(row.examples if row else [], failed_only=bool(failed_only))
    return pd.DataFrame([[e["row"], e["question"], e["target"], e["answer"], "✓" if e["correct"] else "✗"]
                         for e in examples], columns=EXAMPLE_COLUMNS)


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
def pin_for_base(version_id: int | None, dataset_id: int | None) -> str:
    """Pin the picked data set as a benchmark of the version's base and evaluate the base on it (once): every new
    version of that base is then evaluated on it with its parent and its base."""
    if not version_id or not dataset_id:
        raise gr.Error("Pick a version and the data set to pin.")
    from models_db import ModelVersion

    with session_scope() as db:
        version = db.get(ModelVersion, int(version_id))
        if version is None:
            raise gr.Error(f"Version #{version_id} does not exist or is not yours to see.")
        base_id = version.base_model_id
        added = benchmarks.pin(db, base_id, int(dataset_id))
        known = evaluations.find(db, int(dataset_id), base_model_id=base_id) is not None
    queued = ""
    if not known:  # the "before" of every comparison on it
        job, _ = evaluations.submit_evaluate(None, int(dataset_id), base_model_id=base_id)
        queued = f"; the base is evaluated on it (job {job.id})"
    return (f"Data set #{dataset_id} {'pinned' if added else 'was already pinned'} as a benchmark of base model "
            f"#{base_id}: each new version of it is evaluated there with its parent and its base{queued}.")


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
    if result.get("evaluations_base"):  # the shared base as it is: "better than the base" in the same table
        head += f"<th>base {html.escape(result['evaluations_base'])}</th>"
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
    return f"<td>{html.escape(evaluations.cell_text(c, key))}</td>"


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
        pin_btn = gr.Button("Pin as a benchmark of its base", scale=1, elem_id="pin-benchmark")
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
    with gr.Accordion("Benchmark questions", open=False, elem_id="benchmark-box"):
        with gr.Row():
            bench = gr.Dropdown(label="Benchmark", scale=3, elem_id="benchmark-dataset",
                                info="a multiple-choice or question/answer data set this version was evaluated on")
            failed_only = gr.Checkbox(label="Failed only", value=False, scale=1, elem_id="benchmark-failed-only")
        questions = gr.Dataframe(headers=EXAMPLE_COLUMNS, interactive=False, max_height=360, wrap=True,
                                 elem_id="benchmark-questions")

    picker.change(evaluations_md, picker, evals)
    picker.change(benchmark_choices, picker, bench)
    for event in (bench.change, failed_only.change):
        event(examples_frame, [picker, bench, failed_only], questions)
    picker.change(on_open, None, [dataset, parents])  # fresh lists whenever the tab opens or a version is picked
    evaluate_btn.click(start_evaluate, [picker, dataset], [watched, status])
    pin_btn.click(pin_for_base, [picker, dataset], status)
    combine_btn.click(start_combine, [parents, weights, how, density, name], [watched, status])
    gr.Timer(2.0).tick(job_status, [watched, picker], [status, evals], show_progress="hidden")
    return dataset, parents
