"""The Advisor tab's handlers, called directly: pre-filling from the studio, advising, laying the advice
out (summary, tree, branches, memory table, settings) and handing the settings to the Train form."""
import gradio as gr
import pytest

from studio.methods import REGISTRY as METHODS  # the method specs, by name
from studio.tabs import advisor as tab
from studio.tabs import train
from tests.studio import test_advise_cli as cli_tests

studio = cli_tests.studio  # the same fixture: a studio with models, a data set and no workers
add_worker = cli_tests.add_worker

ANSWERS = dict(task="instruction", complexity=0.5, quality="medium", deploy="server", latency_ok=True, seq_len=None,
               batch_size=None)


def run(model=None, params_b=None, dataset=None, examples=None, p95=None, gpus="", cpu_only=False, ram=None,
        **answers):
    a = {**ANSWERS, **answers}
    return tab.run(model, params_b, dataset, examples, p95, gpus, cpu_only, ram, a["task"], a["complexity"],
                   a["quality"], a["deploy"], a["latency_ok"], a["seq_len"], a["batch_size"])


@pytest.mark.parametrize("text,gpus", [("24", [24.0]), ("24, 80", [24.0, 80.0]), ("2x24", [24.0, 24.0]),
                                       ("16 GB; 2 x 40", [16.0, 40.0, 40.0]), ("", [])])
def test_parse_gpus(text, gpus):
    assert tab.parse_gpus(text) == gpus


@pytest.mark.parametrize("text", ["lots", "0", "0x24"])
def test_parse_gpus_refuses_nonsense(text):
    with pytest.raises(gr.Error):
        tab.parse_gpus(text)


def test_open_prefills_models_data_and_worker_gpus(studio):
    model, data, gpus, cpu = tab.on_open(None, None, "")
    assert model.value == studio["tiny-llama"] and data.value == studio["dataset"]
    assert gpus == "" and cpu is True  # no worker with a GPU: CPU
    add_worker([24.0, 80.0])
    model, data, gpus, cpu = tab.on_open(studio["smollm2"], None, "")
    assert model.value == studio["smollm2"] and gpus == "24, 80" and cpu is False
    assert tab.on_open(None, None, "40")[2] == gr.skip()  # a machine typed in is kept, not overwritten


def test_model_and_dataset_facts(studio):
    note = tab.describe_model(studio["smollm2"])
    assert "30 layers" in note and "135M parameters" in note and "tied" in note
    examples, p95, how = tab.fill_from_dataset(studio["dataset"], studio["tiny-llama"])
    assert examples == 40 and 8 < p95 < 64 and "tiny-llama's tokenizer" in how


def test_run_lays_out_the_whole_advice(studio):
    summary, tree, path, memory, hyper, kept, use = run(studio["smollm2"], gpus="8", deploy="edge",
                                                        dataset=studio["dataset"], examples=40, p95=30)
    assert kept["method"] == "lora" and use.interactive is True
    assert "Recommended: **lora**" in summary and "runner-up" in summary and "000 §6.1.2" in summary
    assert tree.startswith("```mermaid") and "class leaf_lora chosen" in tree
    # every branch: question, answer, the numbers, rule, article
    assert list(path.columns) == ["#", "question", "answer", "the numbers", "rule", "article"]
    assert path.iloc[-1]["answer"] == "lora" and (path["rule"] != "").all()
    assert "deploy to edge" in set(path["the numbers"])
    # a memory row for every method, split into parts, with where it fits and what makes it fit
    assert sorted(memory["method"]) == sorted(METHODS)
    lora = memory.set_index("method").loc["lora"]
    parts = ["weights GB", "trainable state GB", "activations GB", "logits/loss GB", "overhead GB"]
    assert float(lora["total GB"]) == pytest.approx(sum(float(lora[p]) for p in parts), abs=0.02)
    assert lora["fits"].startswith("yes: GPU 0 (8 GB)")
    full = memory.set_index("method").loc["full"]
    assert full["fits"].startswith("no") or full["fits"].startswith("yes")
    assert dict(hyper.values)["max_seq_length"] == "64" and dict(hyper.values)["r"] == "32"


def test_nothing_fits_disables_use(studio):
    summary, *_, kept, use = run(params_b=70, gpus="4")
    assert kept["method"] is None and use.interactive is False and "Nothing fits" in summary
    with pytest.raises(gr.Error, match="Nothing fits"):
        tab.use_settings(kept)
    with pytest.raises(gr.Error, match="Ask for advice first"):
        tab.use_settings(None)


def test_cpu_only_and_bad_answers(studio):
    *_, kept, _ = run(studio["smollm2"], cpu_only=True, ram=32, task="generation")
    assert kept["method"] == "prompt_tuning" and kept["model"]["hardware"] == "CPU only, 32 GB RAM"
    with pytest.raises(gr.Error, match="give a model"):
        run(gpus="24")


def test_use_these_settings_fills_the_train_form(studio):
    *_, kept, _ = run(studio["tiny-llama"], gpus="24", dataset=studio["dataset"], examples=40, p95=30, task="style")
    handoff = tab.use_settings(kept)
    assert handoff["method"] == kept["method"] == "lora" and handoff["dataset_id"] == studio["dataset"]
    out = train.fill_from_advice(handoff)
    model, dataset, method, _note = out[:4]
    assert (model.value, dataset.value, method) == (studio["tiny-llama"], studio["dataset"], "lora")
    assert studio["dataset"] in [v for _, v in dataset.choices]  # offered, even if registered after page load
    groups = out[4:4 + len(train.methods.names())]
    updates, filled, parent = out[4 + len(train.methods.names()):-2], out[-2], out[-1]
    assert kept["objective"]["name"] == "sft" and updates[-1]["value"] == "sft"  # instruction data: SFT first
    assert parent.value is None  # nothing to continue from
    values = [u["value"] if isinstance(u, dict) and "value" in u else u for u in updates]
    infos = {(o, k): u["info"] for (o, k, _), u in zip(train.SPECS, updates) if isinstance(u, dict) and "info" in u}
    # each field's tooltip says where its value came from
    assert infos[("lora", "r")].endswith("Value 8: suggested by the advisor for this model, data set and hardware.")
    assert infos[("training", "max_steps")].endswith("Default -1: the studio's.")
    assert infos[("lora", "use_rslora")].endswith("Default False: lora's spec.")
    assert f"Filled from the advice for data set #{studio['dataset']} on tiny-llama" in filled
    assert [g.visible for g in groups] == [n == "lora" for n in train.methods.names()]
    form = {(o, k): v for (o, k, _), v in zip(train.SPECS, values)}
    hp = kept["hyperparameters"]
    assert form[("lora", "r")] == hp["r"] == 8  # 001: narrow adaptation (style) -> r <= 8
    for key, value in hp.items():  # every suggested value lands in its field
        owner = "training" if ("training", key) in form else "lora"
        assert form[(owner, key)] == value, key
    assert form[("training", "max_steps")] == -1  # not suggested: back to the default (train by epochs)
    # the filled form is one the studio accepts as a job
    spec = train.build_train_spec(model_id=model.value, dataset_id=dataset.value, method=method,
                                  settings=train._collect(method, values))
    assert spec.method_params["r"] == 8 and spec.training["learning_rate"] == hp["learning_rate"]


def test_use_these_settings_fills_and_opens_the_train_tab_in_one_update(studio):
    # The tab switch and the fields arrive together, so the Train tab's refresh on opening (which keeps
    # what is picked) cannot put back the data set it showed before: it once showed the newest, #2.
    from studio.tab_state import Shell

    with gr.Blocks():
        with gr.Tabs() as tabs:
            shell = Shell(tabs=tabs, job_id=gr.State(None))
            with gr.Tab("Advisor", id="advisor"):
                tab.render(shell)
            with gr.Tab("Train", id="train"):
                train.render(shell)
            shell.wire_pending()
        use = next(d for d in gr.context.Context.root_block.fns.values() if d.name == "handler")
    outputs = [o._id for o in use.outputs]
    assert outputs[-1] == tabs._id and len(outputs) == len(shell.receivers["train"][1]) + 1
    *_, kept, _ = run(studio["tiny-llama"], gpus="24", dataset=studio["dataset"], examples=40, p95=30)
    *fields, switch = use.fn(kept)
    assert switch.selected == "train" and fields[1].value == studio["dataset"]


def test_a_size_beside_a_model_is_refused_in_the_form(studio):
    with pytest.raises(gr.Error, match=r"give a model or a size, not both: smollm2 .* the size says 7 B"):
        run(studio["smollm2"], params_b=7, gpus="24")


def test_preference_data_and_an_sft_version_give_dpo_from_it_and_the_train_form_gets_all_three(studio, tmp_path):
    """The objective is advised from the data (pairs -> DPO) and starts from the newest SFT version of the base;
    the Train form receives the objective and that version as its start, with the objective's smaller step."""
    import json

    from models_db import Job, ModelVersion, session_scope
    from studio import operations

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{i} + {i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)})
                             + "\n" for i in range(20)))
    prefs = operations.add_dataset(pairs)[0].id
    with session_scope() as db:
        job = Job(kind="train", state="succeeded", base_model_id=studio["tiny-llama"], config={})
        db.add(job)
        db.flush()
        v = ModelVersion(name="sft-1", base_model_id=studio["tiny-llama"], dataset_id=studio["dataset"], job_id=job.id,
                         method="lora", artifacts={}, metrics={}, config={"objective": "sft", "task": "causal_lm"})
        db.add(v)
        db.flush()
        sft_id = v.id
    summary, tree, path, *_, kept, use = run(studio["tiny-llama"], gpus="24", dataset=prefs)
    assert kept["objective"] == {"name": "dpo", "params": {}, "from_version": sft_id, "note": ""}
    assert f"objective dpo from version #{sft_id}" in summary and f"objective: dpo from version #{sft_id}" in tree
    assert list(path["answer"][:2]) == ["preference", "yes"]
    handoff = tab.use_settings(kept)
    out = train.fill_from_advice(handoff)
    updates, filled, parent = out[4 + len(train.methods.names()):-2], out[-2], out[-1]
    assert updates[-1]["value"] == "dpo" and parent.value == sft_id
    assert f"objective **dpo** from version #{sft_id}" in filled
    lr = next(u for (o, k, _), u in zip(train.SPECS, updates) if (o, k) == ("training", "learning_rate"))
    assert lr["value"] == kept["hyperparameters"]["learning_rate"] < 1e-4  # a tenth of LoRA's SFT step


def test_a_benchmark_trains_nothing_and_use_says_so(studio, tmp_path):
    import json

    from studio import operations

    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": f"{i}+1?", "choices": [str(i), str(i + 1)], "answer": 1}) + "\n"
                          for i in range(12)))
    bench = operations.add_dataset(mc)[0].id
    *_, kept, use = run(studio["tiny-llama"], gpus="24", dataset=bench)
    assert kept["objective"]["name"] is None
    with pytest.raises(gr.Error, match=f"Data set #{bench} trains nothing: Pin it as a benchmark"):
        tab.use_settings(kept)


def test_the_decision_tree_is_drawn_whole_without_a_scroll_box_of_its_own(studio):
    # The tree sat in a 760 px scroll box: its conclusion (the leaf at the bottom) was hidden inside it
    from studio.tab_state import Shell

    with gr.Blocks() as demo:
        with gr.Tabs() as tabs, gr.Tab("Advisor"):
            tab.render(Shell(tabs=tabs, job_id=gr.State(None)))
    tree = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "adv-tree")
    assert tree.max_height is None and tree.height is None
    out = run(studio["tiny-llama"], gpus="24", dataset=studio["dataset"], examples=40, p95=30)
    drawing, kept = out[1], out[-2]
    assert f"leaf_{kept['method']}" in drawing and "chosen" in drawing  # the conclusion is in the drawing, marked
