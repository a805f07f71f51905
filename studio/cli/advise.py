"""`studio advise`: which method fits the model, the data and the GPUs, and why."""
from __future__ import annotations

import argparse

from models_db import session_scope
from studio.cli.common import CliError, emit


def cmd_advise(args):
    from studio.advisor import advise
    from studio.advisor.explain import advice_text
    from studio.advisor.sources import estimator_history, studio_inputs

    try:
        inputs, where = studio_inputs(
            model=args.model, dataset=args.dataset, params_b=args.params_b, examples=args.examples,
            gpu_memory_gb=_gpu_list(args), cpu_only=args.cpu_only, ram_gb=args.ram_gb, task=args.task,
            complexity=args.complexity, quality=args.quality, deploy=args.deploy, latency_ok=args.latency_ok,
            seq_len=args.seq_len, batch_size=args.batch_size)
        advice = advise(inputs)
    except ValueError as e:  # unknown model/data set, bad answers: said plainly, no stack trace
        raise CliError(str(e)) from None
    with session_scope() as db:
        history = estimator_history(db)
    text = advice_text(advice, where)
    if history["jobs"]:
        text += (f"\n\nThe estimator on this studio's {history['jobs']} measured jobs: mean error "
                 f"{history['mean_abs_error_pct']:.0f} %")
    out = {**advice.to_json(), "inputs": where, "estimator_history": history}
    if args.measure:
        out["measured"], out["preflight_job_id"], note = _measure(args, out)
        text += "\n\n" + note
    emit(args, out, text)


def _measure(args, advice: dict) -> tuple[dict, int, str]:
    """Queue the measured pre-flight of the advice (studio/preflight.py), wait with a bar on stderr, and return
    (measured, job id, its description)."""
    from studio import preflight
    from studio.cli.common import wait_for
    from studio.jobspec import SpecError

    try:
        job = preflight.submit(advice, args.model, args.dataset, steps=args.measure_steps, budget_gb=args.budget_gb,
                               cost_per_hour=args.cost_per_hour)
    except SpecError as e:
        raise CliError(f"--measure: {e}") from None
    wait_for(job.id)
    st = preflight.status(job.id)
    if not st["measured"]:
        raise CliError(f"the pre-flight (job {job.id}) {st['state']}: {st['error'] or st['message']}")
    return st["measured"], job.id, preflight.describe(st).replace("**", "")


def _gpu_list(args) -> list[float] | None:
    """--gpu-memory-gb 24 [--gpus 2] -> [24.0, 24.0]; a comma list gives one entry per GPU."""
    if args.gpu_memory_gb is None:
        if args.gpus:
            raise CliError("--gpus needs --gpu-memory-gb (the memory of each GPU in GB)")
        return None
    try:
        sizes = [float(x) for x in args.gpu_memory_gb.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--gpu-memory-gb {args.gpu_memory_gb!r}: give GB per GPU, e.g. 24 or 24,80") from None
    if not sizes or any(g <= 0 for g in sizes):
        raise CliError("--gpu-memory-gb: every GPU needs a positive size in GB")
    if args.gpus is not None and args.gpus < 1:
        raise CliError("--gpus must be at least 1 (use --cpu-only for no GPU)")
    if len(sizes) == 1 and args.gpus:
        return sizes * args.gpus
    if args.gpus and args.gpus != len(sizes):
        raise CliError(f"--gpus {args.gpus} but --gpu-memory-gb lists {len(sizes)} sizes")
    return sizes


def _advise_parser(sp) -> None:
    from studio.advisor.advise import DEPLOYS, QUALITIES, TASKS

    sp.add_argument("--model", help="an imported base model (id or name): its config.json gives the shape")
    sp.add_argument("--params-b", type=float, metavar="B", help="model size in billions, when it is not imported")
    sp.add_argument("--dataset", type=int, help="a registered data set: its size and token lengths")
    sp.add_argument("--examples", type=int, help="number of training examples, when no data set is given")
    sp.add_argument("--gpu-memory-gb", metavar="GB", help="memory of each GPU, e.g. 24 (with --gpus N) or 24,80; "
                    "default: the registered workers' GPUs")
    sp.add_argument("--gpus", type=int, metavar="N", help="how many GPUs of --gpu-memory-gb each")
    sp.add_argument("--cpu-only", action="store_true", help="plan for a machine without a GPU")
    sp.add_argument("--ram-gb", type=float, help="RAM of a CPU-only machine (to check what fits)")
    sp.add_argument("--task", choices=TASKS, default="instruction", help="what the model must learn")
    sp.add_argument("--complexity", type=float, default=0.5, help="task complexity from 0 (simple) to 1 (hard)")
    sp.add_argument("--quality", choices=QUALITIES, default="medium", help="how good the result must be")
    sp.add_argument("--deploy", choices=(*DEPLOYS, "mobile"), default="server", help="where the model will run")
    sp.add_argument("--latency-ok", action=argparse.BooleanOptionalAction, default=True,
                    help="extra inference latency (unmerged adapters) is acceptable")
    sp.add_argument("--seq-len", type=int, help="training sequence length (default: the data's 95th percentile)")
    sp.add_argument("--batch-size", type=int, help="examples per optimizer step (default 8 or 16)")
    sp.add_argument("--measure", action="store_true", help="run a few real optimizer steps of the advised settings "
                    "on a worker (needs --model and --dataset): measured peak memory, tokens/s, step time, ETA")
    sp.add_argument("--measure-steps", type=int, default=3, metavar="N", help="optimizer steps to measure (default 3)")
    sp.add_argument("--budget-gb", type=float, metavar="GB", help="with --measure: the memory the job may use "
                    "(default: the worker's GPU, or its RAM); over it, smaller settings are measured")
    sp.add_argument("--cost-per-hour", type=float, metavar="X", help="with --measure: price of a device-hour, for "
                    "the run's cost")


def register(sub, add, group) -> None:
    _advise_parser(add(sub, "advise", cmd_advise, "which method fits your model, data and GPUs, and why"))
