"""kill -9 mid-DPO, on real Postgres and Redis with a real worker process: exactly one new attempt starts, it
resumes at the newest complete checkpoint against the same reference (the starting adapter, rebuilt the same
way), and the job ends with one version whose preference curves continue where the first attempt stopped."""
import json

from tests.faults.conftest import kill9


def test_kill9_mid_dpo_resumes_at_its_checkpoint_and_registers_one_version(services_studio):
    from models_db import Metric, ModelVersion, session_scope
    from studio import operations

    s = services_studio
    pairs = s.root / "prefs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}",
                                         "rejected": f"{2 * i + 1}"}) + "\n" for i in range(24)))
    prefs = operations.add_dataset(pairs)[0].id
    s.start_worker()
    job_id = s.submit(dataset_id=prefs, max_steps=12, save_steps=4)
    assert s.job(job_id).config["objective"] == "dpo"  # implied by the preference data

    pid = s.hold_after_checkpoint(job_id)
    kill9(pid)
    resume_at = max(s.complete_steps(job_id))
    job = s.wait_state(job_id, "succeeded", timeout=240)
    assert job.attempt == 2, job.history  # exactly one new attempt
    first, second = job.history
    assert first["outcome"] == "interrupted" and "killed by signal 9" in first["reason"]
    assert second["outcome"] == "succeeded" and second["resumed_from"] == resume_at
    assert f"resuming from checkpoint-{resume_at}" in s.log(job_id)
    assert "dpo: the reference is the starting model" in s.log(job_id)
    assert s.loss_steps(job_id, 2) == list(range(resume_at + 1, 13))  # the curve goes on from the checkpoint
    assert s.versions() == [job_id]  # one version, however many attempts
    with session_scope() as db:
        version = db.query(ModelVersion).filter_by(job_id=job_id).one()
        assert version.config["objective"] == "dpo" and version.metrics["steps"] == 12
        margins = db.query(Metric.step).filter_by(job_id=job_id, attempt=2, name="rewards/margins").all()
        assert sorted(m.step for m in margins) == list(range(resume_at + 1, 13))
    assert s.adapter(job_id)  # the trained adapter, without TRL's reference copy
