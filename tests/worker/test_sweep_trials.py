"""Sweeps through the real queue path: each trial a training job submitted by studio/sweeps/, claimed and run by
``worker.job_process.main`` here (as a worker's job process would), its end telling the study and asking for the
next trial; the study reloaded from the database after a simulated restart; a trial pruned at its first
evaluation ends ``pruned``. Tiny Llama, 2 steps per trial."""
from __future__ import annotations

import pytest
import torch

from models_db import Job, JobState, Sweep, reset_engine, session_scope
from models_db import jobs as jobq
from studio import operations, sweeps
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.tiny import register_tiny_base

FAST = {"max_steps": "2", "eval_split": "0.25", "eval_steps": "1", "logging_steps": "1", "save_steps": "2",
        "per_device_train_batch_size": "4", "max_seq_length": "64"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    from models_db.migrate import upgrade

    root = tmp_path_factory.mktemp("sweeps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        model = register_tiny_base(tiny_llama_dir)
        write_instruction_jsonl(root / "rows.jsonl", n=24)
        ds, _, _ = operations.add_dataset(root / "rows.jsonl")
        yield {"model": model, "dataset": ds.id, "root": root}
        sweeps.reset_storages()
    torch.set_num_threads(threads)


def queued_trials(sweep_id: int) -> list[int]:
    with session_scope() as db:
        return [j.id for j in sweeps._trial_jobs(db, sweep_id) if j.state == JobState.queued]


def run_job(job_id: int) -> None:
    """Claim the job and run its process here; its end advances the sweep (sweeps.after_job)."""
    from worker import job_process

    with session_scope() as db:
        claim = jobq.claim(db, job_id, "test-worker", lease_seconds=600)
    assert claim is not None
    assert job_process.main(job_id, claim.fence) == 0


def test_a_sweep_runs_its_trials_through_the_queue_and_survives_a_restart(studio):
    sweep_id = sweeps.create(model=studio["model"], dataset_id=studio["dataset"], method="lora", trials=3,
                             space=["learning_rate=loguniform:1e-4:1e-2", "r=choice:2,4"], pruner="none",
                             settings=FAST)
    seen = []
    while queued := queued_trials(sweep_id):
        assert len(queued) == 1  # no alive worker: one trial at a time, the next asked when it ends
        seen.append(queued[0])
        run_job(queued[0])
        if len(seen) == 2:  # a restart between trials: every cache gone, the study read back from the database
            sweeps.reset_storages()
            reset_engine()
    assert len(seen) == 3
    out = sweeps.sweep_json(sweep_id)
    assert out["state"] == "done" and [t["state"] for t in out["trials"]] == ["succeeded"] * 3
    values = [t["eval_loss"] for t in out["trials"]]
    assert all(isinstance(v, float) for v in values)
    assert out["best"]["value"] == min(values) and out["best"]["version_id"] is not None
    first = out["trials"][0]
    # the advised start came first (its settings inside the space; Optuna drew the rest)
    assert first["seeded_from"] == "advisor" and out["seed"]["params"].items() <= first["params"].items()
    with session_scope() as db:
        for t in out["trials"]:
            job = db.get(Job, t["job_id"])
            assert job.config["sweep_id"] == sweep_id and job.config["trial_number"] == t["number"]
            assert job.config["training"]["learning_rate"] == pytest.approx(t["params"]["learning_rate"])
            assert job.config["method_params"]["r"] == t["params"]["r"]
    # the stored study, loaded by Optuna itself from the studio's database, holds the same trials
    import optuna

    with session_scope() as db:
        name = db.get(Sweep, sweep_id).study_name
    loaded = optuna.load_study(study_name=name, storage=sweeps.storage())
    assert [t.value for t in loaded.trials] == values
    assert loaded.best_trial.number == out["best"]["number"]
    best = sweeps.promote_best(sweep_id)
    from studio import versions

    with session_scope() as db:
        assert "best" in versions.get(db, best["version_id"]).tags


def test_a_trial_worse_than_the_median_at_its_first_evaluation_ends_pruned(studio):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    sweep_id = sweeps.create(model=studio["model"], dataset_id=studio["dataset"], method="lora", trials=3,
                             space=["learning_rate=loguniform:1e-4:1e-2"], settings=FAST, seed_from_advisor=False)
    with session_scope() as db:
        sweep = db.get(Sweep, sweep_id)
        db.expunge(sweep)
    study = sweeps.study(sweep)
    for _ in range(2):  # two earlier trials that reached an eval loss of 0 at every step: any real loss is worse
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.0, params={"learning_rate": 1e-3},
                                     distributions={"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
                                     intermediate_values={1: 0.0, 2: 0.0}))
    (job_id,) = queued_trials(sweep_id)
    run_job(job_id)
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.state == "pruned" and job.error is None and "pruned at step 1" in job.message
        assert job.step <= 1 and not (job.result or {}).get("version_id")
    out = sweeps.sweep_json(sweep_id)
    trial = next(t for t in out["trials"] if t["job_id"] == job_id)
    assert trial["state"] == "pruned" and trial["value"] is None
    assert out["state"] == "done" and out["best"] is None or out["best"]["job_id"] != job_id
