"""The Train tab's Objective: a choice that follows the data set's format until the person picks one, and each
objective's own settings generated from its spec like a method's; the handlers take the choice after the fields."""
import json

import gradio as gr
import pytest

from models_db import Job, session_scope
from studio import objectives, operations
from studio.tab_state import Shell
from studio.tabs import train
from tests.studio import test_advise_cli as cli_tests

studio = cli_tests.studio  # the tiny Llama, config-only SmolLM2 and BERT, a 40-row instruction data set


@pytest.fixture
def pairs(studio, tmp_path):
    rows = [{"prompt": f"What is {i} plus 1?", "chosen": f"The answer is {i + 1}.", "rejected": "No idea."}
            for i in range(12)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return operations.add_dataset(path)[0].id


def form(objective: str | None = None, **changes) -> list:
    """The form's values (every field's default, ``changes`` by owner-less key) and the Objective choice last."""
    return [*(changes.get(key, knob.default) for _, key, knob in train.SPECS), objective or train.AUTO]


def test_every_objective_has_its_fields_in_the_form_once():
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            shell = Shell(tabs=tabs, job_id=gr.State(None), saved=gr.BrowserState({}))
            with gr.Tab("Train"):
                train.render(shell)
    ids = [b.elem_id for b in demo.blocks.values() if b.elem_id]
    for name in objectives.names():
        for field in objectives.describe(objectives.get(name))["params"]:
            assert ids.count(f"p-{name}-{field['name']}") == 1, (name, field["name"])
    choice = next(b for b in demo.blocks.values() if b.elem_id == "train-objective")
    assert [c[1] for c in choice.choices] == [train.AUTO, *objectives.names()] and choice.value == train.AUTO
    _, outputs = shell.receivers["train"]  # the Advisor's fill sets the objective its data set implies
    assert outputs[-3] is choice and outputs[-2].elem_id == "train-filled" and outputs[-1].elem_id == "train-parent"


def test_the_objective_follows_the_data_set_until_one_is_picked(studio, pairs):
    objective, lr = train.follow_dataset(pairs, train.AUTO, "lora")
    assert objective["value"] == "dpo" and lr.value == pytest.approx(2e-5)  # LoRA's 2e-4, scaled for DPO
    assert train.follow_dataset(pairs, "orpo", "lora") == [gr.skip(), gr.skip()]  # a choice that takes pairs stays
    assert train.follow_dataset(studio["dataset"], "dpo", "lora")[0]["value"] == "sft"
    shows, note = train.objective_shows("kto")[:-1], train.objective_shows("kto")[-1]
    assert [g.visible for g in shows] == [n == "kto" for n in objectives.names()] and "feedback" in note
    assert train.method_defaults("full", "dpo")[-2].value == pytest.approx(2e-6)


def test_start_queues_the_objective_with_its_settings(studio, pairs):
    job_id, _, _ = train.start(studio["tiny-llama"], pairs, "lora", None, None, "n-dpo",
                               *form("dpo", beta=0.3, loss_type="ipo"))
    with session_scope() as db:
        config = db.get(Job, job_id).config
    assert config["objective"] == "dpo" and config["objective_params"]["beta"] == 0.3
    assert config["objective_params"]["loss_type"] == "ipo" and config["task"] == "causal_lm"
    job_id, _, _ = train.start(studio["tiny-llama"], pairs, "lora", None, None, "n-auto", *form())
    with session_scope() as db:
        assert db.get(Job, job_id).config["objective"] == "dpo"  # auto: the data set's format decides
    with pytest.raises(gr.Error, match=r"is instruction data; DPO \(objective dpo\) takes preference data"):
        train.start(studio["tiny-llama"], studio["dataset"], "lora", None, None, "n-bad", *form("dpo"))
    with pytest.raises(gr.Error, match=r"dpo: beta must be >= 0.001"):
        train.start(studio["tiny-llama"], pairs, "lora", None, None, "n-beta", *form("dpo", beta=0))
    assert "Cannot estimate yet: dpo: beta" in train.cost(studio["tiny-llama"], pairs, "lora", *form("dpo", beta=0))
    assert "parameters train" in train.cost(studio["tiny-llama"], pairs, "lora", *form("dpo"))


def test_a_reload_keeps_the_objective_and_its_settings(studio, pairs):
    values = train.form_values("lora", {"objective": "simpo", "gamma": 0.7})  # as the form shows them
    values = [knob.default if v == gr.skip() else v for (_, _, knob), v in zip(train.SPECS, values)]
    saved = train.remember_form(studio["tiny-llama"], pairs, "lora", *values, "simpo")
    assert saved["objective"] == "simpo" and saved["objective_params"] == {"gamma": 0.7}
    method, _, *rest = train.restore_form(saved)
    values, objective = rest[len(train.methods.names()):-1], rest[-1]
    got = {(o, k): v for (o, k, _), v in zip(train.SPECS, values) if v != gr.skip()}
    assert (method, objective, got[("simpo", "gamma")]) == ("lora", "simpo", 0.7)
    assert got[("training", "learning_rate")] == pytest.approx(1e-5)  # LoRA's, scaled for SimPO
    gone = train.restore_form({**saved, "objective": "grpo_v0"})  # an objective no longer there: the data set's
    assert gone[-1] == train.AUTO
