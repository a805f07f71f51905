"""Advisor tab: which fine-tuning method fits this model, data and hardware, and why.

Inputs are pre-filled from the studio (the model's config, the data set's size and token lengths, the
workers' GPUs); the person answers the rest. The answer shows every branch of the decision tree with its
rule, article and numbers, the whole tree with the path highlighted, a memory table for every method and
the suggested settings, which "Use these settings" copies into the Train form."""
from __future__ import annotations


import gradio as gr
import pandas as pd

from models_db import session_scope
from models_db import queries as q
from studio.advisor import advise, param_breakdown, render_mermaid
from studio.advisor.advise import QUALITIES, TASKS
from studio.advisor.explain import (HYPER_HEADERS, MEMORY_HEADERS, PATH_HEADERS, hyper_rows, memory_rows,
                                    path_rows, summary_markdown)
from studio.advisor.jobcost import human
from studio.advisor.sources import (dataset_facts, estimator_history, find_dataset, find_model, model_config,
                                    studio_inputs, worker_gpus)
from studio import preflight
from studio.tab_state import Shell, friendly

TASK_LABELS = {"classification": "classification", "instruction": "instruction following",
               "domain": "domain adaptation", "style": "style / tone", "generation": "open generation",
               "multi_task": "several tasks sharing one base", "cross_task": "cross-task (e.g. legal documents)"}


def model_choices() -> list[tuple[str, int | None]]:
    with session_scope() as db:
        return [("— none: give a size below —", None)] + [(m.name, m.id) for m in q.list_models(db)]


def dataset_choices() -> list[tuple[str, int | None]]:
    with session_scope() as db:
        return [("— none: give the example count below —", None)] + [
            (f"#{d.id} {d.name} ({d.format}, {d.rows} rows)", d.id) for d in q.list_datasets(db)]


def parse_gpus(text: str | None) -> list[float]:
    """'24' -> [24.0]; '24, 80' -> [24.0, 80.0]; '2x24' -> [24.0, 24.0]; '' -> [] (CPU)."""
    out: list[float] = []
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip().lower().replace("gb", "").strip()
        if not item:
            continue
        count, _, size = item.rpartition("x") if "x" in item else ("1", "", item)
        try:
            n, g = int(count.strip() or 1), float(size)
        except ValueError:
            raise gr.Error(f"GPU memory {item!r}: write GB per GPU, e.g. 24, or 24, 80, or 2x24.") from None
        if n < 1 or g <= 0:
            raise gr.Error(f"GPU memory {item!r}: sizes and counts must be positive.")
        out += [g] * n
    return out


def format_gpus(gpus: list[float]) -> str:
    return ", ".join(f"{g:g}" for g in gpus)


def _pick(current, choices):
    """The current pick while it exists, else the first real choice (after the "none" entry)."""
    values = [v for _, v in choices]
    if current is not None and current in values:
        return current
    return values[1] if len(values) > 1 else None


def on_open(model_id, dataset_id, gpu_text):
    """Fill the pickers (keeping the current picks) and, unless typed in, the workers' GPUs."""
    models, data = model_choices(), dataset_choices()
    model_id, dataset_id = _pick(model_id, models), _pick(dataset_id, data)
    picks = gr.Dropdown(choices=models, value=model_id), gr.Dropdown(choices=data, value=dataset_id)
    if gpu_text:
        return *picks, gr.skip(), gr.skip()
    with session_scope() as db:
        gpus = worker_gpus(db)
    return *picks, format_gpus(gpus), not gpus


@friendly
def describe_model(model_id) -> str:
    """The selected model as the estimator reads it."""
    if model_id is None:
        return "No model picked: the advisor assumes a Llama-shaped model of the size you give."
    with session_scope() as db:
        m = find_model(db, model_id)
        config, name = model_config(m), m.name
    b = param_breakdown(config)
    return (f"**{name}**: {b['family']}, {human(b['total'])} parameters, {b['layers']} layers, "
            f"hidden {b['hidden']}, {b['heads']} heads / {b['kv_heads']} KV heads, vocabulary {b['vocab']:,}"
            f"{', tied embeddings' if b['tied'] else ''}.")


@friendly
def fill_from_dataset(dataset_id, model_id):
    """Example count and 95th-percentile token length of the picked data set (the model's tokenizer)."""
    if dataset_id is None:
        return gr.skip(), gr.skip(), "No data set picked: give the example count and typical length."
    with session_scope() as db:
        ds = find_dataset(db, dataset_id)
        m = find_model(db, model_id) if model_id is not None else None
        facts = dataset_facts(ds, m)
    how = f"{facts['examples']:,} examples; 95 % are at most {facts['seq_len_p95']} tokens ({facts['how']})." \
        if facts["seq_len_p95"] else f"{facts['examples']:,} examples; no length statistics."
    return facts["examples"], facts["seq_len_p95"], how


def _int(x) -> int | None:
    return int(x) if x not in (None, "") and float(x) > 0 else None


@friendly
def run(model_id, params_b, dataset_id, examples, p95, gpu_text, cpu_only, ram_gb, task, complexity, quality,
        deploy, latency_ok, seq_len, batch_size):
    """Advise, and lay the advice out: summary, tree, path, memory table, settings (and keep it for 'Use')."""
    gpus = [] if cpu_only else parse_gpus(gpu_text)
    inputs, where = studio_inputs(
        model=model_id, dataset=dataset_id, params_b=float(params_b) if params_b else None, examples=_int(examples),
        gpu_memory_gb=gpus or None, cpu_only=not gpus, ram_gb=float(ram_gb) if ram_gb else None, task=task,
        complexity=float(complexity), quality=quality, deploy=deploy, latency_ok=bool(latency_ok),
        seq_len_p95=_int(p95), seq_len=_int(seq_len), batch_size=_int(batch_size))
    advice = advise(inputs)
    with session_scope() as db:
        history = estimator_history(db)
    summary = summary_markdown(advice, where)
    if history["jobs"]:
        summary += (f"\n\n*The estimator on this studio's {history['jobs']} measured jobs: mean error "
                    f"{history['mean_abs_error_pct']:.0f} %.*")
    kept = {**advice.to_json(), "model_id": model_id, "dataset_id": dataset_id}
    return (summary, render_mermaid(advice), pd.DataFrame(path_rows(advice), columns=PATH_HEADERS),
            pd.DataFrame(memory_rows(advice), columns=MEMORY_HEADERS),
            pd.DataFrame(hyper_rows(advice), columns=HYPER_HEADERS), kept, gr.Button(interactive=bool(advice.method)))


@friendly
def use_settings(kept: dict | None) -> dict:
    """What "Use these settings" hands the Train form: the advice's model, data set, method and every
    suggested value (studio/tabs/train.py fills the form from it and opens the tab)."""
    if not kept:
        raise gr.Error("Ask for advice first.")
    if not kept.get("method"):
        raise gr.Error("Nothing fits this hardware, so there are no settings to use: see what would make it fit.")
    aim = kept.get("objective") or {}
    if kept.get("dataset_id") is not None and not aim.get("name"):
        raise gr.Error(f"Data set #{kept['dataset_id']} trains nothing: {aim.get('note') or 'pick training data'}")
    return {"method": kept["method"], "settings": kept["hyperparameters"], "model_id": kept.get("model_id"),
            "dataset_id": kept.get("dataset_id"), "objective": aim.get("name"),
            "objective_params": aim.get("params") or {}, "from_version": aim.get("from_version")}


@friendly
def measure(kept: dict | None, steps) -> tuple:
    """"Measure": queue a pre-flight of the advised settings on the advised model and data set (a few real steps on
    a worker, studio/preflight.py); the timer then polls it."""
    if not kept:
        raise gr.Error("Ask for advice first.")
    job = preflight.submit(kept, kept.get("model_id"), kept.get("dataset_id"), steps=int(steps or preflight.DEFAULT_STEPS))
    return f"Queued the pre-flight (job #{job.id}): a worker runs {int(steps or 3)} real steps…", job.id, \
        gr.Timer(active=True)


@friendly
def poll_measure(job_id) -> tuple:
    """Timer tick: the pre-flight's progress, then what it measured; the timer stops once it has finished."""
    if job_id is None:
        return gr.skip(), gr.Timer(active=False)
    st = preflight.status(int(job_id))
    return preflight.describe(st), gr.Timer(active=not st["finished"])


def render(shell: Shell) -> None:
    kept = gr.State(None)
    measuring = gr.State(None)
    gr.Markdown("Tell the studio about the job; it walks the articles' decision tree, checks every method's memory "
                "against your GPUs, and suggests settings. Fields are filled from the studio where it knows them.")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("#### Model and data")
            model = gr.Dropdown(label="Base model", elem_id="adv-model")
            params_b = gr.Number(label="or its size in billions of parameters (0: the model's own)", minimum=0,
                                 elem_id="adv-params-b")
            model_note = gr.Markdown(elem_id="adv-model-note")
            dataset = gr.Dropdown(label="Data set", elem_id="adv-dataset")
            with gr.Row():
                examples = gr.Number(label="Training examples", precision=0, minimum=0, elem_id="adv-examples")
                p95 = gr.Number(label="Typical length (p95 tokens)", precision=0, minimum=0, elem_id="adv-p95")
            data_note = gr.Markdown(elem_id="adv-data-note")
        with gr.Column():
            gr.Markdown("#### Hardware")
            gpu_text = gr.Textbox(label="GPU memory per GPU (GB)", placeholder="24, or 24, 80, or 2x24",
                                  info="Filled from the registered workers; type a machine that is not connected.",
                                  elem_id="adv-gpus")
            cpu_only = gr.Checkbox(label="CPU only", elem_id="adv-cpu-only")
            ram_gb = gr.Number(label="RAM in GB, for CPU only (0: unknown)", minimum=0, elem_id="adv-ram")
            with gr.Row():
                seq_len = gr.Number(label="Sequence length (0: from the data)", precision=0, minimum=0,
                                    elem_id="adv-seq-len")
                batch_size = gr.Number(label="Examples per optimizer step (0: 8 or 16)", precision=0, minimum=0,
                                       elem_id="adv-batch")
        with gr.Column():
            gr.Markdown("#### The task")
            task = gr.Dropdown([(v, k) for k, v in TASK_LABELS.items() if k in TASKS], value="instruction",
                               label="Task kind", elem_id="adv-task")
            complexity = gr.Slider(0, 1, value=0.5, step=0.05, label="Task complexity",
                                   info="0 simple (sentiment) … 1 very hard (medical diagnosis)",
                                   elem_id="adv-complexity")
            quality = gr.Radio(list(QUALITIES), value="medium", label="Quality requirement", elem_id="adv-quality")
            deploy = gr.Radio([("server", "server"), ("edge / mobile", "edge")], value="server",
                              label="Deployment target", elem_id="adv-deploy")
            latency = gr.Checkbox(value=True, label="Extra inference latency is acceptable (unmerged adapters)",
                                  elem_id="adv-latency")
    with gr.Row():
        go = gr.Button("Advise", variant="primary", elem_id="adv-run", scale=3)
        use = gr.Button("Use these settings", variant="secondary", interactive=False, elem_id="adv-use", scale=1)
        measure_btn = gr.Button("Measure", variant="secondary", interactive=False, elem_id="adv-measure", scale=1)
        measure_steps = gr.Number(value=preflight.DEFAULT_STEPS, precision=0, minimum=1, maximum=preflight.MAX_STEPS,
                                  label="steps", elem_id="adv-measure-steps", scale=0, min_width=80)
    summary = gr.Markdown(elem_id="adv-summary")
    measured = gr.Markdown(elem_id="adv-measured")
    measure_timer = gr.Timer(2.0, active=False)
    with gr.Accordion("The decision tree (path taken highlighted)", open=True):
        # the whole drawing, no scroll box of its own: the conclusion (bottom) is never hidden inside it
        tree = gr.Markdown(render_mermaid(), elem_id="adv-tree")
    with gr.Accordion("Every branch: question, answer, rule, article, numbers", open=True):
        path = gr.Dataframe(headers=PATH_HEADERS, wrap=True, interactive=False, elem_id="adv-path",
                            column_widths=["4%", "26%", "7%", "27%", "31%", "5%"])
    with gr.Accordion("Peak memory per GPU for every method", open=True):
        memory = gr.Dataframe(headers=MEMORY_HEADERS, wrap=True, interactive=False, elem_id="adv-memory",
                              column_widths=["10%", *["7%"] * 7, "12%", "22%"])
    with gr.Accordion("Suggested settings", open=True):
        hyper = gr.Dataframe(headers=HYPER_HEADERS, interactive=False, elem_id="adv-hyper")

    inputs = [model, params_b, dataset, examples, p95, gpu_text, cpu_only, ram_gb, task, complexity, quality,
              deploy, latency, seq_len, batch_size]
    go.click(run, inputs, [summary, tree, path, memory, hyper, kept, use]).then(
        lambda k: gr.Button(interactive=bool(k and k.get("method") and k.get("model_id") is not None
                                             and k.get("dataset_id") is not None)), kept, measure_btn)
    measure_btn.click(measure, [kept, measure_steps], [measured, measuring, measure_timer])
    measure_timer.tick(poll_measure, measuring, [measured, measure_timer], show_progress="hidden")
    shell.hand_to("train", use.click, use_settings, [kept])
    model.change(describe_model, model, model_note, show_progress="hidden")
    gr.on([model.change, dataset.change], fill_from_dataset, [dataset, model], [examples, p95, data_note],
          show_progress="hidden")
    shell.on_select["advisor"] = (on_open, [model, dataset, gpu_text], [model, dataset, gpu_text, cpu_only])
