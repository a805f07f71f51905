"""Preference objectives through the real training job (DPO, KTO, ORPO, SimPO, reward models on TRL): data sets
registered, the job submitted as the CLI does, claimed and run by ``worker.job_process.main`` here. DPO from an
SFT version learns an easy preference on held-out pairs; the others train a few steps; bad input is refused
before anything is queued, naming the row or the setting."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from models_db import Job, Metric, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import evaluations, operations, versions
from studio.datasets import DatasetError
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.inprocess import run_to_version
from worker import job_process

TOPICS = ["the fox", "the dog", "France", "autumn", "a haiku", "the world", "Paris", "the question"]
NOISE = ["quick brown lazy", "jumps over dog", "capital of France", "leaves falling slowly", "hello world bonjour",
         "label text neutral", "input output response", "translate to French"]


def pairs(n: int) -> list[dict]:
    """Easy to prefer: the chosen answer is always the same polite sentence, the rejected one words from the
    tokenizer's corpus in another order each time; the prompts vary. Every row is unique."""
    return [{"prompt": f"Question {i}: what about {TOPICS[i % len(TOPICS)]}?",
             "chosen": "The answer is positive.",
             "rejected": f"{NOISE[i % len(NOISE)]} {NOISE[(i // len(NOISE) + i + 3) % len(NOISE)]} {i}"}
            for i in range(n)]


def feedback(n: int) -> list[dict]:
    return [{"prompt": row["prompt"], "completion": row["chosen"] if i % 2 else row["rejected"], "label": bool(i % 2)}
            for i, row in enumerate(pairs(n))]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class Studio:
    root: Path
    llama: int
    bert: int
    sft_data: int
    pairs: int
    feedback: int


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir, tiny_bert_dir):
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("studio")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from intra-op threads, which crawl on a busy machine
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        llama, bert = register(tiny_llama_dir, "tiny-llama")[0], register(tiny_bert_dir, "tiny-bert")[0]
        write_instruction_jsonl(root / "sft.jsonl")
        sft, _, _ = operations.add_dataset(root / "sft.jsonl")
        pref, report, _ = operations.add_dataset(write_jsonl(root / "pairs.jsonl", pairs(64)))
        assert pref.format == "preference" and report.valid_rows == 64
        kto, _, _ = operations.add_dataset(write_jsonl(root / "feedback.jsonl", feedback(32)))
        assert kto.format == "feedback" and kto.stats["feedback"] == {"desirable": 16, "undesirable": 16}
        yield Studio(root, llama, bert, sft.id, pref.id, kto.id)
    torch.set_num_threads(threads)


FEW = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_steps": 3, "save_steps": 3,
       "eval_split": 0.25}


def submit(studio: Studio, objective: str | None, *, method: str = "lora", dataset: int | None = None,
           model: int | None = None, parent: int | None = None, **settings) -> Job:
    spec = build_train_spec(model_id=model or studio.llama, dataset_id=dataset or studio.pairs, method=method,
                            settings=settings, parent_version_id=parent, objective=objective)
    job, _ = operations.submit_train(spec)
    return job


run = run_to_version  # claim the job and run it here, as a worker's job process would


def metric_names(version: ModelVersion) -> set[str]:
    with session_scope() as db:
        return set(db.scalars(select(Metric.name).where(Metric.job_id == version.job_id)))


def jobs_count() -> int:
    with session_scope() as db:
        return db.scalar(select(func.count(Job.id)))


# ------------------------------------------------------------------------------ DPO learns the preference

def test_dpo_from_an_sft_version_learns_the_preference(studio):
    sft = run(submit(studio, None, dataset=studio.sft_data, max_steps=4, per_device_train_batch_size=8))
    assert sft.config["objective"] == "sft" and sft.config["task"] == "causal_lm"  # implied by the data set

    job = submit(studio, None, parent=sft.id, max_steps=24, per_device_train_batch_size=8, learning_rate=5e-3,
                 eval_split=0.25, eval_steps=12, logging_steps=4, save_steps=12)
    assert job.config["objective"] == "dpo" and job.config["packing"] is False  # implied by the preference data
    version = run(job)
    m = version.metrics
    assert version.parent_id == sft.id and version.config["objective"] == "dpo"
    graph = versions.lineage_mermaid(version.id)  # the version graph names the objective on each edge
    assert f'V{sft.id} -- "dpo" --> V{version.id}' in graph and f'-- "sft" --> V{sft.id}' in graph
    compared = {m["key"]: m["values"] for m in versions.compare([sft.id, version.id])["metrics"]}
    assert compared["eval_rewards/accuracies"] == [None, m["eval_rewards/accuracies"]]  # side by side, SFT has none
    assert version.config["objective_params"] == {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0,
                                                  "precompute_reference": False}
    assert m["rows"]["eval_rows"] == 16 and m["steps"] == 24
    # held out: well above chance (0.5), and the chosen answers' reward above the rejected ones'
    assert m["eval_rewards/accuracies"] >= 0.9 and m["eval_rewards/margins"] > 0, m
    assert {"loss", "eval_loss", "rewards/margins", "rewards/accuracies", "eval_rewards/margins"} <= \
        metric_names(version)  # curves written to the database at each logging step
    saved = studio.root / "home" / version.artifacts["adapter"]
    assert (saved / "adapter_model.safetensors").is_file()
    assert not (saved / "ref").exists()  # TRL's reference copy of the adapter is not part of the version

    # pinned for the base, the pairs measure the DPO version beside its SFT parent and the base: how often each
    # scores the chosen answer above the rejected one (log-likelihood), in one comparison beyond noise
    from studio import benchmarks, evidence
    from tests.worker.test_evaluate_combine import run as run_job

    with session_scope() as db:
        benchmarks.pin(db, studio.llama, studio.pairs)
    for target in ({"version_id": version.id}, {"version_id": sft.id}, {"base_model_id": studio.llama}):
        run_job(evaluations.submit_evaluate(target.get("version_id"), studio.pairs,
                                            base_model_id=target.get("base_model_id"))[0].id)
    with session_scope() as db:
        rows = {key: evaluations.find(db, studio.pairs, **{key[0]: key[1]}).metrics
                for key in (("version_id", version.id), ("version_id", sft.id), ("base_model_id", studio.llama))}
        examples = evaluations.find(db, studio.pairs, version_id=version.id).examples
    dpo_fig, sft_fig, base_fig = rows.values()
    assert dpo_fig["pair_accuracy"] >= 0.9 and dpo_fig["pair_margin"] > sft_fig["pair_margin"] > base_fig["pair_margin"]
    assert {"pair_accuracy", "pair_accuracy_stderr", "pair_margin"} <= set(base_fig)
    assert len(examples) == 64 and sum(e["correct"] for e in examples) == round(dpo_fig["pair_accuracy"] * 64)
    against = evidence.comparison(version.id)["vs_parent"]["datasets"]
    pair = next(d for d in against if d["dataset_id"] == studio.pairs)
    margin = next(m for m in pair["measures"] if m["key"] == "pair_margin")
    assert margin["better"] and margin["delta"] == pytest.approx(dpo_fig["pair_margin"] - sft_fig["pair_margin"])
    assert pair["pinned"] and {m["key"] for m in pair["measures"]} >= {"pair_accuracy", "pair_margin"}


# ------------------------------------------------------------------------------ the others train a few steps

@pytest.mark.parametrize("objective, method, dataset, figure", [
    ("kto", "lora", "feedback", "eval_rewards/margins"),
    ("kto", "full", "pairs", "eval_kl"),  # pairs unpaired into rated answers; no adapter: a precomputed reference
    ("orpo", "lora", "pairs", "eval_rewards/accuracies"),
    ("simpo", "lora", "pairs", "eval_rewards/margins"),
    ("reward", "lora", "pairs", "eval_accuracy"),
])
def test_each_objective_trains_a_few_steps_through_the_job(studio, objective, method, dataset, figure):
    version = run(submit(studio, objective, method=method, dataset=getattr(studio, dataset), **FEW))
    assert version.config["objective"] == objective and version.metrics["steps"] == 3
    assert figure in version.metrics and "loss" in metric_names(version)


def test_a_reward_model_is_a_one_output_classifier(studio):
    from tests.worker.test_evaluate_combine import run as run_job

    version = run(submit(studio, "reward", **FEW))
    assert version.config["task"] == "seq_cls" and version.config["labels"] == ["reward"]
    assert {"accuracy", "margin", "eval_accuracy"} <= metric_names(version)
    # evaluated on preference pairs: how often its score of the chosen answer is the higher one
    run_job(evaluations.submit_evaluate(version.id, studio.pairs)[0].id)
    with session_scope() as db:
        row = evaluations.find(db, studio.pairs, version_id=version.id)
        assert 0 <= row.metrics["pair_accuracy"] <= 1 and len(row.examples) == 64
        assert all(e["correct"] == (e["chosen"] > e["rejected"]) for e in row.examples)


# ------------------------------------------------------------------------------ bad input, before the queue

def datasets_count() -> int:
    from models_db import Dataset

    with session_scope() as db:
        return db.scalar(select(func.count(Dataset.id)))


def test_bad_preference_files_are_refused_row_by_row_and_nothing_is_registered(studio):
    before = datasets_count()
    bad = [*pairs(6), {"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "q2", "chosen": "a"}]
    with pytest.raises(DatasetError, match=r"8 rows, 2 bad: 1 identical pair \(row 7\), 1 missing rejected \(row 8\)"
                       ):
        operations.add_dataset(write_jsonl(studio.root / "bad.jsonl", bad))
    labels = [*feedback(4), {"prompt": "q", "completion": "a", "label": "good"}]
    with pytest.raises(DatasetError, match=r"5 rows, 1 bad: 1 wrong type in label \(row 5\)"):
        operations.add_dataset(write_jsonl(studio.root / "badkto.jsonl", labels))  # the row's message: intake tests
    assert datasets_count() == before


def test_an_objective_on_data_of_another_format_is_refused_before_the_queue(studio, capsys):
    from studio.cli import main

    before = jobs_count()
    with pytest.raises(SpecError, match=rf"dataset {studio.sft_data} is instruction data; DPO \(objective dpo\) "
                                        r"takes preference data \(prompt, chosen, rejected.*Train a causal LM on it "
                                        "with objective sft"):
        submit(studio, "dpo", dataset=studio.sft_data)
    with pytest.raises(SpecError, match=rf"dataset {studio.pairs} is preference data; causal-LM training \(objective "
                                        r"sft, task causal_lm\) takes instruction, chat or text. Train it with "
                                        "objective dpo"):
        submit(studio, "sft")
    with pytest.raises(SystemExit) as exit_:  # the CLI says the same, on stderr
        main(["train", "--model", "tiny-llama", "--dataset", str(studio.sft_data), "--objective", "dpo"])
    assert exit_.value.code == 2 and "DPO (objective dpo) takes preference data" in capsys.readouterr().err
    assert jobs_count() == before


def test_settings_and_combinations_that_cannot_train_are_refused_naming_them(studio, capsys):
    from studio.cli import main

    before = jobs_count()
    with pytest.raises(SpecError, match=r"dpo: beta must be >= 0.001 \(got 0.0\). Set --set beta=0.001 or higher"):
        submit(studio, "dpo", beta="0")
    with pytest.raises(SpecError, match=r"dpo compares the policy with a frozen reference.*only one adapter"):
        submit(studio, "dpo", method="adalora")
    with pytest.raises(SpecError, match=r"tiny-bert is an encoder \(bert\): it scores text but cannot generate it"):
        submit(studio, "dpo", model=studio.bert)
    ups, _, _ = operations.add_dataset(write_jsonl(studio.root / "ups.jsonl", [r for r in feedback(8) if r["label"]]))
    with pytest.raises(SpecError, match=rf"dataset {ups.id} has no undesirable answers \(label false\) in its 4 rows"):
        submit(studio, "kto", dataset=ups.id)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "tiny-llama", "--dataset", str(studio.pairs), "--objective", "grpo"])
    assert exit_.value.code == 2 and "is preference data; GRPO (objective grpo) takes qa data" in capsys.readouterr().err
    assert jobs_count() == before


# ------------------------------------------------------------------------------ a lost attempt resumes

def adapter_weights(studio: Studio, version: ModelVersion, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(studio.root / "home" / version.artifacts["adapter"] / name)


@pytest.mark.parametrize("method, weights", [("lora", "adapter_model.safetensors"), ("full", "model.safetensors")])
def test_a_lost_dpo_attempt_resumes_from_its_checkpoint_against_the_same_reference(studio, monkeypatch, method,
                                                                                   weights, capsys):
    """The retry rebuilds the start, so the reference (the adapter's frozen starting state, or the log-probs
    precomputed from the starting weights) is the first attempt's, not the checkpoint's: the resumed run ends
    with the weights of an uninterrupted one."""
    from datetime import timedelta

    from models_db.schema import utcnow
    from worker.callbacks import StudioCallback

    settings = dict(max_steps=4, per_device_train_batch_size=8, learning_rate=5e-3, save_steps=2, eval_split=0.0,
                    logging_steps=1)
    whole = run(submit(studio, "dpo", method=method, **settings))
    job = submit(studio, "dpo", method=method, **settings)
    real = StudioCallback.on_step_end

    def lost_after_step_3(self, args, state, control, **kw):
        real(self, args, state, control, **kw)
        if state.global_step == 3:  # checkpoint-2 is complete: the worker vanishes here
            raise jobq.StaleFence("lost")
    monkeypatch.setattr(StudioCallback, "on_step_end", lost_after_step_3)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 3  # stopped quietly, the job still "running"
    monkeypatch.setattr(StudioCallback, "on_step_end", real)
    with session_scope() as db:  # its lease runs out: the reaper queues attempt 2
        assert jobq.reap_expired(db, now=utcnow() + timedelta(hours=1)) == [(job.id, "queued")]
    capsys.readouterr()
    resumed = run(job)
    assert "resuming from checkpoint-2" in capsys.readouterr().out
    with session_scope() as db:
        assert db.get(Job, job.id).attempt == 2
    got, want = adapter_weights(studio, resumed, weights), adapter_weights(studio, whole, weights)
    assert got.keys() == want.keys() and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5, msg=name)


# ------------------------------------------------------------------------------ through the queue

def test_dpo_through_the_cli_and_a_worker_process(tmp_path, tiny_llama_dir):
    """The queue path: `studio train --objective dpo --wait` with a real worker, whose job runs in its own
    process (bitsandbytes switched off, library messages quieted) and imports TRL there."""
    from tests.cli import Cli

    with backend_env("embedded", tmp_path / "home") as env:
        cli = Cli(env)
        cli.run("db", "upgrade")
        cli.json("models", "import", str(tiny_llama_dir), "--name", "tiny")
        data = write_jsonl(tmp_path / "pairs.jsonl", pairs(16))
        ds = cli.json("dataset", "add", str(data))["dataset"]
        assert ds["format"] == "preference"
        with cli.worker():
            job = cli.json("train", "--model", "tiny", "--dataset", str(ds["id"]), "--objective", "dpo",
                           "--set", "max_steps=2", "--set", "eval_split=0.25", "--set", "beta=0.2", "--wait")
        assert job["state"] == "succeeded", job["error"]
        version = cli.json("versions", "show", str(job["version_id"]))
        assert version["config"]["objective"] == "dpo" and version["config"]["objective_params"]["beta"] == 0.2
        assert "eval_rewards/accuracies" in version["metrics"] and "eval_rewards/margins" in version["metrics"]
