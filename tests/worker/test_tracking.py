"""Experiment trackers (worker/tracking.py): a real tiny training job, run as a worker runs it, is one run in a real
local MLflow store (SQLite) and one Weights & Biases offline run, each named after the job, with the parameters,
the loss at every logging step, the final figures and the tags (data set, method, objective, version); the job
page links to them. A tracker that cannot be reached never fails the job: it says so. Malformed settings get a
clear message (studio/trackers.py)."""
from __future__ import annotations

import pytest

from models_db import Job, session_scope
from studio import operations, trackers
from studio.jobspec import build_train_spec
from studio.tabs.job_views import status_html
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.inprocess import run_to_version
from tests.tiny import register_tiny_base

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (pip install -e '.[test]') runs this file")
wandb = pytest.importorskip("wandb", reason="the wandb extra (pip install -e '.[test]') runs this file")

STEPS = 4
SETTINGS = {"max_steps": STEPS, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_split": 0.25,
            "eval_steps": 2, "r": 4}


@pytest.fixture
def studio(tmp_path, tiny_llama_dir, monkeypatch):
    """An embedded studio with the tiny base and an instruction data set; yields a function that trains one job."""
    from models_db.migrate import upgrade

    with backend_env("embedded", tmp_path / "home") as env, in_process(monkeypatch, env):
        upgrade()
        model_id = register_tiny_base(tiny_llama_dir)
        write_instruction_jsonl(tmp_path / "pairs.jsonl", n=24)
        dataset, _, _ = operations.add_dataset(tmp_path / "pairs.jsonl")

        def submit(**overrides) -> Job:
            job, _ = operations.submit_train(build_train_spec(model_id=model_id, dataset_id=dataset.id,
                                                              method="lora", settings={**SETTINGS, **overrides}))
            return job

        def train(job: Job | None = None, **overrides):
            version = run_to_version(job or submit(**overrides))
            with session_scope() as db:
                row = db.get(Job, version.job_id)
                db.expunge(row)
            return row, version, dataset

        yield train, submit


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One local MLflow store for the file (creating its tables takes seconds); each test its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def use(monkeypatch, **env):
    from studio.settings import get_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def test_a_job_is_one_mlflow_run_and_one_wandb_offline_run_with_its_curve_figures_and_tags(studio, store,
                                                                                         monkeypatch):
    train, _ = studio
    uri = store
    use(monkeypatch, STUDIO_MLFLOW_TRACKING_URI=uri, STUDIO_MLFLOW_UI_URL="http://mlflow.example:5000",
        STUDIO_WANDB_PROJECT="studio-tests", WANDB_MODE="offline", WANDB_SILENT="true")
    job, version, dataset = train()

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("finetune-studio")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == [f"job-{job.id}"]  # exactly one run per job, named after it
    run = runs[0]
    assert run.info.status == "FINISHED"
    # parameters: the Trainer's arguments (its integration) and the method's own (the studio's)
    assert float(run.data.params["learning_rate"]) > 0 and run.data.params["max_steps"] == str(STEPS)
    assert run.data.params["method.r"] == "4"
    # the loss at every logging step, the eval loss at every evaluation
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, STEPS + 1))
    assert {m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")} >= {2, 4}
    # the version's final figures
    metrics = run.data.metrics
    assert metrics["final/train_loss"] == pytest.approx(version.metrics["train_loss"])
    assert metrics["final/eval_loss"] == pytest.approx(version.metrics["eval_loss"])
    assert metrics["final/peak_memory_gb"] > 0
    tags = run.data.tags
    assert (tags["dataset"], tags["method"], tags["objective"]) == (dataset.name, "lora", "sft")
    assert (tags["version"], tags["version_name"], tags["studio.job_id"]) == (str(version.id), version.name, str(job.id))

    # W&B offline: the run's folder under the job's holds the same curve, the figures and the tags
    note = job.history[-1]["trackers"]
    assert note["mlflow"]["run_id"] == run.info.run_id
    from worker.tracking import read_offline_run

    offline = read_offline_run(note["wandb"]["dir"])
    assert offline["name"] == f"job-{job.id}"
    steps = [row["train/global_step"] for row in offline["history"] if "train/loss" in row]
    assert steps == list(range(1, STEPS + 1))
    assert offline["summary"]["final/train_loss"] == pytest.approx(version.metrics["train_loss"])
    assert {"method:lora", "objective:sft", f"dataset:{dataset.name}", f"version:{version.id}"} <= set(offline["tags"])

    # the job page links to both
    page = status_html(job)
    assert f'href="http://mlflow.example:5000/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"' in page
    assert note["wandb"]["dir"] in page and "wandb sync" in page


def test_an_unreachable_tracker_never_fails_the_job_and_it_says_so(studio, monkeypatch, capfd):
    train, _ = studio
    use(monkeypatch, STUDIO_MLFLOW_TRACKING_URI="http://127.0.0.1:9", STUDIO_TRACKER_TIMEOUT_SECONDS="1",
        STUDIO_WANDB_PROJECT="studio-tests", WANDB_MODE="online", WANDB_BASE_URL="http://127.0.0.1:9")
    job, version, _ = train(max_steps=2, eval_split=0.0)  # succeeded (run_to_version asserts it): a version
    assert version.metrics["steps"] == 2
    log = capfd.readouterr().out
    assert "MLflow: STUDIO_MLFLOW_TRACKING_URI='http://127.0.0.1:9' is unreachable" in log
    assert "W&B: W&B at http://127.0.0.1:9 is unreachable" in log and "training without it" in log
    page = status_html(job)
    assert "MLflow: <b>not tracked</b>" in page and "W&amp;B: <b>not tracked</b>" in page


def test_malformed_or_missing_stores_get_a_clear_message(tmp_path):
    assert trackers.mlflow_problem(f"sqlite:///{tmp_path}/m.db", 1) is None
    missing = trackers.mlflow_problem(f"sqlite:///{tmp_path}/nowhere/m.db", 1)
    assert f"the folder {tmp_path}/nowhere does not exist" in missing
    for bad in ("mlflow.db", "htp://host:5000", "sqlite://", "http://:5000", "http://host:port"):
        problem = trackers.mlflow_problem(bad, 1)
        assert problem and f"STUDIO_MLFLOW_TRACKING_URI={bad!r}" in problem and "sqlite:///" in problem, bad
    # the same checks, for a warning at submit
    from studio.settings import Settings

    assert trackers.problems(Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")) == []
    (line,) = trackers.problems(Settings(mlflow_tracking_uri="http://127.0.0.1:9", tracker_timeout_seconds=1))
    assert "is unreachable (127.0.0.1:9" in line and line.endswith("the job trains without it")
    assert trackers.mlflow_run_url("sqlite:////x/m.db", None, "1", "abc") is None  # a local store nobody serves
    assert trackers.mlflow_run_url("http://h:5000/", None, "1", "abc") == "http://h:5000/#/experiments/1/runs/abc"


def test_a_retried_job_logs_into_its_first_run_and_a_failed_job_ends_its_run_failed(studio, store, monkeypatch):
    from models_db import jobs as jobq
    from worker import job_process
    from worker.recipes import common

    train, submit = studio
    use(monkeypatch, STUDIO_MLFLOW_TRACKING_URI=store, STUDIO_MLFLOW_EXPERIMENT="retries")
    real_fit = common.fit

    def lost(*args, **kwargs):  # the worker is lost after the run opened, before training
        raise jobq.StaleFence("the claim moved on")

    job = submit(max_steps=2, eval_split=0.0)
    monkeypatch.setattr(common, "fit", lost)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 3
    with session_scope() as db:  # the reaper re-queues it; the next attempt resumes the run
        assert jobq.finish(db, claim, "queued", message="worker lost")
    monkeypatch.setattr(common, "fit", real_fit)
    job, version, _ = train(job)
    assert job.attempt == 2
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("retries").experiment_id
    (run,) = client.search_runs([experiment])  # one run for both attempts
    assert run.info.run_name == f"job-{job.id}" and run.info.status == "FINISHED"
    assert run.data.tags["version"] == str(version.id) and run.data.tags["outcome"] == "succeeded"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert job.history[0]["trackers"]["mlflow"]["run_id"] == job.history[1]["trackers"]["mlflow"]["run_id"]

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is gone")

    failing = submit(max_steps=2, eval_split=0.0)
    monkeypatch.setattr(common, "fit", broken)
    with session_scope() as db:
        claim = jobq.claim(db, failing.id, "test-worker", lease_seconds=600)
    assert job_process.main(failing.id, claim.fence) == 1
    (run,) = client.search_runs([experiment], filter_string=f"tags.`studio.job_id` = '{failing.id}'")
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed" and "version" not in run.data.tags


def test_a_sweeps_trial_is_tagged_with_its_sweep_and_grouped():
    from types import SimpleNamespace

    from worker.tracking import run_tags

    spec = SimpleNamespace(method="lora", objective=None, task="causal_lm", parent_version_id=None)
    job = SimpleNamespace(spec=spec, dataset=SimpleNamespace(name="pairs", id=3), base=SimpleNamespace(name="tiny"))
    tags = run_tags(Job(id=7, config={"sweep_id": 2, "trial_number": 5}), job)
    assert tags == {"studio.job_id": "7", "dataset": "pairs", "dataset_id": "3", "method": "lora", "objective": "sft",
                    "base_model": "tiny", "sweep": "2", "trial": "5"}
    assert "sweep" not in run_tags(Job(id=8, config={}), job)
