"""GRPO through the real training job (TRL's GRPOTrainer): a qa data set registered, the job submitted as the CLI
does, claimed and run by ``worker.job_process.main`` here, from an SFT version, with the built-in rewards and a
reward model version trained here. Its reward curves are metrics, its sampled completions are rows, its version's
parent is the SFT version; bad input is refused before anything is queued, naming the row or the setting."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from models_db import Job, Metric, ModelVersion, session_scope
from models_db.schema import GrpoSample
from studio import operations
from studio.datasets import DatasetError
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.inprocess import run_to_version


def qa_rows(n: int) -> list[dict]:
    return [{"question": f"What is {i} plus {i % 3}?", "answer": f"{i} + {i % 3} = {i + i % 3}\n#### {i + i % 3}"}
            for i in range(n)]


def pair_rows(n: int) -> list[dict]:
    return [{"prompt": f"What is {i} plus 1?", "chosen": f"#### {i + 1}", "rejected": f"fox dog {i}"} for i in range(n)]


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
    qa: int


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
        write_instruction_jsonl(root / "sft.jsonl", n=16)
        sft, _, _ = operations.add_dataset(root / "sft.jsonl")
        pairs, _, _ = operations.add_dataset(write_jsonl(root / "pairs.jsonl", pair_rows(16)))
        qa, report, _ = operations.add_dataset(write_jsonl(root / "qa.jsonl", qa_rows(16)))
        assert qa.format == "qa" and report.valid_rows == 16
        yield Studio(root, llama, bert, sft.id, pairs.id, qa.id)
    torch.set_num_threads(threads)


FEW = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2, "eval_split": 0}
GRPO = {"num_generations": 4, "max_completion_length": 8}


def submit(studio: Studio, objective: str | None, *, method: str = "lora", dataset: int | None = None,
           model: int | None = None, parent: int | None = None, **settings) -> Job:
    spec = build_train_spec(model_id=model or studio.llama, dataset_id=dataset or studio.qa, method=method,
                            settings=settings, parent_version_id=parent, objective=objective)
    job, _ = operations.submit_train(spec)
    return job


def jobs_count() -> int:
    with session_scope() as db:
        return db.scalar(select(func.count(Job.id)))


@pytest.fixture(scope="module")
def versions(studio):
    """An SFT version and a reward model version (one step each): GRPO's start and one of its rewards."""
    one = {**FEW, "max_steps": 1, "save_steps": 1}
    sft = run_to_version(submit(studio, None, dataset=studio.sft_data, **one))
    scorer = run_to_version(submit(studio, "reward", dataset=studio.pairs, **one))
    assert scorer.config["objective"] == "reward"
    return sft, scorer


def test_grpo_from_an_sft_version_records_its_rewards_and_samples(studio, versions):
    sft, scorer = versions
    job = submit(studio, None, parent=sft.id, **{**FEW, "max_steps": 3, "eval_split": 0.25, "eval_steps": 3},
                 **GRPO, reward=f"numeric_match,format:0.5,length=4:0.5,regex:\\d{{1,3}}:0.2,reward_model={scorer.id}")
    assert job.config["objective"] == "grpo" and job.config["packing"] is False  # implied by the qa data set
    version = run_to_version(job)
    assert version.parent_id == sft.id and version.config["objective"] == "grpo"
    assert version.config["objective_params"]["reward"].startswith("numeric_match,format:0.5")
    m = version.metrics
    assert m["steps"] == 3 and m["rows"]["eval_rows"] == 4 and "eval_reward" in m, m
    rewards = ("numeric_match", "format", "length", "regex", "reward_model")
    with session_scope() as db:
        names = set(db.scalars(select(Metric.name).where(Metric.job_id == version.job_id)))
        samples = db.scalars(select(GrpoSample).where(GrpoSample.job_id == version.job_id)).all()
    assert {"reward", "reward_std", "completions/mean_length", "eval_reward",
            *(f"rewards/{r}/mean" for r in rewards)} <= names, names
    assert samples and {s.step for s in samples} == {1, 2, 3}  # a few per logging step
    for s in samples:
        assert set(s.rewards) == set(rewards) and s.prompt.startswith("What is") and s.reference.isdigit()
        assert s.rewards["numeric_match"] in (0.0, 1.0) and -1.0 <= s.rewards["length"] <= 0.0
        weighted = (s.rewards["numeric_match"] + 0.5 * s.rewards["format"] + 0.5 * s.rewards["length"]
                    + 0.2 * s.rewards["regex"] + s.rewards["reward_model"])
        assert s.reward == pytest.approx(weighted, abs=1e-5)
    assert len({s.prompt for s in samples if s.step == 1}) == 1  # one prompt's group: its spread

    import gradio as gr

    from studio.tabs import jobs  # the Jobs tab's table under the charts: newest first, redrawn only when new
    table, cache = jobs.samples_poll(version.job_id, None)
    assert table.visible and len(jobs.sample_rows(version.job_id)) == len(samples) <= jobs.SAMPLES_SHOWN
    assert jobs.sample_rows(version.job_id)[0][0] == 3 and "numeric_match" in jobs.sample_rows(version.job_id)[0][4]
    assert jobs.samples_poll(version.job_id, cache)[0] == gr.skip()
    assert not jobs.samples_poll(sft.job_id, cache)[0].visible  # a job without samples: no table


def test_rloo_trains_against_a_frozen_copy_of_the_starting_adapter(studio):
    version = run_to_version(submit(studio, "rloo", **FEW, **GRPO, reward="numeric_match,length=4"))
    assert version.config["objective"] == "rloo" and version.config["objective_params"]["beta"] == 0.05
    with session_scope() as db:
        names = set(db.scalars(select(Metric.name).where(Metric.job_id == version.job_id)))
        assert db.scalar(select(func.count(GrpoSample.id)).where(GrpoSample.job_id == version.job_id)) > 0
    assert {"reward", "kl", "rewards/numeric_match/mean", "rewards/length/mean"} <= names, names
    saved = studio.root / "home" / version.artifacts["adapter"]
    assert (saved / "adapter_model.safetensors").is_file() and not (saved / "ref").exists()  # TRL's reference copy


def test_bad_grpo_input_is_refused_before_anything_is_queued(studio, versions):
    sft, scorer = versions
    before = jobs_count()
    with pytest.raises(SpecError, match=r"grpo: unknown reward 'numeric'. Use a comma list of numeric_match"):
        submit(studio, "grpo", reward="numeric")
    with pytest.raises(SpecError, match=r"grpo: reward 'format' has weight 0: give a weight between"):
        submit(studio, "grpo", reward="numeric_match,format:0")
    with pytest.raises(SpecError, match=r"grpo: regex '\(\[a-z\]' does not compile"):
        submit(studio, "grpo", reward="regex:([a-z]")
    with pytest.raises(SpecError, match=rf"reward_model={sft.id}: version {sft.id} .* objective sft, not a reward "
                                        "model. Give a version trained with --objective reward"):
        submit(studio, "grpo", reward=f"reward_model={sft.id}")
    with pytest.raises(SpecError, match=r"reward_model=999: version 999 does not exist"):
        submit(studio, "grpo", reward="reward_model=999")
    with pytest.raises(SpecError, match=r"per_device_train_batch_size x gradient_accumulation_steps is 4, not a "
                                        r"multiple of num_generations \(8\).*--set per_device_train_batch_size=8"):
        submit(studio, "grpo", num_generations=8, per_device_train_batch_size=4)
    with pytest.raises(SpecError, match=r"grpo with beta 0.1 .* only one adapter. Set --set beta=0"):
        submit(studio, "grpo", method="adalora", beta=0.1)
    with pytest.raises(SpecError, match=r"tiny-bert is an encoder \(bert\).*grpo trains a model that writes answers"):
        submit(studio, "grpo", model=studio.bert)
    with pytest.raises(SpecError, match=rf"version {scorer.id} was trained for seq_cls and cannot be continued as "
                                        "causal_lm"):
        submit(studio, "grpo", parent=scorer.id)  # a classifier (here the reward model) is no policy
    with pytest.raises(SpecError, match=rf"dataset {studio.pairs} is preference data; GRPO \(objective grpo\) takes "
                                        r"qa data.*Train it with objective dpo"):
        submit(studio, "grpo", dataset=studio.pairs)
    with pytest.raises(SpecError, match=rf"dataset {studio.sft_data} is instruction data; GRPO .* registers as qa "
                                        "with --format qa"):
        submit(studio, "grpo", dataset=studio.sft_data)
    assert jobs_count() == before
    # a qa set whose row has no reference answer is refused at intake, naming the row
    rows = qa_rows(4)
    rows[2]["answer"] = "the sum of the two"
    with pytest.raises(DatasetError, match=r"4 rows, 1 bad: 1 no extractable final answer \(row 3\)"):
        operations.add_dataset(write_jsonl(studio.root / "no_answer.jsonl", rows), format="qa")
    rows[2]["answer"] = ""
    with pytest.raises(DatasetError, match=r"4 rows, 1 bad: 1 .*\(row 3\)"):
        operations.add_dataset(write_jsonl(studio.root / "empty_answer.jsonl", rows), format="qa")
    with session_scope() as db:
        assert db.scalar(select(func.count(ModelVersion.id))) == 4  # sft, the reward model, grpo, rloo: no more


def test_the_reward_functions_record_one_group_per_batch_and_a_backtracking_pattern_scores_zero():
    import time

    from studio.objectives.rewards import parse
    from worker.rewards import build

    funcs, recorder = build(parse("numeric_match,regex:(a+)+$:0.5,length=2", 16), cuda=False)
    assert [f.__name__ for f in funcs] == ["numeric_match", "regex", "length"]  # TRL's curve names
    prompts = [[{"role": "user", "content": "What is 2 plus 2?"}]] * 2 + [[{"role": "user", "content": "1 plus 1?"}]] * 2
    completions = [[{"role": "assistant", "content": text}] for text in ("#### 4", "a" * 40 + "b", "2", "aaa")]
    ids = [[1], [1, 2, 3, 4], [1], [1, 2]]
    started = time.monotonic()
    values = [f(prompts=prompts, completions=completions, completion_ids=ids, answer=["4", "4", "2", "2"])
              for f in funcs]
    assert values == [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, -1.0, 0.0, 0.0]]
    assert time.monotonic() - started < 2  # catastrophic backtracking is cut off by the regex time limit
    assert recorder.take(4) == [  # the first prompt's group, every reward's value, once
        {"prompt": "What is 2 plus 2?", "completion": "#### 4", "reference": "4",
         "rewards": {"numeric_match": 1.0, "regex": 0.0, "length": 0.0}},
        {"prompt": "What is 2 plus 2?", "completion": "a" * 40 + "b", "reference": "4",
         "rewards": {"numeric_match": 0.0, "regex": 0.0, "length": -1.0}}]
    assert recorder.take(4) == []
