"""Fault 5: cancel a queued job, a running job, and a job whose worker is down. Each ends
`cancelled`, a running one stops within seconds (its process gone), and none ever runs later,
even when its task message is delivered again."""
import time

import pytest

from tests.cli import wait_until
from tests.faults.conftest import alive, kill9


@pytest.mark.studio_env(STUDIO_LEASE_SECONDS="5")
def test_cancel_queued_running_and_while_the_worker_is_down(services_studio):
    from studio.operations import cancel_job, send

    s = services_studio
    queued = s.submit()
    assert cancel_job(queued) == "cancelled"  # no worker yet: cancelled in the database at once

    worker = s.start_worker()
    running = s.submit(max_steps=400)
    child = s.current_pid(running, attempt=1)
    wait_until(lambda: s.job(running).step > 0, timeout=120, every=0.2)  # training
    asked = time.monotonic()
    assert cancel_job(running) == "running"  # flagged; its worker acts on it
    s.wait_state(running, "cancelled", timeout=15)
    wait_until(lambda: not alive(child), timeout=15, every=0.1)
    assert time.monotonic() - asked < 10  # stopped within seconds, its memory freed with the process

    orphaned = s.submit(max_steps=400)
    child = s.current_pid(orphaned, attempt=1)
    kill9(worker.pid)  # the worker is down with the job still "running" in the database
    wait_until(lambda: not alive(child), timeout=10, every=0.1)
    assert cancel_job(orphaned) == "running"
    rescuer = s.start_worker()
    s.wait_state(orphaned, "cancelled", timeout=60)  # the reaper honours the request

    for job_id in (queued, running, orphaned):  # a late or duplicate message changes nothing
        send("train", job_id)
    wait_until(lambda: rescuer.log_path.read_text().count(": not claimed: it is cancelled") >= 3, timeout=30)
    time.sleep(2)
    for job_id, attempts in ((queued, 0), (running, 1), (orphaned, 1)):
        job = s.job(job_id)
        assert job.state == "cancelled" and job.attempt == attempts, (job_id, job.history)
    assert s.versions() == []
