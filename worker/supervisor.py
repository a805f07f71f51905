"""Run one job: claim it, start its training process, heartbeat the lease, relay cancel, record the end.

The work itself runs in a child process (``python -m worker.job_process``): CUDA and fork do not mix,
a crash or OOM there cannot take the worker down, and cancelling is a plain process kill that
frees all its GPU memory."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from models_db import Job, JobState, session_scope
from models_db import jobs as jobq
from studio import celery_app
from studio.settings import get_settings
from worker import fleet, launch_plan

log = logging.getLogger("studio.worker")

WORKER_ID = f"{socket.gethostname()}-{os.getpid()}"
_idle_since: float | None = time.monotonic()  # None while this worker runs a job


def idle_seconds() -> float:
    """How long this worker has had no job (0 while it runs one); the sweep re-sends lost messages
    only from idle workers, so duplicates do not pile up while every worker is busy."""
    return 0.0 if _idle_since is None else time.monotonic() - _idle_since


def job_dir(job_id: int) -> Path:
    return get_settings().path("jobs", str(job_id))


def child_env() -> dict[str, str]:
    """The training process never reaches a hub, and caches land under the studio's home."""
    s = get_settings()
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(s.path("cache", "datasets")), HF_HOME=str(s.path("cache", "hf")),
        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", STUDIO_HOME=str(s.home_abs),
        STUDIO_WORKER_PID=str(os.getpid()),  # the child dies with this process (worker.job_process)
    )
    return env


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_job(job_id: int, worker_id: str = WORKER_ID) -> str:
    """Claim and run a job to its end. Returns what happened (for logs and tests)."""
    global _idle_since
    s = get_settings()
    with session_scope() as db:
        refused = fleet.refusal(db, job_id, worker_id)  # too big for our GPUs: it stays queued for its tier
        claim = None if refused else jobq.claim(db, job_id, worker_id, s.lease_seconds)
        why = refused or (jobq.why_not_claimed(db, job_id) if claim is None else "")
    if claim is None:
        # a duplicate or late message, a cancelled job, or one waiting for its predecessor (the
        # sweep sends that one again once the predecessor finishes): the database says no.
        log.info("job %s: not claimed: %s", job_id, why)
        return "refused" if refused else "skipped"
    _idle_since = None
    fleet.mark_current(worker_id, job_id)
    try:
        plan = launch_plan.plan_for_job(job_id)  # one process, or accelerate launch of N (worker/launch_plan.py)
        if plan.refusal:
            log.warning("job %s: refused: %s", job_id, plan.refusal)
            return launch_plan.refuse(claim, plan.refusal)
        log_path = job_dir(job_id) / "log.txt"
        with open(log_path, "ab") as out:
            out.write(f"--- attempt {claim.attempt} on {worker_id} ---\n".encode())
            if plan.distributed:
                out.write(f"--- {plan.strategy.name} on {plan.strategy.processes} processes: {plan.strategy.reason} ---\n".encode())
            out.flush()
            proc = subprocess.Popen(
                plan.argv(job_id, claim.fence),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**child_env(), **plan.env},
                # one prctl call, resolved before the fork: safe beside the worker's threads
                preexec_fn=launch_plan.die_with_parent if plan.distributed else None,  # noqa: PLW1509
            )
        log.info("job %s: attempt %s started (training process %s)", job_id, claim.attempt, proc.pid)
        try:
            with session_scope() as db:
                jobq.record_pid(db, claim, proc.pid)
        except (jobq.StaleFence, OperationalError):
            pass  # only bookkeeping; the supervisor notices a lost claim on its own
        outcome = _supervise(proc, claim)
        return _settle(claim, proc.returncode, outcome)
    finally:
        fleet.mark_current(worker_id, None)
        _idle_since = time.monotonic()


def _supervise(proc: subprocess.Popen, claim: jobq.Claim) -> str:
    """Watch the child: check for cancel every second, extend the lease every heartbeat."""
    s = get_settings()
    last_beat = 0.0
    while proc.poll() is None:
        try:
            proc.wait(1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        try:
            with session_scope() as db:
                if time.monotonic() - last_beat >= s.heartbeat_seconds:
                    cancel = jobq.heartbeat(db, claim, s.lease_seconds)
                    last_beat = time.monotonic()
                else:
                    cancel = bool(db.get(Job, claim.job_id, populate_existing=True).cancel_requested)
        except jobq.StaleFence:
            if _recorded_its_end(claim):  # the child finished the job and is exiting
                try:
                    proc.wait(30)
                    return "exited"
                except subprocess.TimeoutExpired:
                    pass
            log.warning("job %s: our claim was superseded; stopping the training process", claim.job_id)
            _stop(proc)
            return "stale"
        except OperationalError as e:  # a database hiccup: keep training, the lease has slack
            log.warning("job %s: heartbeat failed: %s", claim.job_id, e)
            continue
        if cancel:
            _stop(proc)
            return "cancelled"
    return "exited"


def _recorded_its_end(claim: jobq.Claim) -> bool:
    with session_scope() as db:
        job = db.get(Job, claim.job_id, populate_existing=True)
        return job.fence == claim.fence and job.state != JobState.running.value


def _settle(claim: jobq.Claim, returncode: int, outcome: str) -> str:
    """Record the end. The child records success and handled failures itself; this covers the rest."""
    with session_scope() as db:
        if outcome == "cancelled":
            jobq.finish(db, claim, JobState.cancelled.value, message="cancelled")
            return "cancelled"
        if outcome == "stale":
            return "stale"
        job = db.get(Job, claim.job_id, populate_existing=True)
        if job.state != JobState.running.value or job.fence != claim.fence:
            return job.state  # the child finished it
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        verdict = jobq.retry_or_fail(
            job, retry=f"training process {how} on attempt {job.attempt}; retrying from the last checkpoint",
            give_up=f"The training process {how} on attempt {job.attempt} of {job.max_attempts}. "
                    "See the log below for the last thing it printed.")
        retry = verdict.state == JobState.queued
        if retry:  # a new fence: the dead attempt's late writes are refused
            jobq.finish(db, claim, verdict.state.value, fence=claim.fence + 1, message=verdict.message)
        else:
            jobq.finish(db, claim, verdict.state.value, error=verdict.error)
    if retry:

        try:
            celery_app.enqueue(job.kind, claim.job_id, job.queue)  # the retry goes to the job's own memory tier
        except Exception:
            log.exception("job %s: could not send the retry; the sweep will", claim.job_id)
        return "requeued"
    return "failed"
