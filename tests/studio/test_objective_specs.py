"""The objective specs (studio/objectives): torch-free, one per objective, parsed by the methods' own parser; the
registry resolves the older ``task`` names, and refuses with the reason the combinations that cannot train."""
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from studio import methods, objectives
from studio.jobspec import SpecError, build_train_spec
from studio.objectives import ObjectiveError

ROOT = Path(__file__).resolve().parents[2]
BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 400, "max_position_embeddings": 256, "type_vocab_size": 2}
LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400}


def test_importing_the_objectives_pulls_in_no_torch_and_no_worker():
    code = ("import sys, studio.objectives as o; o.describe_all(); o.parse_params('dpo', {'beta': '0.2'}); "
            "bad = [k for k in ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes', 'accelerate', 'worker') "
            "if k in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_the_registry_names_the_objectives_of_the_design_in_order():
    assert objectives.names() == ["sft", "classification", "dpo", "kto", "orpo", "simpo", "reward", "grpo",
                                  "rloo"]
    # a format's default objective: the first that takes it
    assert {f: objectives.default_for(f).name for f in ("instruction", "chat", "text", "classification",
                                                         "preference", "feedback", "qa")} == {
        "instruction": "sft", "chat": "sft", "text": "sft", "classification": "classification",
        "preference": "dpo", "feedback": "kto", "qa": "grpo"}


@pytest.mark.parametrize("name", objectives.names())
def test_every_field_has_help_and_a_range_or_choices(name):
    spec = objectives.get(name)
    for f in dataclasses.fields(spec.params):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help (the form's tooltip)"
        if f.type in ("float", "int", float, int):
            assert f.metadata.get("min") is not None and f.metadata.get("max") is not None, f"{name}.{f.name}"
        for choice in f.metadata.get("choices") or ():
            assert choice == choice.lower()
    described = objectives.describe(spec)
    assert described["name"] == name and described["task"] in methods.TASKS and described["formats"]


def test_the_older_task_names_an_objective_and_an_unknown_one_lists_the_known():
    assert objectives.resolve(None, "causal_lm") == "sft" and objectives.resolve(None, "seq_cls") == "classification"
    assert objectives.resolve("dpo", "causal_lm") == "dpo" and objectives.resolve(None, None) is None
    with pytest.raises(ObjectiveError, match="objective dpo trains a causal_lm model, not seq_cls"):
        objectives.resolve("dpo", "seq_cls")
    with pytest.raises(ObjectiveError, match=r"unknown objective 'ppo'. Known objectives: sft, classification.*grpo"):
        objectives.get("ppo")


def test_params_parse_with_the_methods_converter_and_say_what_to_set():
    assert objectives.parse_params("dpo", {"beta": "0.25", "loss_type": "IPO", "precompute_reference": "yes"}) == \
        objectives.get("dpo").params(beta=0.25, loss_type="ipo", precompute_reference=True)
    with pytest.raises(ObjectiveError, match=r"dpo: loss_type must be one of sigmoid, ipo, robust.*Set --set "
                                             "loss_type=sigmoid"):
        objectives.parse_params("dpo", {"loss_type": "dpo"})
    with pytest.raises(ObjectiveError, match=r"kto: desirable_weight must be >= 0.01 \(got 0.0\)"):
        objectives.parse_params("kto", {"desirable_weight": "0"})
    with pytest.raises(ObjectiveError, match=r"simpo: unknown parameter 'loss_type'. Valid keys: beta, gamma"):
        objectives.parse_params("simpo", {"loss_type": "simpo"})


def test_combinations_that_cannot_train_are_refused_with_the_reason():
    with pytest.raises(ObjectiveError, match=r"dpo compares the policy with a frozen reference.*only one adapter. Use "
                                             "lora or dora"):
        objectives.check_method(objectives.get("dpo"), methods.get("adalora"))
    objectives.check_method(objectives.get("orpo"), methods.get("adalora"))  # no reference: fine
    with pytest.raises(ObjectiveError, match=r"prompt_tuning prepends virtual tokens.*Use prefix_tuning"):
        objectives.check_method(objectives.get("simpo"), methods.get("prompt_tuning"))
    objectives.check_method(objectives.get("dpo"), methods.get("prompt_tuning"))  # TRL's DPOTrainer drops them
    with pytest.raises(ObjectiveError, match=r"tiny-bert is an encoder \(bert\): it scores text but cannot generate "
                                             r"it, and dpo trains a model that writes answers.*train classification, "
                                             "reward on this one"):
        objectives.check_model(objectives.get("dpo"), "tiny-bert", BERT)
    objectives.check_model(objectives.get("reward"), "tiny-bert", BERT)  # a scorer: an encoder can be one
    objectives.check_model(objectives.get("dpo"), "tiny-llama", LLAMA)


def test_data_of_another_format_is_refused_naming_both_formats_and_what_fits():
    with pytest.raises(ObjectiveError, match=r"dataset 4 is instruction data; DPO \(objective dpo\) takes preference "
                                             r"data \(prompt, chosen, rejected.*Train a causal LM on it with objective "
                                             "sft"):
        objectives.check_data(objectives.get("dpo"), 4, "instruction", {}, 10)
    with pytest.raises(ObjectiveError, match=r"dataset 5 has no undesirable answers \(label false\) in its 3 rows"):
        objectives.check_data(objectives.get("kto"), 5, "feedback", {"feedback": {"desirable": 3, "undesirable": 0}}, 3)
    objectives.check_data(objectives.get("kto"), 6, "preference", {}, 3)  # pairs unpair into both kinds


def test_training_defaults_layer_the_objective_over_the_method():
    lora, full = methods.get("lora"), methods.get("full")
    assert objectives.training_defaults(objectives.get("dpo"), lora)["learning_rate"] == pytest.approx(2e-5)
    assert objectives.training_defaults(objectives.get("dpo"), full)["learning_rate"] == pytest.approx(2e-6)
    assert objectives.training_defaults(objectives.get("sft"), lora) == lora.default_training
    assert objectives.training_defaults(None, lora) == lora.default_training


def test_the_train_spec_carries_the_objective_and_its_settings():
    spec = build_train_spec(model_id=1, dataset_id=0, method="lora", objective="dpo",
                            settings={"beta": "0.3", "loss_type": "robust", "label_smoothing": "0.1", "r": "8"})
    assert (spec.objective, spec.task, spec.packing) == ("dpo", "causal_lm", False)  # pairs are not packed
    assert spec.objective_params == {"beta": 0.3, "loss_type": "robust", "label_smoothing": 0.1,
                                     "precompute_reference": False}
    assert spec.method_params["r"] == 8 and spec.training["learning_rate"] == pytest.approx(2e-5)
    assert build_train_spec(model_id=1, dataset_id=0, method="lora", task="seq_cls", settings={}).objective == \
        "classification"
    with pytest.raises(SpecError, match=r"unknown setting 'beta'.*sft keys: \(none\)"):
        build_train_spec(model_id=1, dataset_id=0, method="lora", objective="sft", settings={"beta": "0.1"})
    with pytest.raises(SpecError, match=r"dpo compares the policy with a frozen reference"):
        build_train_spec(model_id=1, dataset_id=0, method="adalora", objective="dpo", settings={})
    with pytest.raises(SpecError, match="unknown objective 'dpp'"):
        build_train_spec(model_id=1, dataset_id=0, method="lora", objective="dpp", settings={})


def test_no_objective_name_is_tested_outside_the_objective_folder():
    """Recipes and the studio read the objectives' flags; the worker's recipe table is the one place that
    maps a name to its implementation (the registry pattern), as worker/methods does."""
    names = "|".join(objectives.names())
    quoted = rf"""["']({names})["']"""
    checks = re.compile(rf"(==|!=)\s*{quoted}|{quoted}\s*(==|!=)|\bin\s*[(\[{{][^)\]}}]*{quoted}")
    files = [*sorted((ROOT / "worker" / "recipes").glob("*.py")), ROOT / "studio" / "operations.py",
             ROOT / "studio" / "jobspec.py", ROOT / "studio" / "tabs" / "train.py"]
    found = {p.name: [line.strip() for line in p.read_text().splitlines() if checks.search(line)] for p in files}
    assert not any(found.values()), f"name checks; give the spec a flag instead: {found}"
