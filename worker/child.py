"""Entry point of a job's process: ``python -m worker.child JOB_ID FENCE``.

Runs the job's recipe, then records success or a human-readable failure, fenced by its claim."""
from __future__ import annotations

import sys
import traceback

from models_db import Job, JobState, session_scope
from models_db import jobs as jobq
from worker.context import JobContext
from worker.errors import UserFacingError, humanize


def _recipe(kind: str):
    if kind == "train":
        from worker.recipes.sft import train
        return train
    if kind == "export":
        from worker.export import run_export_job
        return run_export_job
    raise UserFacingError(f"unknown job kind {kind!r}")


def main(job_id: int, fence: int) -> int:
    with session_scope() as db:
        job = db.get(Job, job_id)
        db.expunge(job)
    claim = jobq.Claim(job_id, fence, job.attempt)
    ctx = JobContext(job, claim)
    try:
        result = _recipe(job.kind)(ctx)
    except jobq.StaleFence:
        print("claim superseded by another attempt; stopping quietly", flush=True)
        return 3
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a message on the job page
        traceback.print_exc()
        ctx.writer.close()
        with session_scope() as db:
            jobq.finish(db, claim, JobState.failed.value, error=humanize(exc, job), message="failed")
        return 1
    ctx.writer.close()
    result = dict(result or {})
    version = result.pop("version", None)
    with session_scope() as db:
        jobq.succeed(db, claim, result=result, version=version)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
