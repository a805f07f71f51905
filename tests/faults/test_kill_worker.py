"""Fault 2: kill -9 the whole worker mid-run. Its training process dies with it, the reaper in
another worker re-queues the job once the lease expires, that worker resumes and finishes it, and
exactly one finished version exists."""
import pytest

from tests.cli import wait_until
from tests.faults.conftest import alive, kill9, worker_id


@pytest.mark.studio_env(STUDIO_LEASE_SECONDS="5")
def test_kill9_worker_is_reaped_and_another_worker_finishes(services_studio):
    s = services_studio
    lost = s.start_worker()
    job_id = s.submit(max_steps=20)
    child = s.hold_after_checkpoint(job_id)  # still running when its worker dies, however fast this machine is

    kill9(lost.pid)
    wait_until(lambda: not alive(child), timeout=10, every=0.1)  # no orphan keeps training
    resume_at = max(s.complete_steps(job_id))
    assert s.job(job_id).state == "running"  # nobody has noticed yet: the lease still runs

    rescuer = s.start_worker()
    job = s.wait_state(job_id, "succeeded", timeout=180)
    assert job.attempt == 2 and job.worker_id == worker_id(rescuer)
    first, second = job.history
    assert first["outcome"] == "lost" and "re-queued" in first["reason"]
    assert second["worker"] == worker_id(rescuer) and second["resumed_from"] == resume_at
    assert s.versions() == [job_id]  # exactly one finished version
