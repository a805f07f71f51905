"""Fault 4: restart Redis (without persistence: every message in it is lost) while idle and during a run.
The worker keeps consuming, the running job finishes, the job whose message died with Redis runs,
and a job submitted while Redis was down is sent and taken once it is back. No job is lost."""
from studio.operations import cancel_job
from tests.cli import wait_until


def test_redis_restart_while_idle_and_during_a_run_loses_no_job(redis_studio):
    s = redis_studio
    worker = s.start_worker()
    s.redis.restart()  # while idle
    running = s.submit(max_steps=40)  # taken by the same worker once it has reconnected
    waiting = s.submit(max_steps=4)  # its message sits in Redis behind the running job...
    training = s.hold_after_checkpoint(running)  # held mid-run: this test must not race the machine's speed

    try:
        s.redis.kill()  # ...and dies with it, during the run
        offline = s.submit(max_steps=400)  # the broker is down: stored as queued, not sent
        assert [s.job(j).state for j in (running, waiting, offline)] == ["running", "queued", "queued"]
        s.redis.start()
    finally:
        s.release(training)

    for job_id in (running, waiting):
        assert s.wait_state(job_id, "succeeded", timeout=180).attempt == 1
    s.current_pid(offline, attempt=1)  # sent by the sweep and taken: enough, no need to train it too
    cancel_job(offline)
    assert s.wait_state(offline, "cancelled", timeout=30).attempt == 1

    assert worker.poll() is None  # the same worker consumed throughout
    assert sorted(s.versions()) == [running, waiting]
    wait_until(lambda: worker.log_path.read_text().count("sending its task") >= 2, timeout=5)  # by the sweep
