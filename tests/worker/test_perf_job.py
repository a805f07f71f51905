"""A real training job (tiny Llama, LoRA, through worker.job_process as a worker runs it) records throughput
per logging step, system samples, TensorBoard files in its folder, and trains padding-free by default;
prompt-learning methods get packing switched off at submit."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models_db import Job, Metric, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import operations
from studio.jobspec import build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from worker import job_process, sysmon, tboard

STEPS = 4
PERF = {"step_time_s", "samples_per_s", "tokens_per_s", "tokens_seen", "peak_memory_gb"}


@pytest.fixture
def studio(tmp_path, tiny_llama_dir, monkeypatch):
    from models_db.migrate import upgrade
    from worker.importer import register

    with backend_env("embedded", tmp_path / "home") as env, in_process(monkeypatch, env) as settings:
        upgrade()
        model_id, _ = register(tiny_llama_dir, "tiny")
        write_instruction_jsonl(tmp_path / "pairs.jsonl")
        dataset, _, _ = operations.add_dataset(tmp_path / "pairs.jsonl")
        yield model_id, dataset.id, settings


def test_a_job_records_throughput_system_curves_and_tensorboard_and_packs_by_default(studio, monkeypatch, capfd):
    model_id, dataset_id, settings = studio
    monkeypatch.setattr(sysmon, "INTERVAL_S", 0.05)  # several samples in a run of a second or two
    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method="lora", settings={
        "max_steps": STEPS, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_split": 0.0})
    assert spec.packing is True  # the default for causal LM
    job, _ = operations.submit_train(spec)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        done = db.get(Job, job.id)
        assert done.state == "succeeded", done.error
        points = db.execute(select(Metric.step, Metric.name, Metric.value).where(Metric.job_id == job.id)).all()
        version = db.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
        assert version.config["packing"] is True
        m = version.metrics
    by_name: dict[str, list] = {}
    for step, name, value in points:
        by_name.setdefault(name, []).append((step, value))
    for name in PERF:  # every logging step
        assert [s for s, _ in by_name[name]] == list(range(1, STEPS + 1)), name
    assert all(v > 0 for name in PERF for _, v in by_name[name])
    assert {"sys_cpu_pct", "sys_ram_gb", "sys_ram_pct"} <= set(by_name)
    assert "mfu" not in by_name  # a CUDA figure
    # the run's summary: samples/s is steps x batch over the summed step times
    assert m["samples_per_s"] == pytest.approx(STEPS * 4 / (m["step_time_s"] * STEPS))
    assert m["train_tokens_per_s"] > 0 and m["tokens_seen"] == by_name["tokens_seen"][-1][1]
    # TensorBoard files in the job's folder carry the same losses
    events = tboard.read_scalars(settings.home_abs / "jobs" / str(job.id) / "tensorboard")
    assert [v for _, v in events["train/loss"]] == pytest.approx([v for _, v in sorted(by_name["loss"])])
    assert "perf/tokens_per_s" in events and "system/ram_pct" in events
    # on CPU the packed rows run through SDPA per example (worker/packed_attention.py), not a dense mask
    assert "fast path: packed rows attend per example" in capfd.readouterr().out


def test_prompt_learning_and_classification_are_not_packed(studio):
    model_id, dataset_id, _ = studio
    for method in ("prompt_tuning", "prefix_tuning", "p_tuning"):
        spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method,
                                settings={"packing": True})
        assert spec.packing is False, method
    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method="lora", settings={"packing": False})
    assert spec.packing is False


def test_submit_stores_packing_off_for_classification_and_prompt_learning(studio, tmp_path):
    """Through the real submit path (operations.submit_train): the job's stored config says what the worker
    will do, so a classifier or a prompt-learning method asked to pack is stored unpacked."""
    import json

    model_id, instruction_id, _ = studio
    rows = [{"text": f"{word} example {i}", "label": label} for i in range(8)
            for word, label in (("fine", "good"), ("awful", "bad"))]
    (tmp_path / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    classification, _, _ = operations.add_dataset(tmp_path / "cls.jsonl")
    asked = {"packing": True, "max_steps": 2}
    cases = [(classification.id, "lora", "seq_cls", False), (classification.id, "full", "seq_cls", False),
             (instruction_id, "prompt_tuning", "causal_lm", False), (instruction_id, "prefix_tuning", "causal_lm", False),
             (instruction_id, "p_tuning", "causal_lm", False), (instruction_id, "lora", "causal_lm", True)]
    for dataset_id, method, task, packed in cases:
        job, created = operations.submit_train(build_train_spec(model_id=model_id, dataset_id=dataset_id,
                                                              method=method, settings=asked))
        assert created
        with session_scope() as db:
            config = db.get(Job, job.id).config
        assert (config["task"], config["packing"]) == (task, packed), (method, task)


@pytest.mark.parametrize("save_steps, kept", [(STEPS, []), (STEPS // 2, [STEPS // 2])])
def test_no_checkpoint_at_the_last_step_but_the_version_is_saved(studio, save_steps, kept):
    """The Trainer's checkpoint at the last step duplicates the version saved right after it; the earlier
    ones stay (a retry resumes from them)."""
    from worker.checkpoints import complete_checkpoints

    model_id, dataset_id, settings = studio
    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method="lora", settings={
        "max_steps": STEPS, "save_steps": save_steps, "per_device_train_batch_size": 4, "eval_split": 0.0})
    job, _ = operations.submit_train(spec)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        assert db.get(Job, job.id).state == "succeeded"
        version = db.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
        assert version is not None and version.metrics["steps"] == STEPS
    folder = settings.home_abs / "jobs" / str(job.id) / "checkpoints"
    assert [int(p.name.split("-")[1]) for p in complete_checkpoints(folder)] == kept
    assert not (folder / f"checkpoint-{STEPS}").exists()
    assert (settings.home_abs / version.artifacts["adapter"] / "adapter_model.safetensors").is_file()
