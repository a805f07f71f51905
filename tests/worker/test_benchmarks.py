"""Benchmarks through the real jobs on tiny models: a multiple-choice file scored by lm-evaluation-harness
(acc matches an independent log-likelihood computation done here by hand; a version trained on the facts
answers them), a question/answer file by greedy generation and answer extraction, a base model evaluated as
it is, per-question results stored, and every new version carrying its comparison with its parent and base."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sqlalchemy import select

from models_db import Evaluation, Job, session_scope
from studio import benchmarks, evaluations, evidence, operations
from studio.datasets.benchmark_rows import final_answer
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from tests.worker.test_evaluate_combine import run

FACTS = [("What colour is the sky?", "blue"), ("What do cows drink?", "water"), ("Where is Paris?", "France"),
         ("How many legs has a dog?", "four"), ("What is ice?", "cold"), ("Which star is ours?", "the sun")]
CHOICES = ["blue", "water", "France", "four", "cold", "the sun"]
TRAIN = {"max_steps": 60, "learning_rate": 5e-3, "method": "full", "per_device_train_batch_size": 8, "logging_steps": 10,
         "eval_steps": 60, "save_steps": 60, "eval_split": 0.0}


@dataclass
class Studio:
    root: Path
    llama: int
    llama_dir: str
    facts: int  # instruction data: question -> answer
    mc: int  # the same facts as multiple choice
    qa: int  # arithmetic with #### answers


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        llama, llama_dir = register(tiny_llama_dir, "tiny-llama")
        facts = _rows(root / "facts.jsonl", [{"instruction": q, "output": a} for q, a in FACTS])
        mc = _rows(root / "mc.jsonl", [{"question": q, "choices": [a] + [c for c in CHOICES if c != a][:2],
                                        "answer": 0} for q, a in FACTS])
        qa = _rows(root / "qa.jsonl", [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
                                       for i in range(1, 5)])
        ids = [operations.add_dataset(p)[0].id for p in (facts, mc, qa)]
        yield Studio(root, llama, llama_dir, *ids)
    torch.set_num_threads(threads)


def stored(dataset_id: int, *, version_id: int | None = None, base_model_id: int | None = None) -> Evaluation:
    with session_scope() as db:
        row = evaluations.find(db, dataset_id, version_id=version_id, base_model_id=base_model_id)
        db.expunge(row)
        return row


def queued_evaluations() -> list[Job]:
    with session_scope() as db:
        jobs = list(db.scalars(select(Job).where(Job.kind == "evaluate", Job.state == "queued").order_by(Job.id)))
        db.expunge_all()
        return jobs


def independent_acc(model_dir: str, rows: list[dict]) -> list[int]:
    """The choice each question picks by log-likelihood, computed here without lm-eval: the question as the
    user's turn through the chat template, each choice as the assistant's reply, sum of its tokens' log-probs."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    picks = []
    for r in rows:
        context = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                          add_generation_prompt=True)
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in r["choices"]:
            whole = tok(context + choice, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx_ids):]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
            scores.append(sum(logits[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont)))
        picks.append(max(range(len(scores)), key=scores.__getitem__))
    return picks


def test_a_base_model_on_a_multiple_choice_file_matches_an_independent_log_likelihood_scoring(studio):
    job, _ = evaluations.submit_evaluate(None, studio.mc, base_model_id=studio.llama)
    done = run(job.id)
    assert "examples" not in done.result["evaluations"][0]  # per-question results live on the evaluation row
    row = stored(studio.mc, base_model_id=studio.llama)
    rows = [json.loads(line) for line in studio_path(studio.mc).read_text().splitlines()]
    picks = independent_acc(studio.llama_dir, rows)
    expected = sum(p == r["answer"] for p, r in zip(picks, rows)) / len(rows)
    assert row.metrics["acc"] == pytest.approx(expected)
    assert row.metrics["acc_stderr"] == pytest.approx((expected * (1 - expected) / (len(rows) - 1)) ** 0.5)
    assert "acc_norm" in row.metrics and "eval_loss" in row.metrics  # the loss on the same rows, beside
    assert [e["correct"] for e in row.examples] == [p == r["answer"] for p, r in zip(picks, rows)]
    assert [e["answer"][3:] for e in row.examples] == [r["choices"][p] for p, r in zip(picks, rows)]
    failed = benchmarks.examples_view(row.examples, failed_only=True)
    assert len(failed) == len(rows) - round(expected * len(rows)) and not any(e["correct"] for e in failed)


def studio_path(dataset_id: int) -> Path:
    from models_db import Dataset
    from studio.settings import get_settings

    with session_scope() as db:
        return get_settings().home_abs / db.get(Dataset, dataset_id).path


def test_qa_is_scored_by_greedy_generation_and_the_extracted_final_answer(studio):
    job, _ = evaluations.submit_evaluate(None, studio.qa, base_model_id=studio.llama)
    run(job.id)
    row = stored(studio.qa, base_model_id=studio.llama)
    assert set(row.metrics) >= {"exact_match", "exact_match_stderr", "eval_loss"}
    assert [e["target"] for e in row.examples] == ["2", "4", "6", "8"]
    for e in row.examples:  # the model's answer is what the extractor finds in its reply
        assert e["answer"] == (final_answer(e["reply"]) or "") and e["correct"] == (e["answer"] == e["target"])
    assert row.metrics["exact_match"] == sum(e["correct"] for e in row.examples) / 4


def train_on_the_facts(studio) -> int:
    """A version of the tiny base trained on the facts, through a job run here; its id."""
    settings = dict(TRAIN)
    spec = build_train_spec(model_id=studio.llama, dataset_id=studio.facts, method=settings.pop("method"),
                            settings=settings)
    job, _ = operations.submit_train(spec)
    return run(job.id).result["version_id"]


def test_a_version_trained_on_the_facts_answers_them_and_carries_its_comparison(studio):
    with session_scope() as db:
        assert benchmarks.pin(db, studio.llama, studio.mc) is True
        assert benchmarks.pin(db, studio.llama, studio.mc) is False
        known = evaluations.find(db, studio.mc, base_model_id=studio.llama) is not None
    if not known:  # the base's benchmark figures, as the first test leaves them
        run(evaluations.submit_evaluate(None, studio.mc, base_model_id=studio.llama)[0].id)
    version_id = train_on_the_facts(studio)
    configs = [j.config for j in queued_evaluations()]  # the version on its data and the pin; the base on its data
    assert {"version_id": version_id, "dataset_id": studio.mc} in configs
    assert {"base_model_id": studio.llama, "dataset_id": studio.facts} in configs
    assert {"base_model_id": studio.llama, "dataset_id": studio.mc} not in configs  # evaluated before
    before = evidence.comparison(version_id)
    assert before["vs_base"]["pending"]
    for job in queued_evaluations():
        run(job.id)
    mc = stored(studio.mc, version_id=version_id)
    assert mc.metrics["acc"] == 1.0, mc.examples  # it learnt the facts
    out = evidence.comparison(version_id)
    assert out["vs_parent"] is None  # trained from its base: the base is its parent
    bench = next(d for d in out["vs_base"]["datasets"] if d["dataset_id"] == studio.mc)
    acc = next(m for m in bench["measures"] if m["key"] == "acc")
    base_acc = stored(studio.mc, base_model_id=studio.llama).metrics["acc"]
    assert acc["delta"] == pytest.approx(1.0 - base_acc) and acc["better"] is True
    assert acc["beyond_noise"] == (acc["delta"] > 2 * acc["stderr"])
    assert bench["pinned"] is True


def test_bad_pairs_are_refused_before_the_queue(studio, tiny_bert_dir):
    from worker.importer import register

    bert, _ = register(tiny_bert_dir, "tiny-bert")
    with pytest.raises(SpecError, match="not a causal LM"):
        evaluations.submit_evaluate(None, studio.mc, base_model_id=bert)
    with session_scope() as db, pytest.raises(SpecError, match="not a causal LM"):
        benchmarks.pin(db, bert, studio.mc)


def test_the_cli_evaluates_pins_and_shows_the_comparison(studio, capsys, monkeypatch):
    from studio.cli import main, version_jobs

    def cli(*argv) -> dict:
        main([*argv, "--json"])
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the job ran here, printing too

    monkeypatch.setattr(version_jobs, "wait_for", lambda job_id, quiet=False: run(job_id))  # the worker, here
    out = cli("models", "evaluate", "tiny-llama", "--dataset", str(studio.mc), "--wait", "--examples")
    ev = out["evaluation"]
    assert ev["base_model_id"] == studio.llama and ev["version_id"] is None
    assert {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"} <= set(ev["metrics"])
    assert len(ev["examples"]) == len(FACTS) and ev["failed"] == sum(not e["correct"] for e in ev["examples"])
    assert cli("models", "pin-benchmark", "tiny-llama", "--dataset", str(studio.mc))["benchmarks"][0]["dataset_id"] \
        == studio.mc
    with session_scope() as db:
        version_id = db.scalar(select(Evaluation.version_id).where(Evaluation.version_id.is_not(None)))
    if version_id is None:  # run on its own: train the version the test above trains
        version_id = train_on_the_facts(studio)
    out = cli("versions", "evaluate", str(version_id), "--dataset", str(studio.mc), "--wait")
    assert out["evaluation"]["metrics"]["acc"] == 1.0 and "examples" not in out["evaluation"]
    assert out["evaluation"]["metrics"]["acc_stderr"] == 0.0  # lm-eval's sample stderr: sqrt(p(1-p)/(n-1))
    shown = cli("versions", "show", str(version_id))
    assert shown["vs_parent"] is None and shown["vs_base"]["base_model_id"] == studio.llama
    assert studio.mc in [d["dataset_id"] for d in shown["vs_base"]["datasets"]]
