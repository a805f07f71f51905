"""Every registered method on a tiny model: build, train, save, reload, export; plus bad input and counting.

Parametrised over ``names()``, so a newly registered method is covered without editing this file.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worker import methods
from worker.methods import MethodError
from worker.methods.counting import count_parameters, estimate_trainable

STEPS = 8
LR = 1e-2
ROOT = Path(__file__).resolve().parents[2]


def load_base(model_dir, method=None, params=None, task="causal_lm"):
    """Base model as a recipe would load it (with the method's extra kwargs, e.g. qlora's quantization)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    extra = method.load_kwargs(params, model_dir) if method else {}
    return cls.from_pretrained(str(model_dir), **extra)


def fixed_batch(vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (4, 12), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def eval_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def logits(model, batch):
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits.float()


def train(model, method, batch, steps=STEPS, lr=LR):
    """A plain torch loop, with the method's per-step hook where it has one (AdaLoRA)."""
    torch.manual_seed(0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "method left nothing trainable"
    optimizer = torch.optim.Adam(trainable, lr=lr)
    model.train()
    for step in range(1, steps + 1):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if method.after_optimizer_step:
            method.after_optimizer_step(model, step)
        optimizer.zero_grad()


def test_import_stays_free_of_torch():
    code = "import worker.methods, sys; assert 'torch' not in sys.modules, 'torch imported'; " \
           "assert 'peft' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_every_spec_has_an_implementation_and_every_implementation_a_spec():
    from studio import methods as specs

    assert list(methods.REGISTRY) and set(methods.REGISTRY) == set(specs.REGISTRY)
    assert methods.names() == specs.names()
    for name in specs.names():
        method = methods.get(name)
        assert method.spec is specs.get(name) and method.params is specs.get(name).params  # one object, both sides
        assert method.mergeable == (method.merge is not None), name


def test_registry_names_and_description():
    assert methods.names()[:11] == ["full", "freeze", "lora", "qlora", "adapter", "prompt_tuning",
                                    "prefix_tuning", "p_tuning", "adalora", "dora", "ia3"]  # methods added later follow
    described = json.loads(json.dumps(methods.describe_all()))  # JSON-able
    for entry in described:
        assert entry["summary"] and isinstance(entry["mergeable"], bool)
        for p in entry["params"]:
            assert p["help"], f"{entry['name']}.{p['name']} has no tooltip"
            assert set(p) == {"name", "type", "default", "help", "min", "max", "choices"}
    lora = next(e for e in described if e["name"] == "lora")
    assert lora["default_training"]["learning_rate"] == 2e-4
    assert {p["name"]: p["default"] for p in lora["params"]}["r"] == 16
    with pytest.raises(MethodError, match="Known methods: full, freeze"):
        methods.get("lorra")


@pytest.mark.parametrize("name", methods.names())
def test_method_trains_saves_reloads_exports(name, tiny_llama_dir, tmp_path):
    method = methods.get(name)
    params = methods.with_context(methods.parse_params(name, {}), total_steps=STEPS)
    torch.manual_seed(0)
    model = method.apply(load_base(tiny_llama_dir, method, params), params, "causal_lm")
    batch = fixed_batch(model.config.vocab_size)

    before = eval_loss(model, batch)
    train(model, method, batch)
    after = eval_loss(model, batch)
    assert after < before, f"{name}: loss did not fall ({before:.4f} -> {after:.4f})"
    trained = logits(model, batch)

    saved = tmp_path / "saved"
    method.save(model, saved)
    files = sorted(p.name for p in saved.iterdir())
    assert files and all(f.endswith((".safetensors", ".json")) for f in files), files
    reloaded = method.load(load_base(tiny_llama_dir, method, params), saved)
    torch.testing.assert_close(logits(reloaded, batch), trained, atol=1e-5, rtol=0)
    assert count_parameters(reloaded)["trainable"] == 0  # loaded for inference
    # Continuing from a version trains the same parameters as the original run.
    continued = count_parameters(method.load(load_base(tiny_llama_dir, method, params), saved, trainable=True))
    original = count_parameters(model)
    if method.after_optimizer_step:  # AdaLoRA reloads at its pruned ranks
        assert 0 < continued["trainable"] <= original["trainable"]
    else:
        assert continued["trainable"] == original["trainable"]

    if not method.mergeable:
        assert method.merge is None
        return
    # A quantized base cannot hold the merge; qlora merges onto the base in full precision,
    # so its reference is the adapter on that full-precision base.
    reference = trained if not method.load_kwargs(params) else logits(method.load(load_base(tiny_llama_dir), saved), batch)
    merged = method.merge(model)
    assert not hasattr(merged, "peft_config") and type(merged).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(logits(merged, batch), reference, atol=1e-4, rtol=0)
    merged.save_pretrained(tmp_path / "merged", safe_serialization=True)
    standalone = load_base(tmp_path / "merged")
    torch.testing.assert_close(logits(standalone, batch), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("raw, message", [
    ({"r": 0}, r"lora: r must be >= 1 \(got 0\)\. Set --set r=1 or higher"),
    ({"lora_dropout": "-0.1"}, r"lora_dropout must be >= 0.0 \(got -0.1\)"),
    ({"rank": 8}, r"unknown parameter 'rank'\. Valid keys: r, lora_alpha"),
    ({"r": "eight"}, r"r must be an int \(got 'eight'\)"),
    ({"rank_pattern": "q_proj"}, r"rank_pattern must look like 'regex=int"),
    ({"layers_to_transform": "0,7"}, r"outside 0\.\.1"),
])
def test_parse_params_rejects_bad_lora_input(raw, message):
    with pytest.raises(MethodError, match=message):
        methods.parse_params("lora", raw, model_config={"num_hidden_layers": 2})


def test_parse_params_coerces_cli_strings_and_ui_values():
    p = methods.parse_params("lora", {"r": "8", "use_rslora": "true", "target_modules": ["q_proj", "v_proj"],
                                      "init_lora_weights": "PiSSA", "lora_dropout": 0})
    assert (p.r, p.use_rslora, p.target_modules, p.init_lora_weights, p.lora_dropout) == \
        (8, True, "q_proj,v_proj", "pissa", 0.0)
    assert methods.parse_params("qlora", {"bits": "8"}).bits == 8


def test_freeze_more_layers_than_the_model_has(tiny_llama_dir):
    with pytest.raises(MethodError, match=r"num_trainable_layers=3 but the model has 2 layers\. "
                                          r"Set --set num_trainable_layers=2 or lower"):
        methods.parse_params("freeze", {"num_trainable_layers": 3}, model_config={"num_hidden_layers": 2})
    params = methods.parse_params("freeze", {"num_trainable_layers": 3})  # no config: caught at apply
    with pytest.raises(MethodError, match="but the model has 2 layers"):
        methods.get("freeze").apply(load_base(tiny_llama_dir), params, "causal_lm")


def test_target_modules_not_in_model(tiny_llama_dir):
    params = methods.parse_params("lora", {"target_modules": "query,value"})
    with pytest.raises(MethodError, match=r"query, value not found in LlamaForCausalLM\. Its linear layers are: "
                                          r"down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"):
        methods.get("lora").apply(load_base(tiny_llama_dir), params, "causal_lm")


def test_freeze_trains_only_top_layers_and_head(tiny_llama_dir):
    params = methods.parse_params("freeze", {"num_trainable_layers": 1, "trainable_modules": "mlp"})
    model = methods.get("freeze").apply(load_base(tiny_llama_dir), params, "causal_lm")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.layers.1.mlp.") for n in trainable)
    assert not any(n.startswith(("model.layers.0.", "model.layers.1.self_attn", "model.embed")) for n in trainable)
    assert {"lm_head.weight", "model.norm.weight"} <= trainable


def test_freeze_default_trains_a_quarter_of_the_blocks_and_no_tied_head(tmp_path):
    from tests.tiny import build_tiny_llama

    base = build_tiny_llama(tmp_path / "tied", layers=8, tied=True)
    model = methods.get("freeze").apply(load_base(base), methods.parse_params("freeze", {}), "causal_lm")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[2] for n in trainable if n.startswith("model.layers.")} == {"6", "7"}
    assert "model.norm.weight" in trainable and not any("embed" in n for n in trainable)
    params = methods.parse_params("freeze", {"train_tied_head": "on"})
    model = methods.get("freeze").apply(load_base(base), params, "causal_lm")
    assert model.get_input_embeddings().weight.requires_grad  # the tied head is the embedding matrix


def test_freeze_attention_preset_trains_attention_but_no_norm(tiny_llama_dir):
    params = methods.parse_params("freeze", {"num_trainable_layers": 1, "trainable_modules": "attention"})
    model = methods.get("freeze").apply(load_base(tiny_llama_dir), params, "causal_lm")
    top = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.layers.1.")}
    assert top and all(n.startswith("model.layers.1.self_attn.") for n in top), top


def test_lora_presets_map_to_the_models_linear_names(tiny_llama_dir, tiny_bert_dir):
    from worker.methods._peft_common import resolve_targets

    llama = load_base(tiny_llama_dir)
    assert resolve_targets("lora", llama, "attention") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert set(resolve_targets("lora", llama, "all_linear")) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    bert = load_base(tiny_bert_dir, task="seq_cls")
    # BERT calls both attention.output.dense and output.dense "dense": the preset must tell them apart.
    assert resolve_targets("lora", bert, "attention") == ["query", "key", "value", "attention.output.dense"]


def test_lora_rank_pattern_and_pissa_save_as_plain_lora(tiny_llama_dir, tmp_path):
    lora = methods.get("lora")
    params = methods.parse_params("lora", {"r": 4, "init_lora_weights": "pissa", "target_modules": "all_linear",
                                           "rank_pattern": "down_proj=2"})
    model = lora.apply(load_base(tiny_llama_dir), params, "causal_lm")
    assert model.base_model.model.model.layers[0].mlp.down_proj.lora_A["default"].weight.shape[0] == 2
    batch = fixed_batch(model.config.vocab_size)
    train(model, lora, batch, steps=3)
    trained = logits(model, batch)
    lora.save(model, tmp_path)
    # PiSSA rewrote the in-memory base; the saved adapter must load onto the untouched base.
    reloaded = lora.load(load_base(tiny_llama_dir), tmp_path)
    torch.testing.assert_close(logits(reloaded, batch), trained, atol=1e-4, rtol=0)


@pytest.mark.parametrize("bits, layer", [("4", "Linear4bit"), ("8", "Linear8bitLt")])
def test_qlora_quantizes_the_base_and_trains(bits, layer, tiny_llama_dir):
    # bitsandbytes 0.50 runs both 4-bit NF4 and 8-bit layers on CPU, so this runs for real here.
    qlora = methods.get("qlora")
    params = methods.parse_params("qlora", {"bits": bits})
    model = qlora.apply(load_base(tiny_llama_dir, qlora, params), params, "causal_lm")
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == layer
    assert type(model.base_model.model.lm_head).__name__ == "Linear"  # heads stay full precision
    batch = fixed_batch(model.config.vocab_size)
    before = eval_loss(model, batch)
    train(model, qlora, batch, steps=3)
    assert eval_loss(model, batch) < before


def test_qlora_keeps_layers_narrower_than_the_4bit_block_in_full_precision(tmp_path):
    # A 32-wide layer crashed bitsandbytes' 4-bit CPU fast path (AVX-512 bf16: "shape '[32, 0]' is
    # invalid"); such layers now stay unquantized, and the log line and the counts say so.
    from tests.tiny import build_tiny_llama
    from worker.methods.qlora import describe, fits_4bit_blocks

    assert fits_4bit_blocks(576, 192) and not fits_4bit_blocks(32, 32) and not fits_4bit_blocks(96, 64)
    narrow = build_tiny_llama(tmp_path / "narrow", hidden=32)  # q_proj 32x32, up_proj 32->64, down_proj 64->32
    qlora = methods.get("qlora")
    params = methods.parse_params("qlora", {"bits": 4})
    model = qlora.apply(load_base(narrow, qlora, params), params, "causal_lm")
    layer = model.base_model.model.model.layers[0]
    assert type(layer.self_attn.q_proj.base_layer).__name__ == "Linear"  # in_features 32: kept
    down = getattr(layer.mlp.down_proj, "base_layer", layer.mlp.down_proj)  # a LoRA target or not
    assert type(down).__name__ == "Linear4bit"  # 64 -> 32 fits the blocks
    line, counts = describe(model)
    assert counts["quantized_params"] == 2 * 64 * 32 and counts["unquantized_linear_params"] > 0  # down_proj x 2
    assert "kept in full precision because their width is not a multiple of the 64-wide 4-bit block" in line
    batch = fixed_batch(model.config.vocab_size)
    before = eval_loss(model, batch)  # inference under no_grad: the path that took the packed CPU kernel
    train(model, qlora, batch, steps=3)
    assert eval_loss(model, batch) < before


def test_qlora_refuses_an_unquantized_base(tiny_llama_dir):
    params = methods.parse_params("qlora", {})
    with pytest.raises(MethodError, match="qlora: the base model is not quantized"):
        methods.get("qlora").apply(load_base(tiny_llama_dir), params, "causal_lm")


def test_qlora_backend_that_cannot_run_says_what_to_do(monkeypatch):
    import bitsandbytes as bnb

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bnb.nn, "Linear4bit", broken)
    from worker.methods.qlora import probe_backend

    with pytest.raises(MethodError, match=r"qlora: bitsandbytes cannot run 4-bit layers here "
                                          r"\(RuntimeError: no kernel for this device\).*choose the lora method"):
        probe_backend(4, "cpu")


def test_qlora_without_backend_says_what_to_do(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(MethodError, match="bitsandbytes is not installed.*choose the lora method"):
        methods.parse_params("qlora", {})


def test_adapter_starts_identical_to_base(tiny_llama_dir):
    base = load_base(tiny_llama_dir)
    batch = fixed_batch(base.config.vocab_size)
    expected = logits(base, batch)
    params = methods.parse_params("adapter", {"placement": "both", "bottleneck_size": 4})
    model = methods.get("adapter").apply(base, params, "causal_lm")
    torch.testing.assert_close(logits(model, batch), expected, atol=0, rtol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("studio_adapter_" in n for n in trainable)


def separable_set(tokenizer, n=32):
    """Label 1 = 'positive' sentences, 0 = 'negative': separable by a single token."""
    pos = ["positive answer", "the positive label", "positive text", "positive output response"]
    neg = ["negative answer", "the negative label", "negative text", "negative output response"]
    texts = [(t, 1) for t in pos] + [(t, 0) for t in neg]
    texts = (texts * (n // len(texts) + 1))[:n]
    enc = tokenizer([t for t, _ in texts], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor([y for _, y in texts])}


@pytest.mark.parametrize("name", ["lora", "full"])
def test_sequence_classification_learns(name, tiny_bert_dir):
    from transformers import AutoTokenizer

    method = methods.get(name)
    params = methods.parse_params(name, {})
    torch.manual_seed(0)
    model = method.apply(load_base(tiny_bert_dir, task="seq_cls"), params, "seq_cls")
    batch = separable_set(AutoTokenizer.from_pretrained(str(tiny_bert_dir)))
    train(model, method, batch, steps=30, lr=1e-2 if name == "lora" else 1e-3)
    with torch.no_grad():
        model.eval()
        accuracy = (model(**batch).logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert accuracy > 0.8


def test_count_parameters(tiny_llama_dir):
    full = count_parameters(load_base(tiny_llama_dir))
    assert full["trainable"] == full["total"] > 0 and full["ratio"] == 1.0


@pytest.mark.parametrize("name", methods.names())
def test_estimate_trainable_on_meta_matches_real(name, tiny_llama_dir):
    params = methods.parse_params(name, {})
    estimate = estimate_trainable(tiny_llama_dir, name, params, "causal_lm")
    assert 0 < estimate["trainable"] <= estimate["total"]
    if name == "qlora":
        return  # counted as LoRA on the meta device; the real 4-bit base packs weights differently
    method = methods.get(name)
    real_params = methods.with_context(params, total_steps=STEPS)
    real = count_parameters(method.apply(load_base(tiny_llama_dir), real_params, "causal_lm"))
    assert estimate == real


def test_estimate_lora_ratio_below_full(tiny_llama_dir):
    config = json.loads((Path(tiny_llama_dir) / "config.json").read_text())
    full = estimate_trainable(config, "full", methods.parse_params("full", {}), "causal_lm")
    lora = estimate_trainable(config, "lora", methods.parse_params("lora", {}), "causal_lm")
    assert full["ratio"] == 1.0 and 0 < lora["ratio"] < full["ratio"]
    with pytest.raises(MethodError, match="not found"):
        estimate_trainable(config, "lora", methods.parse_params("lora", {"target_modules": "nope"}), "causal_lm")


def test_a_method_peft_cannot_apply_to_the_models_layers_says_what_to_use_instead():
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 400, "n_positions": 128,
            "bos_token_id": 0, "eos_token_id": 0}
    with pytest.raises(MethodError, match=r"oft: peft's OFT cannot wrap GPT2LMHeadModel's Conv1D layers "
                                          r"\(c_attn, c_fc, c_proj\)\. Use lora"):
        estimate_trainable(gpt2, "oft", methods.parse_params("oft", {}), "causal_lm")


def test_module_names_are_read_from_the_weights_without_torch(tiny_llama_dir):
    from studio.methods.model_files import layer_module_names, module_names

    names = module_names(tiny_llama_dir)
    assert {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn", "model.layers", "lm_head"} <= set(names)
    assert "q_proj" in layer_module_names(names) and "lm_head" not in layer_module_names(names)
    for method, raw in [("lora", {"target_modules": "q_proj,v_proj", "modules_to_save": "lm_head"}),
                        ("ia3", {"target_modules": "auto"}), ("freeze", {"trainable_modules": "self_attn"}),
                        ("adalora", {"target_modules": "all_linear"})]:
        methods.parse_params(method, raw, module_names=names)
    with pytest.raises(MethodError, match=r"adalora: target_modules names query, which the model does not have\. "
                                          r"Its blocks contain: .*o_proj.*Set --set target_modules= to one of "
                                          r"attention, attention_mlp, all_linear or a comma list"):
        methods.parse_params("adalora", {"target_modules": "query,v_proj"}, module_names=names)
    with pytest.raises(MethodError, match=r"freeze: trainable_modules names attention"):
        methods.parse_params("freeze", {"trainable_modules": "attention,mlp"}, module_names=names)
