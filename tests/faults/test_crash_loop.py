"""Fault 7: a job whose training process dies on every attempt ends `failed` after the retry limit,
with the reason, and is never tried again: no crash loop, even when its task is delivered again."""
import time

from tests.faults.conftest import kill9


def test_a_job_that_always_crashes_fails_after_the_retry_limit(services_studio):
    from studio.operations import send

    s = services_studio
    worker = s.start_worker()
    job_id = s.submit()
    for attempt in (1, 2, 3):
        kill9(s.current_pid(job_id, attempt))
    job = s.wait_state(job_id, "failed", timeout=60)
    assert job.attempt == 3 and job.max_attempts == 3
    assert "killed by signal 9 on attempt 3 of 3" in job.error
    assert [a["outcome"] for a in job.history] == ["interrupted", "interrupted", "failed"]

    send("train", job_id)  # a late duplicate message
    time.sleep(4)  # several sweeps of the reaper
    job = s.job(job_id)
    assert job.state == "failed" and job.attempt == 3 and len(job.history) == 3
    assert f"job {job_id}: not claimed: it is failed" in worker.log_path.read_text()
