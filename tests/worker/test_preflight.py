"""The measured pre-flight through the in-process queue on a tiny model: a few real steps of the advised
configuration report peak memory, tokens/s, step time and the ETA, register no version, leave no checkpoint, and
store the estimate beside the measurement; over a (pretend) small budget it measures smaller settings again."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from models_db import Job, ModelVersion, session_scope
from models_db import jobs as jobq
from models_db.schema import MemoryMeasurement
from studio import operations, preflight
from studio.advisor import advise
from studio.advisor.sources import studio_inputs
from studio.jobspec import SpecError
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from worker import job_process
from worker import preflight as worker_preflight


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("preflight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        model = register(tiny_llama_dir, "tiny-llama")[0]
        write_instruction_jsonl(root / "sft.jsonl", n=24)
        ds, _, _ = operations.add_dataset(root / "sft.jsonl")
        yield {"home": root / "home", "model": model, "dataset": ds.id}
    torch.set_num_threads(threads)


def advice_for(studio) -> dict:
    inputs, _ = studio_inputs(model=studio["model"], dataset=studio["dataset"], cpu_only=True, seq_len=32,
                              batch_size=4)
    return advise(inputs).to_json()


def run_job(job: Job) -> Job:
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        return db.get(Job, job.id)


def test_preflight_measures_and_leaves_nothing(studio):
    job = preflight.submit(advice_for(studio), studio["model"], studio["dataset"], steps=2, cost_per_hour=2.0)
    assert job.kind == "preflight"
    done = run_job(job)
    assert done.state == "succeeded", done.error
    st = preflight.status(done.id)
    m = st["measured"]
    assert m["peak_memory_kind"] == "cpu_rss" and 0.05 < m["peak_memory_gb"] < 8
    assert m["tokens_per_second"] > 0 and m["step_seconds"] > 0 and m["steps_measured"] == 2
    assert m["run_steps"] >= 1  # step_seconds is rounded to ms, eta_seconds to 0.1 s
    assert m["eta_seconds"] == pytest.approx(m["step_seconds"] * m["run_steps"], abs=0.1 + 0.0005 * m["run_steps"])
    assert m["cost"] == pytest.approx(m["eta_seconds"] / 3600 * 2.0, abs=0.01) and m["fits"]
    assert m["parts"]["before_training_gb"] <= m["parts"]["step_peak_gb"] and m["estimate_gb"] > 0
    assert "Measured" in preflight.describe(st) and "tokens/s" in preflight.describe(st)
    assert done.max_steps == 2 and done.step == 2  # progress as any training job reports it
    with session_scope() as db:
        assert db.scalar(select(func.count()).select_from(ModelVersion)) == 0
        rows = db.scalars(select(MemoryMeasurement).where(MemoryMeasurement.job_id == done.id)).all()
        assert [r.kind for r in rows] == ["preflight"] and rows[0].estimate_gb and rows[0].measured_parts
    jobdir = Path(studio["home"]) / "jobs" / str(done.id)
    assert not (jobdir / "checkpoints").exists()
    assert not (Path(studio["home"]) / "versions" / f"job-{done.id}").exists()


def test_preflight_over_budget_measures_smaller_settings(studio, monkeypatch):
    smaller = []

    def one_smaller(model_config, config, training, figures, budget, gpus):
        if smaller:
            return None
        smaller.append(dict(training, per_device_train_batch_size=1, gradient_accumulation_steps=4))
        return smaller[0]

    monkeypatch.setattr(worker_preflight, "shrink", one_smaller)
    job = preflight.submit(advice_for(studio), studio["model"], studio["dataset"], steps=1, budget_gb=0.001)
    done = run_job(job)
    assert done.state == "succeeded", done.error
    st = preflight.status(done.id)
    assert len(st["attempts"]) == 2 and done.result["shrunk"]
    assert st["measured"]["settings"]["micro_batch"] == 1 and st["measured"]["fits"] is False
    assert "does NOT fit" in preflight.describe(st) and "these fit" in preflight.describe(st)


def test_ladder_and_shrink_pick_what_fits(studio):
    training = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "gradient_checkpointing": False}
    rungs = worker_preflight.ladder(training)
    assert [(r["per_device_train_batch_size"], r["gradient_checkpointing"]) for r in rungs][:4] == \
        [(4, False), (2, False), (1, False), (8, True)]
    assert all(r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] >= 16 for r in rungs)
    import json

    from studio.advisor import jobcost
    from studio.jobspec import build_train_spec

    config = json.loads((Path(studio["home"]) / "models" / "tiny-llama" / "config.json").read_text())
    spec = build_train_spec(model_id=studio["model"], dataset_id=studio["dataset"], method="full",
                            settings={"max_seq_length": 2048, **training}).to_json()
    est = jobcost.job_estimate(config, spec, None)
    figures = {"peak_memory_gb": est["total_gb"] * 1.5, "estimate_gb": est["total_gb"], "peak_memory_kind": "cpu_rss"}
    # a pretend budget between what micro-batch 1 and micro-batch 8 would measure (1.5 x their estimates)
    small = jobcost.job_estimate(config, {**spec, "training": {**spec["training"], "per_device_train_batch_size": 2}})
    budget = small["total_gb"] * 1.5 + 1e-6
    picked = worker_preflight.shrink(config, spec, spec["training"], figures, budget, None)
    assert picked["per_device_train_batch_size"] == 2 and not picked["gradient_checkpointing"]
    assert worker_preflight.shrink(config, spec, spec["training"], figures, 0.01, None) is None


def test_preflight_refuses_bad_requests(studio):
    advice = advice_for(studio)
    with pytest.raises(SpecError, match="pick an imported model and a registered data set"):
        preflight.submit(advice, studio["model"], None)
    with pytest.raises(SpecError, match="1 to 50"):
        preflight.submit(advice, studio["model"], studio["dataset"], steps=0)
    with pytest.raises(SpecError, match="nothing fits"):
        preflight.submit({**advice, "method": None}, studio["model"], studio["dataset"])
    with pytest.raises(SpecError, match="positive"):
        preflight.submit(advice, studio["model"], studio["dataset"], budget_gb=-1)


def test_cli_advise_measure_json(studio, capsys, monkeypatch):
    """`studio advise --measure --json`: the advice plus ``measured``; the job runs here as a worker would."""
    import json

    from studio import cli
    from studio.cli import common

    monkeypatch.setattr(common, "wait_for", run_job_by_id)
    cli.main(["advise", "--model", str(studio["model"]), "--dataset", str(studio["dataset"]), "--cpu-only",
              "--seq-len", "32", "--batch-size", "2", "--measure", "--measure-steps", "1", "--json"])
    out = json.loads(capsys.readouterr().out)  # stdout is one JSON object: the bar went to stderr
    m = out["measured"]
    assert out["method"] and out["preflight_job_id"]
    assert {"peak_memory_gb", "tokens_per_second", "step_seconds", "eta_seconds"} <= set(m)
    assert m["peak_memory_gb"] > 0 and m["steps_measured"] == 1
    with pytest.raises(SystemExit):
        cli.main(["advise", "--params-b", "0.1", "--cpu-only", "--measure", "--json"])
    assert "pick an imported model and a registered data set" in capsys.readouterr().err


def run_job_by_id(job_id: int) -> Job:
    """What the worker does for ``wait_for``: run the job (its log to stderr, as it would be in the worker)."""
    import contextlib
    import sys

    with session_scope() as db:
        job = db.get(Job, job_id)
    with contextlib.redirect_stdout(sys.stderr):
        return run_job(job)


def test_a_training_job_stores_its_estimate_beside_the_measured_peak(studio):
    from studio.jobspec import build_train_spec
    from tests.inprocess import run_to_version

    spec = build_train_spec(model_id=studio["model"], dataset_id=studio["dataset"], method="lora",
                            settings={"max_steps": 1, "max_seq_length": 32, "eval_split": 0.0})
    job, _ = operations.submit_train(spec)
    version = run_to_version(job)
    with session_scope() as db:
        row = db.scalars(select(MemoryMeasurement).where(MemoryMeasurement.job_id == job.id)).one()
        assert (row.kind, row.method, row.device, row.measured_kind) == ("train", "lora", "cpu", "cpu_rss")
        assert row.estimate_gb == job.config["estimate"]["total_gb"] and row.measured_gb > 0
        assert set(row.measured_parts) >= {"before_training_gb", "step_peak_gb"} and "activations" in row.estimate_parts
    assert version.metrics["peak_memory_gb"] > 0


def test_advisor_tab_measure_and_poll(studio):
    import gradio as gr

    from studio.tabs import advisor

    kept = {**advice_for(studio), "model_id": studio["model"], "dataset_id": studio["dataset"]}
    note, job_id, timer = advisor.measure(kept, 1)
    assert f"job #{job_id}" in note and timer.active
    text, timer = advisor.poll_measure(job_id)
    assert "Measuring" in text and timer.active  # queued: progress until a worker has run it
    run_job_by_id(job_id)
    text, timer = advisor.poll_measure(job_id)
    assert "Measured" in text and "tokens/s" in text and not timer.active
    with pytest.raises(gr.Error, match="Ask for advice first"):
        advisor.measure(None, 1)
    with pytest.raises(gr.Error, match="pick an imported model"):
        advisor.measure({**kept, "dataset_id": None}, 1)
