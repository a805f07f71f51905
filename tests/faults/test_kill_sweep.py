"""A sweep survives a worker killed mid-trial: kill -9 the worker running a trial, a second worker reaps and
resumes that trial, the study is told its result, and the sweep asks and runs the next; it ends done with every
trial finished exactly once and its best trial the one with the lowest eval loss."""
import pytest

from tests.cli import wait_until
from tests.faults.conftest import alive, kill9

FAST = {"max_steps": "8", "save_steps": "2", "eval_steps": "4", "logging_steps": "1", "eval_split": "0",
        "per_device_train_batch_size": "4", "max_seq_length": "64", "r": "4"}


@pytest.mark.studio_env(STUDIO_LEASE_SECONDS="5")
def test_a_sweep_survives_a_worker_killed_mid_trial(services_studio):
    from models_db import Sweep, session_scope
    from studio import sweeps

    s = services_studio
    lost = s.start_worker()
    sweep_id = sweeps.create(model=s.model_id, dataset_id=s.dataset_id, method="lora", trials=2, parallel=1,
                             space=["learning_rate=loguniform:1e-4:1e-2"], pruner="none", settings=FAST)

    def first_job():
        trials = sweeps.sweep_json(sweep_id)["trials"]
        return trials and trials[0]["job_id"]
    job_id = wait_until(first_job, timeout=60, every=0.2)
    child = s.hold_after_checkpoint(job_id)  # mid-trial, however fast this machine is
    kill9(lost.pid)
    wait_until(lambda: not alive(child), timeout=10, every=0.1)
    s.start_worker()  # reaps the lost trial once its lease expires, resumes it, and runs the rest

    def done():
        with session_scope() as db:
            return db.get(Sweep, sweep_id).state == "done"
    wait_until(done, timeout=420, every=1)
    shown = sweeps.sweep_json(sweep_id)
    trials = shown["trials"]
    assert [t["state"] for t in trials] == ["succeeded"] * 2, trials
    killed = s.job(job_id)
    assert killed.attempt == 2 and killed.history[0]["outcome"] == "lost"  # resumed once, not restarted
    assert sorted(s.versions()) == sorted(t["job_id"] for t in trials)  # one version per trial, none twice
    assert shown["best"]["value"] == min(t["eval_loss"] for t in trials)
