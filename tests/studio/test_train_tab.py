"""Before launch: trainable parameters from config.json alone match peft on the meta device for every
registered method; the Train tab shows them with the estimated peak memory; the form is laid out in
groups generated from the registry; the estimate is kept with the job and set beside the measured peak.

Tolerance of the count test: the torch-free count equals the meta-device count exactly for every case
below (all registry defaults and the options that change the count). The 0.5 % allowance is for what
the torch-free side reads from names alone and is documented as approximate in
studio/methods/_costs.py: custom freeze part lists (sized by the words in them), rank_pattern regexes
matched against "layers.{i}.{module}" rather than the full module path, LayerNorm biases under
bias=all, and modules_to_save names it does not know (counted as 0). None of those is hit here.
"""
import json

import gradio as gr
import pytest

from models_db import Job, Worker, session_scope
from studio import cli, operations
from studio.advisor.jobcost import count_trainable, estimate_vs_measured
from studio.jobspec import TrainSpec, build_train_spec
from studio.tab_state import Shell
from studio.tabs import job_views, train
from tests.studio import test_advise_cli as cli_tests
from worker import methods

studio = cli_tests.studio  # the same fixture: a studio with models, a data set and no workers
TOLERANCE = 0.005
VARIANTS = [
    ("lora", {"target_modules": "attention_mlp", "r": 8}), ("lora", {"target_modules": "q_proj,v_proj"}),
    ("lora", {"target_modules": "all_linear", "rank_pattern": "q_proj=4,down_proj=2"}),
    ("lora", {"layers_to_transform": "1"}), ("lora", {"modules_to_save": "lm_head"}),
    ("dora", {"target_modules": "attention_mlp"}), ("qlora", {"r": 4}),
    ("adalora", {"init_r": 6, "target_r": 4, "target_modules": "attention"}),
    ("freeze", {"num_trainable_layers": 1}), ("freeze", {"num_trainable_layers": 1, "trainable_modules": "attention"}),
    ("freeze", {"trainable_modules": "mlp", "train_head_side": False}),
    ("adapter", {"placement": "attn", "bottleneck_size": 4}), ("adapter", {"reduction": 4}),
    ("prompt_tuning", {"num_virtual_tokens": 7}), ("prefix_tuning", {"prefix_projection": True}),
    ("p_tuning", {"encoder_type": "lstm"}), ("p_tuning", {"encoder_hidden_size": 8}),
    ("ia3", {"target_modules": "attention_mlp"}),
    ("oft", {"oft_block_size": 16, "target_modules": "attention"}), ("oft", {"oft_block_size": 24}),  # 24: peft's 16
    ("oft", {"block_share": True, "bias": "all"}), ("oft", {"layers_to_transform": "1", "modules_to_save": "lm_head"}),
]


@pytest.fixture(scope="module")
def tiny_config(tiny_llama_dir):
    return json.loads((tiny_llama_dir / "config.json").read_text())


@pytest.mark.parametrize("method,raw", [(m, {}) for m in methods.names()] + VARIANTS,
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_torch_free_count_matches_the_meta_device(tiny_config, method, raw):
    from worker.methods.counting import estimate_trainable

    meta = estimate_trainable(tiny_config, method, methods.parse_params(method, raw), "causal_lm")
    ours = count_trainable(tiny_config, method, raw)
    assert ours["trainable"] == pytest.approx(meta["trainable"], rel=TOLERANCE)
    assert ours["total"] == pytest.approx(meta["total"], rel=TOLERANCE)
    assert ours["ratio"] == pytest.approx(meta["ratio"], rel=2 * TOLERANCE)


def defaults(**changes) -> list:
    """The form's values as rendered (every knob's default), with ``changes`` by key."""
    return [changes.get(key, knob.default) for _, key, knob in train.SPECS]


def test_cost_line_follows_model_method_and_params(studio):
    line = train.cost(studio["tiny-llama"], studio["dataset"], "lora", *defaults())
    assert "**32.8k** of 158k parameters train (**20.7 %**)" in line  # every linear layer at r=16 (the default)
    assert "estimated peak memory" in line and "training on the CPU" in line
    wider = train.cost(studio["tiny-llama"], None, "lora", *defaults(target_modules="attention_mlp", r=8))
    assert "**16.4k** of 142k" in wider
    assert "**125k** of 125k parameters train (**100 %**)" in train.cost(studio["tiny-llama"], None, "full",
                                                                             *defaults())
    smol = train.cost(studio["smollm2"], None, "freeze", *defaults(num_trainable_layers=30, train_tied_head=True))
    assert "**135M** of 135M" in smol  # every layer and the tied head (= the embeddings): everything
    blocks = train.cost(studio["smollm2"], None, "freeze", *defaults(num_trainable_layers=30))
    assert "**106M** of 135M" in blocks  # the tied head (28M embeddings) stays frozen by default
    assert "Pick a base model" in train.cost(None, None, "lora", *defaults())
    assert train.cost(studio["tiny-llama"], None, "lora", *defaults(r=0)).startswith("Cannot estimate yet: lora: r")


def test_cost_line_says_where_it_fits(studio):
    with session_scope() as db:
        db.add(Worker(id="w", host="h", gpus=[{"index": 0, "name": "T4", "memory_gb": 16.0}]))
    assert "fits GPU 0 (16 GB)" in train.cost(studio["tiny-llama"], None, "lora", *defaults())
    line = train.cost(studio["smollm2"], None, "full", *defaults(per_device_train_batch_size=64,
                                                                 max_seq_length=8192))
    assert "does not fit the largest GPU (16 GB)" in line


def build_tab():
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            shell = Shell(tabs=tabs, job_id=gr.State(None))
            with gr.Tab("Train"):
                train.render(shell)
    return demo, shell


def inputs_in(block) -> list:
    """The input components inside a layout block (Gradio wraps them in Form blocks)."""
    out = []
    for child in getattr(block, "children", []):
        out += inputs_in(child) if isinstance(child, gr.blocks.BlockContext) else [child]
    return out


def test_form_groups_every_field_once_in_short_rows():
    demo, shell = build_tab()
    blocks = list(demo.blocks.values())
    ids = [b.elem_id for b in blocks if b.elem_id]
    for owner, key, _ in train.SPECS:
        elem = f"t-{key}" if owner == "training" else f"p-{owner}-{key}"
        assert ids.count(elem) == 1, elem
    rows = [inputs_in(b) for b in blocks if isinstance(b, gr.Row)]
    assert max(len(r) for r in rows) <= 4  # the top row: model, data set, method, parent
    fields = [r for r in rows if all((c.elem_id or "").startswith(("t-", "p-")) for c in r)]
    assert len(fields) >= 10 and max(len(r) for r in fields) <= train.PER_ROW
    advanced = next(b for b in blocks if b.elem_id == "train-advanced")
    inside = {c.elem_id for c in inputs_in(advanced)}
    assert {"t-warmup_ratio", "t-optim", "t-seed"} <= inside and "t-learning_rate" not in inside
    fill, outputs = shell.receivers["train"]  # the Advisor's settings arrive through here, with the tab switch
    assert fill is train.fill_from_advice and outputs[:3][2].elem_id == "train-method"
    assert outputs[-2].elem_id == "train-filled" and outputs[-1].elem_id == "train-parent"


def test_method_change_shows_its_group_and_defaults():
    out = train.method_defaults("full")
    shows, lr, note = out[:-2], out[-2], out[-1]
    assert [g.visible for g in shows] == [n == "full" for n in methods.names()]
    assert lr.value == 2e-5 and "every weight" in note.lower()


def test_submit_keeps_the_estimate_and_the_job_shows_it_beside_the_measured_peak(studio, capsys):
    spec = build_train_spec(model_id=studio["tiny-llama"], dataset_id=studio["dataset"], method="lora",
                            settings={"max_steps": 2})
    job, _ = operations.submit_train(spec)
    estimate = job.config["estimate"]
    assert estimate["trainable"] == 32768 and estimate["total"] == 158016 and estimate["device"] == "cpu"
    assert TrainSpec(**job.config).estimate == estimate  # the worker rebuilds its spec from this config
    assert estimate["total_gb"] > estimate["live_gb"] > 0
    assert operations.job_json(job)["memory"]["measured_gb"] is None
    assert "est. " in job_views.status_html(job, [])

    measured = {"metrics": {"peak_memory_gb": 2 * estimate["total_gb"], "peak_memory_kind": "cpu_rss"}}
    with session_scope() as db:
        db.get(Job, job.id).result = measured
    vs = estimate_vs_measured(job.config, measured)
    assert vs["compared"] == "total_gb" and vs["error_pct"] == pytest.approx(-50, abs=0.1)
    cli.main(["jobs", "show", str(job.id), "--json"])
    shown = json.loads(capsys.readouterr().out)["memory"]
    assert shown["error_pct"] == pytest.approx(-50, abs=0.1) and shown["estimated_gb"] == estimate["total_gb"]
    with session_scope() as db:
        assert "(-50 %)" in job_views.status_html(db.get(Job, job.id), [])
    cuda = estimate_vs_measured(job.config, {"metrics": {"peak_memory_gb": estimate["live_gb"],
                                                         "peak_memory_kind": "cuda_allocated"}})
    assert cuda["compared"] == "live_gb" and cuda["error_pct"] == 0  # CUDA measures tensors, not the context


def test_cli_train_prints_the_cost_before_it_waits(studio, capsys):
    cli.main(["train", "--model", "tiny-llama", "--dataset", str(studio["dataset"]), "--method", "ia3"])
    err = capsys.readouterr().err
    assert "ia3: 384 of 126k parameters train" in err and "estimated peak memory" in err


def test_continuing_with_another_method_says_what_it_means_before_it_trains(studio, capsys):
    # `--from-version` of a LoRA version with --method dora queued the job without a word on the lineage or merge
    from models_db import ModelVersion

    with session_scope() as db:
        v = ModelVersion(name="first", base_model_id=studio["tiny-llama"], method="lora",
                         config={"model_id": studio["tiny-llama"], "method": "lora", "method_params": {"r": 8}})
        db.add(v)
        db.flush()
        parent = v.id
    cli.main(["train", "--model", "tiny-llama", "--dataset", str(studio["dataset"]), "--method", "dora",
              "--from-version", str(parent)])
    err = capsys.readouterr().err
    assert f"note: Version {parent} (lora) is merged into the base first, then a new dora adapter" in err
    assert f"base → #{parent} → the new version" in err


def test_a_reload_keeps_the_forms_picks_and_the_tab(studio):
    from studio import app

    saved = train.remember_form(studio["tiny-llama"], studio["dataset"], "lora", *defaults())
    assert saved == {"model": studio["tiny-llama"], "dataset": studio["dataset"], "method": "lora", "training": {},
                     "params": {}}
    model, dataset, *_ = train.refresh_choices(None, None, None, None, saved)  # the page after a reload
    assert (model.value, dataset.value) == (studio["tiny-llama"], studio["dataset"])
    model, _, *_ = train.refresh_choices(studio["smollm2"], None, None, None, saved)  # a pick on the page wins
    assert model.value == studio["smollm2"]
    assert app.restore_tab({"tab": "jobs"}).selected == "jobs" and app.restore_tab({}) is not None

    class Select:  # what Gradio passes when a tab is clicked
        value = "Versions"
    assert app.remember_tab({"train": {}}, Select()) == {"train": {}, "tab": "versions"}


def test_one_converter_for_training_settings_and_method_parameters():
    # `--set bf16=on` was refused while `--set use_rslora=on` was accepted; `seed=1e3` became 1000 while
    # `r=1e3` was refused
    from studio.jobspec import STUDIO, TRAINING, SpecError, coerce

    assert coerce("bf16", TRAINING["bf16"], "on") is True and coerce("packing", STUDIO["packing"], "off") is False
    assert methods.parse_params("lora", {"use_rslora": "on"}).use_rslora is True
    assert coerce("seed", TRAINING["seed"], "1e3") == 1000 and methods.parse_params("lora", {"r": "1e3"}).r == 1000
    for bad in ("maybe", "2.5"):
        with pytest.raises(SpecError):
            coerce("seed" if bad == "2.5" else "bf16", TRAINING["seed" if bad == "2.5" else "bf16"], bad)
        with pytest.raises(methods.MethodError):
            methods.parse_params("lora", {"r" if bad == "2.5" else "use_rslora": bad})


def fields(updates: list) -> dict:
    """restore_form's field values by (owner, key), leaving out the fields it does not touch."""
    return {(o, k): v for (o, k, _), v in zip(train.SPECS, updates) if v != gr.skip()}


def test_a_reload_keeps_the_method_and_its_fields_and_drops_what_no_longer_holds():
    # only the model and the data set came back: the method and every field were back to their defaults
    values = defaults(max_steps=7, learning_rate=2e-4)  # 2e-4 is dora's default: not pinned
    values[[k for o, k, _ in train.SPECS].index("r")] = 8  # lora's r, not dora's: another method's field
    dora_r = next(i for i, (o, k, _) in enumerate(train.SPECS) if (o, k) == ("dora", "r"))
    values[dora_r] = 32
    saved = train.remember_form(1, 2, "dora", *values)
    assert saved == {"model": 1, "dataset": 2, "method": "dora", "training": {"max_steps": 7}, "params": {"r": 32}}
    method, note, *rest = train.restore_form(saved)
    shows, updates = rest[:len(methods.names())], rest[len(methods.names()):]
    assert method == "dora" and "DoRA" in note and [g.visible for g in shows] == [n == "dora" for n in methods.names()]
    got = fields(updates)
    assert got[("dora", "r")] == 32 and got[("training", "max_steps")] == 7 and ("lora", "r") not in got
    assert got[("training", "learning_rate")] == methods.get("dora").default_training.get("learning_rate", 2e-4)

    # what an older studio kept: a value out of range, a field and a method that are gone, garbage
    stale = {"method": "dora", "training": {"max_steps": -5, "warmup_ratio": 0.95, "gone_knob": 1, "seed": "x",
                                            "lr_scheduler_type": "sideways", "per_device_train_batch_size": 16},
             "params": {"r": 0, "lora_dropout": 0.1, "no_such_param": True}}
    method, _, *rest = train.restore_form(stale)
    got = fields(rest[len(methods.names()):])
    assert method == "dora" and got[("training", "per_device_train_batch_size")] == 16
    assert got[("dora", "lora_dropout")] == 0.1
    for owner, key in (("training", "max_steps"), ("training", "warmup_ratio"), ("training", "seed"),
                       ("training", "lr_scheduler_type"), ("dora", "r")):
        assert got[(owner, key)] == next(k.default for o, n, k in train.SPECS if (o, n) == (owner, key)), key
    method, _, *rest = train.restore_form({"method": "sft_v0", "params": {"r": 4}, "training": {"max_steps": 9}})
    got = fields(rest[len(methods.names()):])
    assert method == train.DEFAULT_METHOD and got[("training", "max_steps")] == 9 and got[("lora", "r")] == 16
    for junk in (None, {}, "x", {"model": 1}, {"method": ["lora"], "training": 3}, {"method": "lora", "params": 2}):
        out = train.restore_form(junk)  # nothing kept, or nothing usable: never an error
        assert out[0] in (gr.skip(), train.DEFAULT_METHOD)


def test_the_form_is_restored_on_load_only_and_saved_by_one_writer_on_every_change():
    with gr.Blocks() as demo:
        saved, kept = gr.BrowserState({}), gr.BrowserState({}, storage_key="finetune-studio-train")
        with gr.Tabs() as tabs:
            shell = Shell(tabs=tabs, job_id=gr.State(None), saved=saved, train_saved=kept)
            with gr.Tab("Train"):
                train.render(shell)
    (fn, inputs, _), = shell.on_load  # studio/app.py runs these on page load only: opening the tab keeps the form
    assert fn is train.restore_form and inputs == [kept] and kept in shell.on_select["train"][1]
    # one writer of the form's own key: a write of the open tab (``saved``) cannot undo it, nor it the tab
    writers = [d for d in demo.fns.values() if kept in d.outputs]
    assert [getattr(d.fn, "__name__", "") for d in writers] == ["remember_form"]
    assert saved not in writers[0].outputs
    ids = {demo.blocks[t[0]].elem_id for t in writers[0].targets}
    assert {"train-model", "train-method", "p-dora-r", "t-max_steps"} <= ids  # every field, the method, the model
