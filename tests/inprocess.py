"""Run a queued job's process entry point inside the test, as a worker's job process would."""
from __future__ import annotations

from models_db import Job, ModelVersion, session_scope
from models_db import jobs as jobq


def run_to_version(job: Job) -> ModelVersion:
    """Claim ``job``, run it here, assert it succeeded, and return its version (detached)."""
    from worker import job_process

    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        job = db.get(Job, job.id)
        assert job.state == "succeeded", job.error
        version = db.get(ModelVersion, job.result["version_id"])
        db.expunge(version)
        return version
