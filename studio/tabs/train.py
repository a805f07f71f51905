"""Train tab: pick a base model, a data set and a method; the form is generated from the method
registry and the training knobs, so adding a method touches no UI code."""
from __future__ import annotations

import uuid

import gradio as gr

from models_db import session_scope
from models_db import queries as q
from studio import services
from studio.jobspec import STUDIO, TRAINING, Knob, build_train_spec
from studio.shell import Shell, friendly
from worker import methods

MAIN_KEYS = ["num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
             "gradient_accumulation_steps", "max_seq_length", "eval_split", "seed"]


def component_for(name: str, kind: type, default, help_: str, *, minimum=None, maximum=None, choices=None,
                  elem_id: str | None = None):
    """The input widget for one setting, its help text as the tooltip."""
    common = {"label": name, "info": help_, "elem_id": elem_id}
    if choices:
        return gr.Dropdown(list(choices), value=default, **common)
    if kind is bool:
        return gr.Checkbox(value=bool(default), **common)
    if kind in (int, float):
        return gr.Number(value=default, precision=0 if kind is int else None, minimum=minimum, maximum=maximum,
                         **common)
    return gr.Textbox(value="" if default is None else str(default), **common)


def human_count(n: int) -> str:
    """134515008 -> '135M', 44192 -> '44k'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def model_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"{m.name} ({human_count(m.params_total)} params)", m.id) for m in q.list_models(db)]


def dataset_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{d.id} {d.name} ({d.format}, {d.rows} rows)", d.id) for d in q.list_datasets(db)]


def version_choices() -> list[tuple[str, int | None]]:
    with session_scope() as db:
        return [("— start from the base model —", None)] + [(f"#{v.id} {v.name}", v.id) for v in q.list_versions(db)]


def refresh_choices():
    models, data = model_choices(), dataset_choices()
    return (gr.Dropdown(choices=models, value=models[0][1] if models else None),
            gr.Dropdown(choices=data, value=data[0][1] if data else None),
            gr.Dropdown(choices=version_choices(), value=None))


def method_defaults(method: str) -> list:
    """When the method changes: show its parameter group and apply its training defaults."""
    m = methods.get(method)
    shows = [gr.Group(visible=name == method) for name in methods.names()]
    lr = m.default_training.get("learning_rate", TRAINING["learning_rate"].default)
    note = m.summary + ("" if m.mergeable else "  \n**Note:** cannot be merged into the base: exports give the adapter "
                                                "plus loading code.")
    return [*shows, gr.Number(value=lr), note]


@friendly
def start(model_id, dataset_id, method, parent_id, nonce, *values):
    """Validate everything, queue the job, and switch to the Jobs tab to watch it."""
    if model_id is None:
        raise gr.Error("Pick a base model (import one with `studio models import`).")
    if dataset_id is None:
        raise gr.Error("Pick a data set (register one on the Datasets tab).")
    settings = _collect(method, values)
    spec = build_train_spec(model_id=int(model_id), dataset_id=int(dataset_id), method=method, settings=settings,
                            parent_version_id=int(parent_id) if parent_id else None)
    job, _ = services.submit_train(spec, idempotency_key=nonce)  # a double click submits the same nonce
    gr.Info(f"Job {job.id} queued")
    return job.id, gr.Tabs(selected="jobs"), uuid.uuid4().hex


def _param_specs() -> list[tuple[str, str, Knob]]:
    """(owner, key, knob) for every form field: training knobs, then each method's params."""
    specs = [("training", k, v) for k, v in {**TRAINING, **STUDIO}.items()]
    for desc in methods.describe_all():
        for p in desc["params"]:
            kind = {"int": int, "float": float, "bool": bool}.get(p["type"], str)
            specs.append((desc["name"], p["name"], Knob(kind, p["default"], p["help"], p.get("min"), p.get("max"),
                                                        tuple(p["choices"]) if p.get("choices") else None)))
    return specs


SPECS = _param_specs()


def _collect(method: str, values) -> dict:
    """Only the selected method's params and the training knobs, leaving out empty optional fields."""
    out = {}
    for (owner, key, _knob), value in zip(SPECS, values):
        if owner in ("training", method) and value is not None and value != "":
            out[key] = value
    return out


def render(shell: Shell) -> None:
    nonce = gr.State(lambda: uuid.uuid4().hex)
    with gr.Row():
        model = gr.Dropdown(label="Base model", elem_id="train-model")
        dataset = gr.Dropdown(label="Data set", elem_id="train-dataset")
        method = gr.Dropdown(methods.names(), value="lora", label="Method", elem_id="train-method")
        parent = gr.Dropdown(label="Continue from version", elem_id="train-parent")
    note = gr.Markdown(methods.get("lora").summary)
    inputs, groups = {}, {}
    with gr.Accordion("Method parameters", open=True):
        for name in methods.names():
            with gr.Group(visible=name == "lora") as groups[name]:
                with gr.Row():
                    for owner, key, knob in SPECS:
                        if owner == name:
                            inputs[(owner, key)] = component_for(
                                key, knob.type, knob.default, knob.help, minimum=knob.min, maximum=knob.max,
                                choices=knob.choices, elem_id=f"p-{name}-{key}")
    with gr.Accordion("Training", open=True):
        with gr.Row():
            for key in MAIN_KEYS:
                k = {**TRAINING, **STUDIO}[key]
                inputs[("training", key)] = component_for(key, k.type, k.default, k.help, minimum=k.min,
                                                          maximum=k.max, choices=k.choices, elem_id=f"t-{key}")
    with gr.Accordion("Advanced training settings", open=False):
        with gr.Row():
            for owner, key, k in SPECS:
                if owner == "training" and key not in MAIN_KEYS:
                    inputs[(owner, key)] = component_for(key, k.type, k.default, k.help, minimum=k.min,
                                                         maximum=k.max, choices=k.choices, elem_id=f"t-{key}")
    start_btn = gr.Button("Start training", variant="primary", elem_id="start-training")
    ordered = [inputs[(o, k)] for o, k, _ in SPECS]
    method.change(method_defaults, method, [*groups.values(), inputs[("training", "learning_rate")], note])
    start_btn.click(start, [model, dataset, method, parent, nonce, *ordered], [shell.job_id, shell.tabs, nonce])
    shell.on_select["train"] = (refresh_choices, [], [model, dataset, parent])
