"""One test per article rule: the articles' worked examples and matrix rows, read as scenarios."""
import itertools

import pytest

from studio import methods
from studio.advisor import TREE, AdvisorInputs, advise
from studio.advisor.plan import usable_bytes
from studio.advisor.rules import PREDICATES
from studio.advisor.tree import Leaf, Node

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "tie_word_embeddings": True, "max_position_embeddings": 8192}
BERT_BASE = {"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "vocab_size": 30522}


def nodes(advice):
    return {s.node: s.answer for s in advice.path}


def assert_fits(advice):
    plan = advice.estimates[advice.method]
    assert plan.fits and plan.fits_on


# ---- article 000 §6.1 -------------------------------------------------------------------------
def test_000_example_1_complex_large_high_quality_goes_full():
    a = advise(AdvisorInputs(params_b=1.0, complexity=0.9, examples=10_000, quality="high", gpu_memory_gb=[40]))
    assert a.method == "full"
    assert nodes(a)["full_000"] == "yes" and nodes(a)["data_002"] == "yes"
    assert a.runner_up == "lora"
    assert_fits(a)


@pytest.mark.parametrize("change", [{"complexity": 0.8}, {"quality": "medium"}, {"gpu_memory_gb": [32]}])
def test_000_full_needs_all_three_conditions(change):
    base = dict(params_b=1.0, complexity=0.9, examples=10_000, quality="high", gpu_memory_gb=[40])
    a = advise(AdvisorInputs(**{**base, **change}))
    assert a.method != "full" and nodes(a)["full_000"] == "no"


def test_000_full_overridden_when_it_does_not_fit():
    a = advise(AdvisorInputs(params_b=7.0, complexity=0.9, examples=10_000, quality="high", gpu_memory_gb=[40]))
    assert a.method == "lora"
    (o,) = a.overrides
    assert o["source"] == "000" and o["method"] == "full" and "GB" in o["why"]


def test_000_example_2_mobile_small_model_goes_lora():
    a = advise(AdvisorInputs(config=SMOLLM2, gpu_memory_gb=[8], deploy="edge"))
    assert a.method == "lora" and nodes(a)["edge_000"] == "yes"
    assert a.overrides == []


def test_000_example_2_with_7b_arithmetic_pushes_to_qlora_and_says_so():
    a = advise(AdvisorInputs(params_b=7.0, gpu_memory_gb=[8], deploy="edge"))
    assert a.method == "qlora"
    (o,) = a.overrides
    assert o["source"] == "000" and "mobile" in o["rule"] and o["method"] == "lora"
    assert "15" in o["why"] or "GB" in o["why"]
    assert any("Overrode 000" in r for r in a.reasons)
    assert_fits(a)


def test_000_memory_below_16_gb_goes_lora():
    a = advise(AdvisorInputs(params_b=1.0, task="instruction", complexity=0.7, gpu_memory_gb=[12]))
    assert a.method == "lora" and nodes(a)["mem_000"] == "yes"


def test_000_low_complexity_goes_lora():
    a = advise(AdvisorInputs(params_b=1.0, task="instruction", complexity=0.5, gpu_memory_gb=[24]))
    assert a.method == "lora" and nodes(a)["simple_000"] == "yes"


# ---- article 002 ------------------------------------------------------------------------------
def test_002_small_data_set_means_peft_even_when_full_would_fit():
    a = advise(AdvisorInputs(params_b=1.0, complexity=0.9, quality="high", examples=200, gpu_memory_gb=[80]))
    assert nodes(a)["data_002"] == "no" and a.method == "lora"


def test_002_unknown_data_size_does_not_block_full():
    a = advise(AdvisorInputs(params_b=1.0, complexity=0.9, quality="high", gpu_memory_gb=[80]))
    assert a.method == "full"


# ---- article 003's matrix rows ------------------------------------------------------------------
def test_003_row1_a100_cluster_specialised_domain_goes_full():
    a = advise(AdvisorInputs(params_b=7.0, task="domain", complexity=0.7, quality="high", examples=50_000,
                             gpu_memory_gb=[80] * 8))
    assert a.method == "full" and nodes(a)["full_003"] == "yes"
    assert a.estimates["full"].settings["shards"] == 8  # ZeRO-3, as 003 recommends for full
    assert_fits(a)


def test_003_row2_rtx3090_simple_classification_goes_freeze():
    a = advise(AdvisorInputs(config=BERT_BASE, task="classification", complexity=0.3, examples=20_000,
                             gpu_memory_gb=[24]))
    assert a.method == "freeze" and nodes(a)["freeze_003"] == "yes"
    assert a.hyperparameters["num_trainable_layers"] >= 1
    assert a.estimates["freeze"].estimate.parts["logits"] == 0  # classification head, no vocabulary logits


def test_003_row3_rtx4090_multi_task_goes_lora():
    a = advise(AdvisorInputs(params_b=7.0, task="multi_task", gpu_memory_gb=[24]))
    assert a.method == "lora" and nodes(a)["multi_003"] == "yes"
    assert_fits(a)


def test_003_row4_phone_level_edge_goes_qlora():
    a = advise(AdvisorInputs(params_b=3.0, deploy="edge", gpu_memory_gb=[6]))
    assert a.method == "qlora" and nodes(a)["phone_003"] == "yes"
    assert_fits(a)


def test_003_row5_t4_cross_task_latency_ok_goes_adapter():
    a = advise(AdvisorInputs(params_b=1.5, task="multi_task", latency_ok=True, gpu_memory_gb=[16]))
    assert a.method == "adapter" and nodes(a)["adapter_003"] == "yes"
    no_latency = advise(AdvisorInputs(params_b=1.5, task="multi_task", latency_ok=False, gpu_memory_gb=[16]))
    assert no_latency.method == "lora"  # adapters add inference latency; LoRA merges away


def test_003_row6_cpu_only_goes_prompt_tuning():
    a = advise(AdvisorInputs(config=SMOLLM2, cpu_only=True, ram_gb=32, task="generation"))
    assert a.method == "prompt_tuning" and nodes(a)["gpu"] == "no"
    assert a.hyperparameters["bf16"] is False and a.hyperparameters["num_virtual_tokens"] == 50


# ---- article 001: rank and hyperparameters --------------------------------------------------------
@pytest.mark.parametrize("task,complexity,quality,r", [
    ("style", 0.5, "medium", 8), ("domain", 0.5, "medium", 8), ("instruction", 0.5, "medium", 32),
    ("generation", 0.7, "high", 32), ("instruction", 0.9, "high", 64),
])
def test_001_rank_from_task_kind(task, complexity, quality, r):
    a = advise(AdvisorInputs(params_b=1.0, task=task, complexity=complexity, quality=quality, examples=5000,
                             gpu_memory_gb=[12]))
    assert a.method in ("lora", "qlora")
    h = a.hyperparameters
    assert h["r"] == r and h["lora_alpha"] == 2 * r and h["learning_rate"] == 2e-4
    assert a.estimates["lora"].estimate.settings["lora_r"] == r  # the estimate uses the suggested rank


def test_full_hyperparameters_follow_003():
    h = advise(AdvisorInputs(params_b=1.0, complexity=0.9, examples=10_000, quality="high",
                             gpu_memory_gb=[40])).hyperparameters
    assert h["learning_rate"] == 2e-5 and h["lr_scheduler_type"] == "cosine"
    assert h["max_grad_norm"] == 1.0 and h["weight_decay"] == 0.01 and h["num_train_epochs"] == 2
    assert h["warmup_ratio"] == 0.03  # 1,250 steps: long enough for a warm-up and a cosine decay


def test_short_runs_get_the_measured_defaults_long_runs_a_warm_up_and_cosine():
    short = advise(AdvisorInputs(params_b=0.135, examples=200, gpu_memory_gb=[24])).hyperparameters
    assert (short["lr_scheduler_type"], short["warmup_ratio"], short["eval_split"]) == ("linear", 0.0, 0.0)
    assert short["target_modules"] == "all_linear" and "lora_dropout" not in short  # dropout: the method's own
    long = advise(AdvisorInputs(params_b=0.135, examples=50_000, gpu_memory_gb=[24])).hyperparameters
    assert (long["lr_scheduler_type"], long["warmup_ratio"], long["eval_split"]) == ("cosine", 0.03, 0.1)


# ---- the arithmetic guard -------------------------------------------------------------------------
GRID = list(itertools.product(
    [0.135, 1.0, 7.0, 70.0], [[6], [8], [16], [24], [80], [80] * 4],
    ["classification", "multi_task", "domain"], ["server", "edge"], [(0.3, "medium"), (0.9, "high")],
))


def test_never_recommends_a_method_that_does_not_fit():
    for params_b, gpus, task, deploy, (complexity, quality) in GRID:
        a = advise(AdvisorInputs(params_b=params_b, gpu_memory_gb=gpus, task=task, deploy=deploy,
                                 complexity=complexity, quality=quality, examples=5000))
        if a.method is None:
            assert a.nothing_fits
            continue
        plan = a.estimates[a.method]
        budget = usable_bytes(min(gpus) if plan.settings["shards"] > 1 else max(gpus))
        assert plan.fits and sum(plan.estimate.parts.values()) <= budget, (params_b, gpus, task, a.method)
        if a.runner_up:
            assert a.estimates[a.runner_up].fits


def test_nothing_fits_says_by_how_much_and_what_would():
    a = advise(AdvisorInputs(params_b=70.0, gpu_memory_gb=[8]))
    assert a.method is None and a.runner_up is None and a.hyperparameters == {}
    assert "GB more than" in a.nothing_fits and "smaller model" in a.nothing_fits
    assert a.estimates["qlora"].make_it_fit and not a.estimates["qlora"].fits


def test_cpu_with_too_little_ram_fits_nothing():
    a = advise(AdvisorInputs(config=SMOLLM2, cpu_only=True, ram_gb=0.5))
    assert a.method is None and "RAM" in a.nothing_fits


# ---- the tree is data -----------------------------------------------------------------------------
def test_tree_is_well_formed_data():
    ids = [i.id for i in TREE.items]
    assert len(ids) == len(set(ids))
    for node in TREE.nodes:
        assert node.checks or node.test in PREDICATES
        assert node.source in {"000", "001", "002", "003", "004", "studio"}
        assert node.question and node.rule and node.label
        for b in node.branches:
            TREE[b.to]
    reachable, todo = set(), [TREE.root]
    while todo:
        item = TREE[todo.pop()]
        if item.id not in reachable:
            reachable.add(item.id)
            todo += [b.to for b in getattr(item, "branches", ())]
    assert reachable == set(ids)
    methods = {leaf.method for leaf in TREE.leaves}
    assert methods == {"full", "freeze", "lora", "qlora", "adapter", "prompt_tuning", None}
    assert all(isinstance(i, (Node, Leaf)) for i in TREE.items)


def test_every_article_is_cited():
    sources = {i.source for i in TREE.items}
    assert {"000", "001", "002", "003", "004"} <= sources


def test_json_shape():
    j = advise(AdvisorInputs(config=SMOLLM2, gpu_memory_gb=[24], examples=3000, seq_len_p95=300)).to_json()
    assert {"method", "runner_up", "path", "estimates", "hyperparameters", "overrides", "nothing_fits",
            "reasons"} <= set(j)
    assert all({"question", "answer", "rule", "source"} <= set(s) for s in j["path"])
    assert len(j["estimates"]) == len(methods.names())  # every registered method
    for est in j["estimates"].values():
        assert {"total_gb", "parts", "fits", "fits_on", "make_it_fit"} <= set(est)
        assert set(est["parts"]) == {"weights", "trainable_state", "activations", "logits", "objective", "overhead"}
    assert j["hyperparameters"]["max_seq_length"] == 320  # p95 300 rounded up to 64


@pytest.mark.parametrize("bad", [{"task": "poetry"}, {"quality": "ultra"}, {"deploy": "moon"},
                                 {"complexity": 1.5}, {"params_b": None}])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        advise(AdvisorInputs(**{"params_b": 1.0, "gpu_memory_gb": [24], **bad}))
