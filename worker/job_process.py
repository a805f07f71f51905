"""Entry point of a job's process: ``python -m worker.job_process JOB_ID FENCE``.

Runs the job's recipe, then records success or a human-readable failure, fenced by its claim."""
from __future__ import annotations

import importlib
import os
import sys
import traceback

from models_db import Job, JobState, session_scope
from models_db import jobs as jobq
from studio import evaluations, sweeps
from studio.jobkinds import JOB_KINDS
from studio.jobspec import BNB_OPTIMIZERS
from studio.methods import REGISTRY as METHOD_SPECS
from worker import distributed, tracking
from worker.context import JobContext
from worker.errors import UserFacingError, humanize
from worker.quiet import quiet_known_messages


def entry_point(job: Job):
    """The function this job's process runs: its kind's entry in studio/jobkinds.py."""
    try:
        module, _, fn = JOB_KINDS[job.kind].entry.partition(":")
    except KeyError:
        raise UserFacingError(f"unknown job kind {job.kind!r}: this worker runs {', '.join(JOB_KINDS)}") from None
    return getattr(importlib.import_module(module), fn)


def needs_bitsandbytes(job: Job) -> bool:
    """Whether the job may touch bitsandbytes: every job but a training run whose method, optimizer and
    ancestors (merged into its base) quantize nothing. Unsure (another kind, a qlora ancestor): yes."""
    if job.kind != "train":
        return True
    config = job.config or {}
    if _quantizes(config.get("method")) or (config.get("training") or {}).get("optim") in BNB_OPTIMIZERS:
        return True
    if config.get("parent_version_id") is None:
        return False
    from worker import lineage

    with session_scope() as db:
        return any(_quantizes(v.method) for v in lineage.chain(db, config["parent_version_id"]))


def _quantizes(method: str | None) -> bool:
    """Whether ``method`` loads its base quantized through bitsandbytes (its spec's flag; studio.methods)."""
    return method in METHOD_SPECS and METHOD_SPECS[method].quantizes_base


def skip_bitsandbytes(job: Job) -> None:
    """peft (which the Trainer imports) imports bitsandbytes whenever it is installed, and that import
    alone takes seconds (its kernels register with torch) before the first step. A job that quantizes
    nothing marks it unimportable (``sys.modules[name] = None``, Python's own switch), so peft and
    transformers treat it as not installed, exactly as on a machine without it."""
    if "bitsandbytes" not in sys.modules and not needs_bitsandbytes(job):
        sys.modules["bitsandbytes"] = None


def die_with_worker() -> None:
    """Have the kernel kill this process when its worker dies (kill -9 included), so a lost worker never
    leaves training running beside the attempt that replaces it (Linux; elsewhere the fence stops it)."""
    worker = int(os.environ.get("STUDIO_WORKER_PID", "0"))
    if not worker or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if distributed.world_size() > 1:
        return  # a rank's parent is the accelerate launcher, which dies with the worker (worker/launch_plan.py)
    if os.getppid() != worker:  # the worker died before the line above
        os._exit(4)


def main(job_id: int, fence: int, *, own_process: bool = False) -> int:
    """Run the job; ``own_process``: this process exists for the job alone (``python -m worker.job_process``),
    so it may set process-wide switches (tests call ``main`` inside their own process)."""
    die_with_worker()
    with session_scope() as db:
        job = db.get(Job, job_id)
        db.expunge(job)
    claim = jobq.Claim(job_id, fence, job.attempt)
    ctx = JobContext(job, claim)
    try:
        if own_process:
            skip_bitsandbytes(job)  # before the recipe imports transformers and peft
            quiet_known_messages()  # harmless library alarms stay out of the job log (worker/quiet.py)
        result = entry_point(job)(ctx)
    except jobq.StaleFence:
        print("claim superseded by another attempt; stopping quietly", flush=True)
        return 3
    except sweeps.Pruned as exc:  # a sweep's pruner stopped this trial: finished, not failed
        print(str(exc), flush=True)
        ctx.writer.close()
        with session_scope() as db:
            jobq.finish(db, claim, JobState.pruned.value, message=str(exc))
        tracking.finish(job.id, JobState.pruned)
        sweeps.after_job(job.id, job.config)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a message on the job page
        traceback.print_exc()
        ctx.writer.close()
        tracking.finish(job.id, JobState.failed)  # the MLflow / W&B runs end as failed (worker/tracking.py)
        if distributed.is_main():  # another rank's failure ends the launch; the runner records it
            with session_scope() as db:
                jobq.finish(db, claim, JobState.failed.value, error=humanize(exc, job), message="failed")
            sweeps.after_job(job.id, job.config)  # a failed trial: its sweep asks for the next one
        return 1
    ctx.writer.close()
    if not distributed.is_main():
        return 0  # rank 0 records the job's end and its version
    result = dict(result or {})
    version = result.pop("version", None)
    examples = evaluations.split_examples(result)  # per-question results go to their evaluations, not the result
    with session_scope() as db:
        version_id = jobq.succeed(db, claim, result=result, version=version)
        evaluations.record_results(db, job.id, version_id, result, examples)  # fenced with the success above
    tracking.finish(job.id, JobState.succeeded, result={**result, "version": version}, version_id=version_id)  # figures, tags
    evaluations.follow_up(job.kind, version_id, (version or {}).get("dataset_id"), result)
    sweeps.after_job(job.id, job.config)  # a sweep's trial: tell its result, ask for the next (studio/sweeps/)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), own_process=True))
