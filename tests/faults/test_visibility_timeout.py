"""Fault 3: the visibility-timeout trap. Redis hands an unacknowledged task to another worker once its
visibility timeout passes, here 2 s for a job that runs far longer. The redelivered task finds the
job claimed in the database and does nothing: no second concurrent run."""
import json
import os
import signal

from tests.cli import wait_until

SHORT = json.dumps({"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1})


def test_redelivery_after_visibility_timeout_never_runs_a_job_twice(redis_studio):
    s = redis_studio
    first = s.start_worker(STUDIO_BROKER_TRANSPORT_OPTIONS=SHORT)
    job_id = s.submit(max_steps=10)
    training = s.current_pid(job_id, attempt=1)  # the first worker has it...
    os.kill(training, signal.SIGSTOP)  # ...and holds it far longer than 2 s, however fast this machine is
    second = s.start_worker(STUDIO_BROKER_TRANSPORT_OPTIONS=SHORT)

    # the second worker is handed the same task while the first still runs it, and refuses it
    try:
        wait_until(lambda: f"job {job_id}: not claimed: it is already running" in second.log_path.read_text(),
                   timeout=120, every=0.2)
    finally:
        os.kill(training, signal.SIGCONT)
    job = s.wait_state(job_id, "succeeded", timeout=180)
    assert job.attempt == 1 and len(job.history) == 1  # one run, never a second
    assert "attempt 2" not in s.log(job_id)
    assert s.versions() == [job_id]
    assert first.poll() is None and second.poll() is None
