"""`studio advise`: the documented JSON shape, the articles' cases through the CLI, and where the inputs
come from (a model's config.json in the store, a data set's size and token lengths, the workers' GPUs)."""
import json
import os
import subprocess
import sys

import pytest

from models_db import BaseModel, Worker, session_scope
from studio import cli, methods, operations
from tests.cli import write_instruction_jsonl

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "tie_word_embeddings": True, "max_position_embeddings": 8192}
BERT_BASE = {"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "vocab_size": 30522}


@pytest.fixture
def studio(backend, tiny_llama_dir, tmp_path):
    """A studio with the tiny Llama (weights + tokenizer), two config-only models and a 40-row data set."""
    ids = {}
    with session_scope() as db:
        for name, folder in (("tiny-llama", tiny_llama_dir), ("smollm2", None), ("bert-base", None)):
            if folder is None:
                folder = tmp_path / name
                folder.mkdir()
                (folder / "config.json").write_text(json.dumps(SMOLLM2 if name == "smollm2" else BERT_BASE))
            row = BaseModel(name=name, path=str(folder), source="test")
            db.add(row)
            db.flush()
            ids[name] = row.id
    data = tmp_path / "arith.jsonl"
    write_instruction_jsonl(data, 40)
    ids["dataset"] = operations.add_dataset(data)[0].id
    return ids


def add_worker(gpus: list[float], name: str = "w1") -> None:
    with session_scope() as db:
        db.add(Worker(id=name, host="h",
                      gpus=[{"index": i, "name": "GPU", "memory_gb": g} for i, g in enumerate(gpus)]))


def advise(capsys, *args: str) -> dict:
    cli.main(["advise", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_json_shape_through_the_real_command(backend):
    from tests.cli import Cli

    env = {"STUDIO_HOME": str(backend.home_abs)}
    if backend.database_url:
        env["STUDIO_DATABASE_URL"] = backend.database_url
    p = Cli(env).run("advise", "--params-b", "7", "--gpu-memory-gb", "8", "--deploy", "edge", "--json")
    out = json.loads(p.stdout)  # exactly one JSON object on stdout
    assert out["method"] == "qlora" and (out["runner_up"] is None or isinstance(out["runner_up"], str))
    assert {"method", "runner_up", "path", "estimates", "hyperparameters"} <= set(out)
    for step in out["path"]:
        assert {"question", "answer", "rule", "source"} <= set(step)
        assert all(isinstance(step[k], str) for k in ("question", "answer", "rule", "source"))
    assert set(out["estimates"]) == set(methods.names())  # every registered method
    for est in out["estimates"].values():
        assert isinstance(est["total_gb"], float) and isinstance(est["fits"], bool)
        assert set(est["parts"]) == {"weights", "trainable_state", "activations", "logits", "objective", "overhead"}
        assert est["total_gb"] == pytest.approx(sum(est["parts"].values()), abs=0.01)
    assert out["estimates"]["qlora"]["fits"] and not out["estimates"]["lora"]["fits"]
    assert out["hyperparameters"]["learning_rate"] == 2e-4 and out["hyperparameters"]["r"] >= 16
    (override,) = out["overrides"]  # 000's "LoRA for mobile" loses to the arithmetic, and says so
    assert override["source"] == "000" and override["method"] == "lora" and "GB" in override["why"]


@pytest.mark.parametrize("args,method,node", [
    # 000 §6.1 example 1: complexity 0.9, 10,000 examples, high target, > 32 GB -> full
    (["--params-b", "1", "--complexity", "0.9", "--examples", "10000", "--quality", "high",
      "--gpu-memory-gb", "40"], "full", ("full_000", "yes")),
    # 003 row 2: simple classification on an RTX 3090 -> freeze
    (["--model", "bert-base", "--task", "classification", "--complexity", "0.3", "--examples", "20000",
      "--gpu-memory-gb", "24"], "freeze", ("freeze_003", "yes")),
    # 003 row 3: multi-task on an RTX 4090 -> LoRA
    (["--params-b", "7", "--task", "multi_task", "--gpu-memory-gb", "24"], "lora", ("multi_003", "yes")),
    # 003 row 5: cross-task on a T4 with latency acceptable -> adapter; without, LoRA
    (["--params-b", "1.5", "--task", "multi_task", "--gpu-memory-gb", "16"], "adapter", ("adapter_003", "yes")),
    (["--params-b", "1.5", "--task", "multi_task", "--gpu-memory-gb", "16", "--no-latency-ok"], "lora",
     ("adapter_003", "no")),
    # 003 row 6: CPU only -> prompt tuning
    (["--model", "smollm2", "--cpu-only", "--ram-gb", "32", "--task", "generation"], "prompt_tuning", ("gpu", "no")),
    # 003 row 1: a specialised domain on an A100 cluster -> full, sharded over the 8 GPUs
    (["--params-b", "7", "--task", "domain", "--complexity", "0.7", "--quality", "high", "--examples", "50000",
      "--gpu-memory-gb", "80", "--gpus", "8"], "full", ("full_003", "yes")),
])
def test_article_cases(studio, capsys, args, method, node):
    out = advise(capsys, *args)
    assert out["method"] == method
    assert {s["node"]: s["answer"] for s in out["path"]}[node[0]] == node[1]
    assert out["estimates"][method]["fits"]


def test_000_example_2_mobile_from_the_model_store(studio, capsys):
    """8 GB, mobile support -> LoRA; the model's shape comes from its config.json in the store."""
    out = advise(capsys, "--model", "smollm2", "--gpu-memory-gb", "8", "--deploy", "mobile")
    assert out["method"] == "lora" and out["overrides"] == []
    assert out["model"]["layers"] == 30 and out["model"]["params"] == 134_515_008  # SmolLM2-135M, tied
    assert "config.json" in out["inputs"]["model"]


def test_dataset_gives_examples_and_token_lengths(studio, capsys):
    out = advise(capsys, "--model", "tiny-llama", "--dataset", str(studio["dataset"]), "--gpu-memory-gb", "40",
                 "--complexity", "0.9", "--quality", "high")
    assert "40 examples" in out["inputs"]["dataset"] and "tokenizer" in out["inputs"]["dataset"]
    assert out["hyperparameters"]["num_train_epochs"] == 5  # fewer than 1,000 examples: more passes
    assert out["hyperparameters"]["max_seq_length"] == 64  # short rows: p95 rounded up to 64
    # 000 would pick full fine-tuning, but 002 wants a large data set for it: 40 rows is not
    assert {s["node"]: (s["answer"], s["detail"]) for s in out["path"]}["data_002"] == ("no", "40 examples")
    assert out["method"] != "full"


def test_gpus_default_to_the_workers_else_cpu(studio, capsys):
    assert advise(capsys, "--params-b", "1")["model"]["hardware"].startswith("CPU only")
    add_worker([24.0, 24.0])
    out = advise(capsys, "--params-b", "1")
    assert out["model"]["hardware"] == "2× 24 GB GPU" and out["inputs"]["hardware"] == "the registered workers' GPUs"
    assert advise(capsys, "--params-b", "1", "--gpu-memory-gb", "80")["model"]["hardware"] == "1× 80 GB GPU"


def test_text_form(studio, capsys):
    cli.main(["advise", "--params-b", "7", "--gpu-memory-gb", "8", "--deploy", "edge"])
    text = capsys.readouterr().out
    assert text.startswith("Recommended: qlora")
    assert "How the tree decided:" in text and "rule [003]" in text and "overrode 000" in text
    assert "Estimated peak memory per GPU" in text and "studio train --method qlora" in text
    assert "r=32" in text


def test_nothing_fits_says_so(studio, capsys):
    out = advise(capsys, "--params-b", "70", "--gpu-memory-gb", "4")
    assert out["method"] is None and out["hyperparameters"] == {}
    assert "Nothing fits" in out["nothing_fits"] and "GB more than" in out["nothing_fits"]
    assert not any(e["fits"] for e in out["estimates"].values())


@pytest.mark.parametrize("args,message", [
    (["--params-b", "1", "--complexity", "2"], "complexity must be between 0 and 1"),
    (["--params-b", "1", "--gpus", "2"], "--gpus needs --gpu-memory-gb"),
    (["--params-b", "1", "--gpu-memory-gb", "big"], "give GB per GPU"),
    (["--model", "nope"], "model 'nope' does not exist"),
    (["--params-b", "1", "--dataset", "99"], "dataset 99 does not exist"),
    ([], "give a model"),
])
def test_bad_input_is_a_clear_error(studio, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["advise", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_advise_imports_no_torch(backend):
    code = ("import sys; from studio import cli; cli.main(['advise', '--params-b', '1', '--gpu-memory-gb', '24']); "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; assert not bad, bad")
    env = {"STUDIO_HOME": str(backend.home_abs)}
    if backend.database_url:
        env["STUDIO_DATABASE_URL"] = backend.database_url
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**os.environ, **env},
                   capture_output=True)


def test_a_model_and_a_size_together_are_refused_naming_both(studio, capsys):
    # `--model M --params-b 7` once gave M's 135M numbers without a word about the 7
    with pytest.raises(SystemExit):
        cli.main(["advise", "--model", "smollm2", "--params-b", "7", "--json"])
    err = capsys.readouterr().err
    assert "give a model or a size, not both: smollm2 has its own size (0.135 B parameters)" in err and "the size says 7 B" in err
    assert "Traceback" not in err


def test_cpu_instruction_task_with_room_gets_lora_and_says_which_rule(studio, capsys):
    out = advise(capsys, "--model", "smollm2", "--dataset", str(studio["dataset"]), "--task", "instruction",
                 "--ram-gb", "24")
    assert out["method"] == "lora"
    cpu = next(s for s in out["path"] if s["node"] == "cpu_003")
    assert cpu["answer"] == "no" and cpu["source"] == "003" and "instruction" in cpu["detail"]
    assert not any("RAM size unknown" in " ".join(e.get("make_it_fit", [])) for e in out["estimates"].values())
    # 003's CPU row: creative writing (or tiny data) gets prompt tuning
    assert advise(capsys, "--model", "smollm2", "--task", "generation", "--ram-gb", "24")["method"] == "prompt_tuning"


def test_cpu_advice_uses_the_registered_workers_ram(studio, capsys):
    with session_scope() as db:
        db.add(Worker(id="cpu-box", host="h", gpus=[], ram_total=24 * 2**30))
    out = advise(capsys, "--model", "smollm2", "--examples", "500", "--task", "instruction")
    assert out["method"] == "lora"
    assert "24 GB RAM (the largest registered worker's)" in out["model"]["hardware"] or \
        "24 GB RAM" in json.dumps(out)
    assert "RAM size unknown" not in json.dumps(out)
