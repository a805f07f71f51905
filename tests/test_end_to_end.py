"""The whole path through the real CLI and a real Celery worker: data set in, LoRA trained, version
registered, merged model out — embedded (SQLite) and against real Redis + Postgres."""
import json

import pytest
from sqlalchemy import create_engine, text

from tests.backends import backend_env
from tests.cli import Cli, write_instruction_jsonl


@pytest.fixture(params=["embedded", "services"])
def cli(request, tmp_path):
    with backend_env(request.param, tmp_path / "home") as env:
        c = Cli(env)
        c.run("db", "upgrade")
        yield c


def test_upload_train_version_export(cli, tiny_llama_dir, tmp_path):
    model = cli.json("models", "import", str(tiny_llama_dir), "--name", "tiny")["model"]
    data = tmp_path / "pairs.jsonl"
    write_instruction_jsonl(data)
    ds = cli.json("dataset", "add", str(data))["dataset"]
    assert ds["rows"] == 40 and ds["format"] == "instruction"

    with cli.worker():
        job = cli.json("train", "--model", "tiny", "--dataset", str(ds["id"]), "--method", "lora",
                       "--set", "max_steps=24", "--set", "learning_rate=5e-3", "--set", "per_device_train_batch_size=8",
                       "--set", "r=8", "--set", "eval_split=0.1", "--wait")
    assert job["state"] == "succeeded", job["error"]
    assert job["step"] == job["max_steps"] == 24 and job["attempt"] == 1 and job["version_id"]

    url = cli.env.get("STUDIO_DATABASE_URL") or f"sqlite:///{cli.env['STUDIO_HOME']}/studio.db"
    engine = create_engine(url)
    with engine.connect() as c:
        losses = [r[0] for r in c.execute(text(
            "SELECT value FROM metrics WHERE job_id = :j AND name = 'loss' ORDER BY step"), {"j": job["id"]})]
        evals = c.execute(text("SELECT count(*) FROM metrics WHERE job_id = :j AND name = 'eval_loss'"),
                          {"j": job["id"]}).scalar()
    engine.dispose()
    assert len(losses) == 24 and evals >= 1
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4  # the loss went down

    version = cli.json("versions", "show", str(job["version_id"]))
    assert version["method"] == "lora" and version["base_model_id"] == model["id"] and version["ancestors"] == []
    assert version["metrics"]["trainable_params"] < version["metrics"]["total_params"]

    out = tmp_path / "merged"
    cli.json("versions", "export", str(job["version_id"]), "--out", str(out), "--merged")
    assert (out / "model.safetensors").exists() and "lora" in (out / "README.md").read_text()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 3 plus 1?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = merged.generate(**enc, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == enc["input_ids"].shape[1] + 5 or tok.eos_token_id in gen[0].tolist()
    card = json.loads((out / "studio_version.json").read_text())
    assert card["version_id"] == job["version_id"] and card["config"]["method_params"]["r"] == 8
