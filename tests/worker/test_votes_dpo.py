"""The closed preference loop for real: an SFT version and the base answer the same prompts (generation rows,
as the interactive worker leaves them), a person votes, the votes become a preference data set, and the one-call
"train DPO from the preferred version" job runs here as a worker's job process would and registers a DPO
version whose parent is the version the votes preferred."""
from __future__ import annotations

import uuid

import pytest
import torch

from sqlalchemy import select

from models_db import Generation, Metric, session_scope
from studio import operations, votes
from studio.jobspec import build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.inprocess import run_to_version

TINY = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2, "max_seq_length": 64}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("votes")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from intra-op threads on a busy machine
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        base = register(tiny_llama_dir, "tiny-llama")[0]
        write_instruction_jsonl(root / "sft.jsonl")
        sft_data, _, _ = operations.add_dataset(root / "sft.jsonl")
        yield base, sft_data.id
    torch.set_num_threads(threads)


def answer(base: int, version: int | None, prompt: str, output: str) -> int:
    with session_scope() as db:
        g = Generation(cache_key=uuid.uuid4().hex, base_model_id=base, version_id=version, prompt=prompt,
                       settings={"mode": "chat"}, state="done", output=output, new_tokens=4)
        db.add(g)
        db.flush()
        return g.id


def test_votes_train_dpo_from_the_preferred_version(studio):
    base, sft_data = studio
    spec = build_train_spec(model_id=base, dataset_id=sft_data, method="lora", settings={**TINY, "max_steps": 1})
    sft = run_to_version(operations.submit_train(spec)[0])

    for i in range(8):  # the SFT version's polite answer beats the base's noise, most of the time
        prompt = f"Question {i}: what about the fox?"
        ours, theirs = answer(base, sft.id, prompt, "The answer is positive."), answer(base, None, prompt, f"dog {i} quick")
        votes.record(*((ours, theirs) if i % 2 else (theirs, ours)), "a" if i % 2 else "b", blind=True)
        if i == 7:
            votes.record(ours, theirs, "b")  # a change of mind on the last prompt: the base's answer wins it
    out = votes.train_dpo(settings=TINY)
    assert out["from_version"] == sft.id and out["pairs"] == 8
    assert out["preferred"]["why"].startswith(f"#{sft.id} {sft.name} won 7 of the 8 decisive votes")

    version = run_to_version(operations_job(out["job"]["id"]))
    assert version.parent_id == sft.id and version.config["objective"] == "dpo"
    assert version.dataset_id == out["dataset_id"] and version.metrics["steps"] == 2
    with session_scope() as db:  # DPO's own curves, written at each logging step
        names = set(db.scalars(select(Metric.name).where(Metric.job_id == version.job_id)))
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= names


def operations_job(job_id: int):
    from models_db import Job

    with session_scope() as db:
        job = db.get(Job, job_id)
        db.expunge(job)
        return job
