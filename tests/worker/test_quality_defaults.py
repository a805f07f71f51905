"""The smallest form of bench/quality.py, on every run: the studio's default LoRA job and the expert's
hand-written Trainer + peft script (bench/expert_sft.py) train the tiny model on the same rows for the same
steps, and are scored by the same code on held-out rows. The defaults must not fall behind the expert:
the studio once reached only 69 % of the script's improvement (attention-only targets, a 10 % hold-out
taken from 200 rows, warm-up + cosine and dropout on a 30-step run)."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.expert_sft import heldout_loss
from bench.expert_sft import train as expert_train
from models_db import Job, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import operations
from studio.jobspec import build_train_spec
from tests.backends import backend_env, in_process
from worker import job_process, lineage

STEPS, BATCH = 30, 4
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "rain", "snow"]


def rows(start: int, n: int) -> list[dict]:
    """Short instruction rows with a learnable answer: the word after a given one in a fixed list."""
    return [{"instruction": f"After {WORDS[i % 12]} comes?", "input": "",
             "output": f"{WORDS[(i + 1) % 12]} then {WORDS[(i + 2) % 12]} ({i})"} for i in range(start, start + n)]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("quality")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(0, 120)))
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        model_id, model_path = register(tiny_llama_dir, "tiny")
        dataset, _, _ = operations.add_dataset(data)
        yield model_id, dataset.id, model_path


def studio_defaults_loss(model_id: int, dataset_id: int, model_dir: str, held: list[dict]) -> float:
    # only what the expert's script also fixes: run length, batch, seed; the rest is the studio's default
    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method="lora",
                            settings={"max_steps": STEPS, "per_device_train_batch_size": BATCH, "seed": 42})
    assert spec.eval_split == 0.0 and spec.method_params["target_modules"] == "all_linear"  # the small-data rules
    job, _ = operations.submit_train(spec)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        version = db.get(ModelVersion, db.get(Job, job.id).result["version_id"])
        chain = lineage.chain(db, version.id)
        db.expunge_all()
    model = lineage.load_chain(AutoModelForCausalLM.from_pretrained(model_dir), chain, last="inference")
    return heldout_loss(model, AutoTokenizer.from_pretrained(model_dir), held)


def test_the_default_lora_job_learns_at_least_as_much_as_the_experts_script(studio, tmp_path):
    model_id, dataset_id, model_dir = studio
    held = rows(120, 24)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = heldout_loss(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, held)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides alike; tiny models gain nothing from intra-op threads
    try:
        expert, _ = expert_train(model_dir, rows(0, 120), "lora", STEPS, BATCH, lr=None, out=None)
        script = heldout_loss(expert, tokenizer, held)
        studio_loss = studio_defaults_loss(model_id, dataset_id, model_dir, held)
    finally:
        torch.set_num_threads(threads)
    assert script < base  # the expert's script learned: the comparison means something
    improvement = (base - studio_loss) / (base - script)
    assert improvement >= 0.97, (base, script, studio_loss, improvement)
