"""Train tab: pick a base model, a data set, a method and an objective; see what it costs; launch.

The form is generated from the method and objective registries and the training knobs, so adding a method, an
objective or a knob touches no UI code: their parameters show their first few fields with the rest under "More
options"; the objective follows the data set's format (preference data: DPO) until the person picks one;
training knobs are grouped by :data:`LAYOUT`, and a knob it does not name lands in the Advanced section.
Whenever the model, the method or a setting changes, the cost line shows trainable / total parameters
and the estimated peak memory (torch-free, from the model's config.json)."""
from __future__ import annotations

import re
import uuid

import gradio as gr

from models_db import Dataset, session_scope
from models_db import queries as q
from studio import methods, objectives, operations, routing
from studio.advisor import jobcost
from studio.advisor.sources import find_model, model_config, worker_gpus
from studio.jobspec import (
    STUDIO,
    TRAINING,
    Knob,
    SpecError,
    build_train_spec,
    check_against_model,
    coerce,
)
from studio.tab_state import Shell, friendly

# Training knobs in readable groups: (title, the knobs always shown, the knobs under Advanced).
LAYOUT = [
    ("Schedule", ["num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type"],
     ["warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm"]),
    ("Batch and memory", ["per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length",
                          "gradient_checkpointing"],
     ["bf16", "fp16", "optim", "per_device_eval_batch_size", "packing"]),
    ("Evaluation and checkpoints", ["eval_split", "eval_steps", "early_stopping_patience"],
     ["save_steps", "save_total_limit", "logging_steps", "seed"]),
]
DEFAULT_METHOD = "lora"  # what the form opens on
AUTO = "auto"  # the objective until one is picked: the data set's format decides (studio.objectives.default_for)
METHOD_MAIN = 4  # a method's first fields are shown; the rest wait under "More options"
PER_ROW = 4


def component_for(name: str, kind: type, default, help_: str, *, choices=None, elem_id: str | None = None):
    """The input widget for one setting, its help text as the tooltip.

    Numbers get no Gradio minimum/maximum on purpose: Gradio's own check says "Value -5 is less than
    minimum value -1" without naming the field, once per pending event, and skips the handler, so the
    cost line goes stale. The range is checked by build_train_spec, whose message names the field."""
    common = {"label": name, "info": help_, "elem_id": elem_id}
    if choices:
        return gr.Dropdown(list(choices), value=default, **common)
    if kind is bool:
        return gr.Checkbox(value=bool(default), **common)
    if kind in (int, float):
        return gr.Number(value=default, precision=0 if kind is int else None, **common)
    return gr.Textbox(value="" if default is None else str(default), **common)


def for_form(message: str) -> str:
    """A settings error worded for this form: the registry's messages name CLI flags ("Set --set r=16 or
    lower"); here each setting is the field with that label."""
    message = re.sub(r"Set --set (\w+)=\s*(?:to )?", r"Set the \1 field to ", message)
    return re.sub(r"--set (\w+)=", r"\1 = ", message)


human_count = jobcost.human


def model_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"{m.name} ({human_count(m.params_total)} params)", m.id) for m in q.list_models(db)]


def dataset_choices() -> list[tuple[str, int]]:
    with session_scope() as db:
        return [(f"#{d.id} {d.name} ({d.format}, {d.rows} rows)", d.id) for d in q.list_datasets(db)]


def version_choices() -> list[tuple[str, int | None]]:
    with session_scope() as db:
        return [("— start from the base model —", None)] + [(f"#{v.id} {v.name}", v.id) for v in q.list_versions(db)]


def after_choices() -> list[tuple[str, int | None]]:
    """"now", then the running and queued jobs a new job can be queued behind (``--after`` in the CLI)."""
    with session_scope() as db:
        return [("now", None)] + [(f"after #{j.id} {(j.config or {}).get('method', j.kind)} ({j.state})", j.id)
                                  for j in q.active_jobs(db)]


def _keep(current, choices):
    """The current pick when it is still offered, else the first choice."""
    values = [v for _, v in choices]
    return current if current in values else (values[0] if values else None)


def refresh_choices(model_id=None, dataset_id=None, parent_id=None, after_id=None, kept: dict | None = None):
    """Fresh lists when the tab opens, keeping what is already picked (e.g. by the Advisor); after a
    reload, what this browser picked last (``kept``: :func:`remember_form`'s, in its localStorage)."""
    models, data, parents, after = model_choices(), dataset_choices(), version_choices(), after_choices()
    picks = kept if isinstance(kept, dict) else {}
    model_id = model_id if model_id is not None else picks.get("model")
    dataset_id = dataset_id if dataset_id is not None else picks.get("dataset")
    return (gr.Dropdown(choices=models, value=_keep(model_id, models)),
            gr.Dropdown(choices=data, value=_keep(dataset_id, data)),
            gr.Dropdown(choices=parents, value=parent_id if parent_id in [v for _, v in parents] else None),
            gr.Dropdown(choices=after, value=after_id if after_id in [v for _, v in after] else None))


def _note(m) -> str:
    return m.summary + ("" if m.mergeable else "  \n**Note:** cannot be merged into the base: exports give the "
                                               "adapter plus loading code.")


def _objective_spec(objective: str | None):
    return objectives.get(objective) if objective in objectives.names() else None


def _learning_rate(method: str, objective: str | None) -> float:
    defaults = objectives.training_defaults(_objective_spec(objective), methods.get(method))
    return defaults.get("learning_rate", TRAINING["learning_rate"].default)


def method_defaults(method: str, objective: str | None = None) -> list:
    """When the person picks a method: show its parameter group and apply its training defaults (with the
    objective's over them)."""
    m = methods.get(method)
    shows = [gr.Group(visible=name == method) for name in methods.names()]
    return [*shows, gr.Number(value=_learning_rate(method, objective)), _note(m)]


def _objective_note(objective: str | None) -> str:
    spec = _objective_spec(objective)
    if spec is None:
        return ("**Objective: from the data set** (instruction, chat, text: sft; classification; preference: dpo; "
                "feedback: kto).")
    return f"**{spec.name}**: {spec.summary} Data: {', '.join(spec.formats)}."


def objective_shows(objective: str | None) -> list:
    """When the objective changes (picked, or following the data set): show its settings and what it is."""
    return [*(gr.Group(visible=name == objective) for name in objectives.names()), _objective_note(objective)]


def objective_defaults(objective: str | None, method: str) -> gr.Number:
    """When the person picks an objective: its learning rate for this method (a scale of the method's)."""
    return gr.Number(value=_learning_rate(method, objective))


def follow_dataset(dataset_id, objective: str | None, method: str) -> list:
    """When the data set changes: the objective its format implies (DPO for preference pairs...), with that
    objective's learning rate; nothing changes when the current choice already takes the data set's format."""
    with session_scope() as db:
        ds = db.get(Dataset, int(dataset_id)) if dataset_id else None
        fmt = ds.format if ds is not None else None
    current = _objective_spec(objective)
    fitting = objectives.default_for(fmt) if fmt else None
    if fitting is None or (current is not None and fmt in current.formats):
        return [gr.skip(), gr.skip()]
    return [gr.update(value=fitting.name), gr.Number(value=_learning_rate(method, fitting.name))]


def _param_specs() -> list[tuple[str, str, Knob]]:
    """(owner, key, knob) for every form field: training knobs, then each method's params, then each
    objective's (method and objective names never coincide: an owner is one or the other)."""
    specs = [("training", k, v) for k, v in {**TRAINING, **STUDIO}.items()]
    for desc in [*methods.describe_all(), *objectives.describe_all()]:
        for p in desc["params"]:
            kind = {"int": int, "float": float, "bool": bool}.get(p["type"], str)
            specs.append((desc["name"], p["name"], Knob(kind, p["default"], p["help"], p.get("min"), p.get("max"),
                                                        tuple(p["choices"]) if p.get("choices") else None)))
    return specs


SPECS = _param_specs()


def objective_of(values) -> str | None:
    """The Objective choice, which the handlers take after the fields (last); None for auto (or left out)."""
    choice = values[len(SPECS)] if len(values) > len(SPECS) else AUTO
    return None if choice in (None, "", AUTO) else choice


def _collect(method: str, values) -> dict:
    """Only the selected method's and objective's params and the training knobs, leaving out empty optional
    fields (the objective itself is ``objective_of``)."""
    objective = objective_of(values)
    out = {}
    for (owner, key, _knob), value in zip(SPECS, values):
        if owner in ("training", method, objective) and value is not None and value != "":
            out[key] = value
    return out


def form_values(method: str, settings: dict) -> list:
    """Every form field's value for ``method`` (and ``settings["objective"]``, if any) with ``settings`` over the
    defaults (the studio's, then the method's own with the objective's over them, as build_train_spec layers
    them); other methods' and objectives' fields are left as they are."""
    objective = settings.get("objective")
    defaults = objectives.training_defaults(_objective_spec(objective), methods.get(method))
    out = []
    for owner, key, knob in SPECS:
        if owner == "training":
            out.append(settings.get(key, defaults.get(key, knob.default)))
        elif owner in (method, objective):
            out.append(settings.get(key, knob.default))
        else:
            out.append(gr.skip())
    return out


def source_info(owner: str, key: str, knob: Knob, method: str, value=None, suggested: bool = False) -> str:
    """A field's tooltip: its help, then where its value comes from (the advisor, the method's spec or the
    studio's default), so a person can tell a measured default from a suggestion for their data."""
    if suggested:
        return f"{knob.help} Value {value!r}: suggested by the advisor for this model, data set and hardware."
    if owner == "training" and key in methods.get(method).default_training:
        return f"{knob.help} Default {methods.get(method).default_training[key]!r}: {method}'s own (its spec)."
    if owner == "training":
        return f"{knob.help} Default {knob.default!r}: the studio's."
    return f"{knob.help} Default {knob.default!r}: {owner}'s spec."


def form_updates(method: str, settings: dict) -> list:
    """``form_values`` as field updates whose tooltips say where each value came from (``settings`` are the
    advisor's suggestions)."""
    out = []
    for (owner, key, knob), value in zip(SPECS, form_values(method, settings)):
        if owner not in ("training", method, settings.get("objective")):
            out.append(value)  # gr.skip(): another method's field
            continue
        info = source_info(owner, key, knob, method, value, suggested=key in settings)
        out.append(gr.update(value=value, info=info))
    return out


def fill_from_advice(advice: dict) -> list:
    """The Advisor's "Use these settings": the form gets the advice's model and data set (with fresh
    choices, so a data set registered since the page loaded is there), its method and every suggested
    value, the rest back to the defaults, the objective the advice chose for the data (its settings too, and the
    version it starts from), and a line that says where they came from.
    Outputs: ``[model, dataset, method, note, *method groups, *every field, objective, filled, parent]``."""
    method = advice["method"]
    model_id, dataset_id = advice.get("model_id"), advice.get("dataset_id")
    aim, start = advice.get("objective"), advice.get("from_version")
    models, data, parents = model_choices(), dataset_choices(), version_choices()
    shows = [gr.Group(visible=name == method) for name in methods.names()]
    suggested = advice.get("settings", {})
    if aim in objectives.names():
        suggested = {**suggested, **(advice.get("objective_params") or {}), "objective": aim}
    where = (f"data set #{dataset_id}" if dataset_id is not None else "no data set (pick one)") + \
        (f" on {dict((v, k) for k, v in models).get(model_id, f'model #{model_id}')}" if model_id is not None else "")
    trains = f"**{method}**" + (f", objective **{aim}**" if aim else "") + (f" from version #{start}" if start else "")
    count = len([k for k in suggested if k != "objective"])
    filled = (f"Filled from the advice for {where}: {trains} and {count} suggested settings "
              f"({', '.join(sorted(k for k in suggested if k != 'objective'))}); every other field is back to its "
              "default.")
    gr.Info(f"Filled the form from the advice for {where}; check it and start training.")
    if aim in objectives.names():
        objective = gr.update(value=aim)
    else:
        objective = follow_dataset(dataset_id, None, method)[0] if dataset_id is not None else gr.skip()
    return [gr.Dropdown(choices=models, value=model_id if model_id is not None else _keep(None, models)),
            gr.Dropdown(choices=data, value=dataset_id if dataset_id is not None else None),
            method, _note(methods.get(method)), *shows, *form_updates(method, suggested), objective, filled,
            gr.Dropdown(choices=parents, value=start if start in [v for _, v in parents] else None)]


def remember_form(model_id, dataset_id, method, *values) -> dict:
    """The Train form as this browser last had it, kept in its localStorage for the next reload: the model,
    the data set, the method, the objective when one is picked, and each field of the method, the objective
    and training that differs from its default (a default is not pinned: a default changed since comes
    through). The whole form is one value under a key of its own, written by this event only: merged into a
    value other events write too (the open tab), one write could undo another."""
    objective = objective_of(values)
    training, params, aims = {}, {}, {}
    for (owner, key, _), value, default in zip(SPECS, values, form_values(method, {"objective": objective})):
        if owner in ("training", method, objective) and value not in (None, "") and value != default:
            {"training": training, method: params}.get(owner, aims)[key] = value
    form = {"model": model_id, "dataset": dataset_id, "method": method, "training": training, "params": params}
    return {**form, "objective": objective, "objective_params": aims} if objective else form


def saved_form(form) -> tuple[str, dict]:
    """The method and settings of a remembered form that still hold: a method no longer registered opens
    as the default one without its parameters; a field that no longer exists, or a value its field now
    refuses (out of range, not a choice), is left out, so that field shows its default. Never an error:
    what a browser kept from an older studio must not stop the page."""
    form = form if isinstance(form, dict) else {}
    method = form.get("method")
    if method in methods.names():
        parts = {"training": form.get("training"), method: form.get("params")}
    else:  # a method gone: its parameters mean nothing to the default one
        method, parts = DEFAULT_METHOD, {"training": form.get("training")}
    objective = form.get("objective")
    keep = {}
    if isinstance(objective, str) and objective in objectives.names():  # an objective gone: the data set's
        parts[objective], keep["objective"] = form.get("objective_params"), objective
    for owner, stored in parts.items():
        knobs = {key: knob for o, key, knob in SPECS if o == owner}
        for key, value in (stored.items() if isinstance(stored, dict) else ()):
            try:
                keep[key] = coerce(key, knobs[key], value)
            except (KeyError, TypeError, ValueError):  # a field gone, a value refused: its default
                continue
    return method, keep


def restore_form(form: dict | None) -> list:
    """On page load: the method, the field values and the objective this browser had (``saved_form``), over the
    defaults. Outputs: ``[method, note, *method groups, *every field, objective]``; nothing changes when nothing
    was kept."""
    if not isinstance(form, dict) or "method" not in form:
        return [gr.skip()] * (3 + len(methods.names()) + len(SPECS))
    method, settings = saved_form(form)
    shows = [gr.Group(visible=name == method) for name in methods.names()]
    return [method, _note(methods.get(method)), *shows, *form_values(method, settings),
            settings.get("objective", AUTO)]


def cost(model_id, dataset_id, method, *values) -> str:
    """Trainable / total parameters and the estimated peak memory for the form as it stands (no torch)."""
    if model_id is None or not method:
        return "Pick a base model to see what this run trains and how much memory it needs."
    try:
        spec = build_train_spec(model_id=int(model_id), dataset_id=int(dataset_id or 0), method=method,
                                settings=_collect(method, values), objective=objective_of(values))
        with session_scope() as db:
            model = find_model(db, model_id)
            config, gpus = model_config(model), worker_gpus(db)
            path, stored = model.path, model.config
        # module names and layer counts as Start checks them: a typo in target_modules is said here, not
        # estimated as "0 parameters train"
        check_against_model(spec, path, stored)
        est = jobcost.job_estimate(config, spec.to_json(), gpus)  # its task: the objective's (from the data set)
    except ValueError as e:  # a setting out of range, an unreadable config: say so where the cost would be
        return f"Cannot estimate yet: {for_form(str(e))}"
    parts = " · ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in est["parts"].items())
    return f"{jobcost.describe_cost(est, est)}  \n<small>GB per part: {parts}</small>"


@friendly
def start(model_id, dataset_id, method, parent_id, after, nonce, *values):
    """Validate everything, queue the job (behind job ``after`` when one is picked, as ``studio train
    --after`` does), and switch to the Jobs tab to watch it."""
    if model_id is None:
        raise gr.Error("Pick a base model (import one with `studio models import`).")
    if dataset_id is None:
        raise gr.Error("Pick a data set (register one on the Datasets tab).")
    settings = _collect(method, values)
    try:
        spec = build_train_spec(model_id=int(model_id), dataset_id=int(dataset_id), method=method,
                                settings=settings, parent_version_id=int(parent_id) if parent_id else None,
                                objective=objective_of(values))
        job, _ = operations.submit_train(spec, idempotency_key=nonce,  # a double click submits the same nonce
                                       after=int(after) if after else None)
    except SpecError as e:
        raise gr.Error(for_form(str(e)), print_exception=False) from None
    gr.Info(f"Job {job.id} queued" + (f" to start after job {int(after)}" if after else ""))
    if (job.config or {}).get("lineage_note"):  # continuing a version: what it means for lineage and merge
        gr.Info(job.config["lineage_note"])
    if routing.is_waiting(job.message):  # no alive worker's GPUs can hold it: say so plainly
        gr.Warning(f"No worker can run job {job.id} yet: it {job.message}")
    for problem in operations.tracker_problems():  # queued anyway: it trains without that tracker
        gr.Warning(f"Job {job.id}: {problem}.")
    return job.id, gr.Tabs(selected="jobs"), uuid.uuid4().hex


def _field(owner: str, key: str, knob: Knob):
    prefix = "t" if owner == "training" else f"p-{owner}"
    help_ = source_info(owner, key, knob, owner if owner != "training" else "lora")
    return component_for(key, knob.type, knob.default, help_, choices=knob.choices, elem_id=f"{prefix}-{key}")


def _grid(fields: list[tuple[str, str, Knob]], inputs: dict) -> None:
    """Fields in rows of PER_ROW, each with room for its help text."""
    for i in range(0, len(fields), PER_ROW):
        with gr.Row():
            for owner, key, knob in fields[i:i + PER_ROW]:
                inputs[(owner, key)] = _field(owner, key, knob)


def _method_groups(inputs: dict, selected: str | None, names: list[str] | None = None) -> dict:
    """One group of fields per method (or per objective, ``names``), the ``selected`` one shown."""
    groups = {}
    for name in names or methods.names():
        fields = [s for s in SPECS if s[0] == name]
        with gr.Group(visible=name == selected, elem_classes=["form-section"]) as groups[name]:
            gr.Markdown(f"#### {name} parameters" if fields else f"#### {name} has no parameters of its own")
            _grid(fields[:METHOD_MAIN], inputs)
            if fields[METHOD_MAIN:]:
                with gr.Accordion(f"More {name} options", open=False):
                    _grid(fields[METHOD_MAIN:], inputs)
    return groups


def _training_sections(inputs: dict) -> None:
    knobs = {k: s for s in SPECS if s[0] == "training" for k in [s[1]]}
    placed = {k for _, main, more in LAYOUT for k in main + more}
    for title, main, _ in LAYOUT:
        with gr.Group(elem_classes=["form-section"]):
            gr.Markdown(f"#### {title}")
            _grid([knobs[k] for k in main if k in knobs], inputs)
    with gr.Accordion("Advanced training settings", open=False, elem_id="train-advanced"):
        for title, _, more in LAYOUT:
            gr.Markdown(f"#### {title}")
            _grid([knobs[k] for k in more if k in knobs], inputs)
        others = [s for k, s in knobs.items() if k not in placed]
        if others:
            gr.Markdown("#### Other")
            _grid(others, inputs)


def render(shell: Shell) -> None:
    nonce = gr.State(lambda: uuid.uuid4().hex)
    with gr.Row():
        model = gr.Dropdown(label="Base model", elem_id="train-model")
        dataset = gr.Dropdown(label="Data set", elem_id="train-dataset")
        method = gr.Dropdown(methods.names(), value=DEFAULT_METHOD, label="Method", elem_id="train-method")
        parent = gr.Dropdown(label="Continue from version", elem_id="train-parent")
    note = gr.Markdown(_note(methods.get(DEFAULT_METHOD)))
    with gr.Row():
        objective = gr.Dropdown([AUTO, *objectives.names()], value=AUTO, label="Objective", elem_id="train-objective",
                                info="What the weights learn from; follows the data set's format until you pick one",
                                scale=1)
        objective_note = gr.Markdown(_objective_note(None), elem_id="train-objective-note")
    filled = gr.Markdown(elem_id="train-filled")  # "Filled from the advice for data set #1 ..."
    cost_line = gr.Markdown(elem_id="train-cost", elem_classes=["train-cost"])
    inputs: dict = {}
    groups = _method_groups(inputs, DEFAULT_METHOD)
    aims = _method_groups(inputs, None, objectives.names())  # the objective's own settings (beta, loss type...)
    _training_sections(inputs)
    with gr.Row(equal_height=True):
        after = gr.Dropdown([("now", None)], value=None, label="Start after", elem_id="train-after", scale=1,
                            info="now, or once this queued or running job has finished")
        start_btn = gr.Button("Start training", variant="primary", elem_id="start-training", scale=3)
    ordered = [inputs[(o, k)] for o, k, _ in SPECS]
    lr = inputs[("training", "learning_rate")]
    # .input, not .change: a method set by the Advisor must keep the Advisor's learning rate
    method.input(method_defaults, [method, objective], [*groups.values(), lr, note])
    objective.change(objective_shows, objective, [*aims.values(), objective_note], show_progress="hidden")
    objective.input(objective_defaults, [objective, method], lr, show_progress="hidden")
    dataset.input(follow_dataset, [dataset, objective, method], [objective, lr], show_progress="hidden")
    shell.note_tab(start_btn.click(start, [model, dataset, method, parent, after, nonce, *ordered, objective],
                                   [shell.job_id, shell.tabs, nonce]), "jobs")
    gr.on([model.change, dataset.change, method.change, objective.change, *(c.change for c in ordered)], cost,
          [model, dataset, method, *ordered, objective], cost_line, trigger_mode="always_last",
          show_progress="hidden")
    # once the person picks another model, data set or method, the form is no longer the advice's
    gr.on([model.input, dataset.input, method.input], lambda: "", None, filled, show_progress="hidden")
    shell.receivers["train"] = (fill_from_advice, [model, dataset, method, note, *groups.values(), *ordered, objective,
                                                   filled, parent])
    picks, kept = [model, dataset, parent, after], []
    if shell.train_saved is not None:  # this browser keeps its form across reloads: every change, the Advisor's too
        kept = [shell.train_saved]
        gr.on([model.change, dataset.change, method.change, objective.change, *(c.change for c in ordered)],
              remember_form, [model, dataset, method, *ordered, objective], kept[0], trigger_mode="always_last",
              show_progress="hidden")
        shell.on_load.append((restore_form, kept, [method, note, *groups.values(), *ordered, objective]))
    shell.on_select["train"] = (refresh_choices, [*picks, *kept], picks)
