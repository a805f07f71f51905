"""`studio train` and `studio jobs`: submit, watch, list and cancel jobs."""
from __future__ import annotations

import sys

from models_db import Job, JobState, session_scope
from models_db import queries as q
from studio import objectives, operations, routing
from studio.cli.common import CliError, _job_line, emit, wait_for
from studio.jobspec import build_train_spec, parse_set_args


def cmd_train(args):
    with session_scope() as db:
        model = q.model_by_ref(db, args.model)
        if model is None:
            raise CliError(f"model {args.model!r} does not exist (studio models list)")
        model_id = model.id
    spec = build_train_spec(model_id=model_id, dataset_id=args.dataset, method=args.method,
                            settings=parse_set_args(args.set or []), parent_version_id=args.from_version,
                            task=args.task, objective=args.objective)
    job, created = operations.submit_train(spec, idempotency_key=args.idempotency_key, after=args.after)
    _print_cost(job)
    for problem in operations.tracker_problems():  # the job is queued anyway and trains without that tracker
        print(f"warning: {problem}", file=sys.stderr)
    if (job.config or {}).get("lineage_note"):
        print(f"note: {job.config['lineage_note']}", file=sys.stderr)
    if job.state == JobState.queued and routing.is_waiting(job.message):  # no alive worker's GPUs can hold it
        print(f"note: job {job.id} {job.message}", file=sys.stderr)
    if not args.json:
        waits = f", to start after job {args.after}" if args.after else ""
        print(f"{'queued' if created else 'already submitted as'} job {job.id}{waits}", file=sys.stderr)
    if args.wait:
        job = wait_for(job.id, quiet=args.json)
    emit(args, operations.job_json(job), _job_line(job))
    if args.wait and job.state != JobState.succeeded:
        sys.exit(1)


def _print_cost(job: Job) -> None:
    """The advisor's count and memory estimate that submit stored with the job, on stderr."""
    from studio.advisor.jobcost import describe_cost

    estimate = (job.config or {}).get("estimate") or {}
    if "trainable" in estimate:
        print(f"{job.config['method']}: {describe_cost(estimate, estimate, markdown=False)}", file=sys.stderr)


def cmd_jobs_list(args):
    with session_scope() as db:
        jobs = q.list_jobs(db, kind=None)
        places = q.queue_positions(db)
        rows = [operations.job_json(j, places.get(j.id)) for j in jobs]
        text = "\n".join(_job_line(j, places.get(j.id)) for j in jobs) or "no jobs yet"
    emit(args, {"jobs": rows}, text)


def _get_job(db, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise CliError(f"job {job_id} does not exist (studio jobs list)")
    return job


def cmd_jobs_show(args):
    with session_scope() as db:
        job = _get_job(db, args.id)
        place = q.queue_positions(db).get(job.id)
        attempts = "".join(f"\n  {_attempt_line(a)}" for a in job.history or [])
        emit(args, operations.job_json(job, place), _job_line(job, place) + attempts)


def _attempt_line(a: dict) -> str:
    resumed = f", resumed from step {a['resumed_from']}" if a.get("resumed_from") else ""
    reason = f": {a['reason']}" if a.get("reason") else ""
    return f"attempt {a['attempt']} on {a.get('worker')}{resumed}: {a.get('outcome')}{reason}"


def cmd_jobs_cancel(args):
    state = operations.cancel_job(args.id)
    emit(args, {"id": args.id, "state": state}, f"job {args.id}: {state}")


def register(sub, add, group) -> None:
    sp = add(sub, "train", cmd_train, "submit a training job")
    sp.add_argument("--model", required=True, help="base model id or name")
    sp.add_argument("--dataset", required=True, type=int)
    sp.add_argument("--method", default="lora")
    sp.add_argument("--objective", metavar="NAME",
                    help=f"what the weights learn from: {', '.join(objectives.names())} (studio objectives list); "
                         "default: implied by the data set (preference -> dpo, feedback -> kto, classification -> "
                         "classification, else sft)")
    sp.add_argument("--task", choices=tuple(operations.TASK_FORMATS),
                    help="the older name of --objective: causal_lm is sft, seq_cls is classification")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a training, method or objective setting (repeatable), e.g. --set beta=0.1")
    sp.add_argument("--from-version", type=int, help="continue training from this version")
    sp.add_argument("--idempotency-key", help="a repeat with the same key returns the first job")
    sp.add_argument("--after", type=int, metavar="JOB", help="start only once this job has finished")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")

    g = group("jobs", "jobs")
    add(g, "list", cmd_jobs_list, "list jobs")
    add(g, "show", cmd_jobs_show, "one job").add_argument("id", type=int)
    add(g, "cancel", cmd_jobs_cancel, "cancel a queued or running job").add_argument("id", type=int)
