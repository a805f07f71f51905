"""`studio sweep`: search hyper-parameters with Optuna, each trial a training job through the queue (studio/sweeps/)."""
from __future__ import annotations

import sys
import time

from models_db import JobState
from studio import sweeps
from studio.cli.common import CliError, emit
from studio.jobspec import parse_set_args
from studio.progress import Bar


def _trial_line(t: dict, metric: str) -> str:
    value = f"{metric}={t['value']:.4g}" if t["value"] is not None else ""
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
    job = f"job {t['job_id']}" if t["job_id"] else "no job"
    version = f" -> version {t['version_id']}" if t["version_id"] else ""
    error = f" ({t['error']})" if t.get("error") and t["state"] in (JobState.failed, JobState.cancelled) else ""
    return f"  trial {t['number']}: {t['state']:<9} {params} {value} [{job}{version}]{error}"


def sweep_text(s: dict) -> str:
    best = s["best"]
    head = (f"sweep {s['id']} [{s['state']}] {s['method']} on {s['model']} / dataset {s['dataset_id']}: "
            f"{s['direction']} {s['metric']} by {s['sampler']}, {len(s['trials'])} of {s['trials_wanted']} trials")
    lines = [head, f"  space: {' '.join(s['space'].values())}"]
    if s["seed"].get("params"):
        lines.append(f"  first trial from {s['seed']['from']}: {s['seed']['params']}")
    lines += [_trial_line(t, s["metric"]) for t in s["trials"]]
    lines.append(f"  best: trial {best['number']} {s['metric']}={best['value']:.4g} (version {best['version_id']})"
                 if best else f"  best: none yet ({s['message']})")
    return "\n".join(lines)


def wait(sweep_id: int, *, poll: float = 2.0) -> dict:
    """Poll until the sweep has finished, with a progress bar on stderr (trials finished of trials wanted).
    The workers advance the sweep; this only watches (and nudges it, harmlessly, in case none has yet)."""
    bar = Bar(stream=sys.stderr)
    while True:
        sweeps.advance(sweep_id)
        s = sweeps.sweep_json(sweep_id)
        ended = sum(t["state"] in JobState.finished() for t in s["trials"])
        best = f" best {s['metric']} {s['best']['value']:.4g}" if s["best"] else ""
        bar.update(ended, s["trials_wanted"], f"{s['state']}: {ended} trials ended{best}")
        if s["state"] != sweeps.RUNNING and all(t["state"] not in (JobState.queued, JobState.running) for t in s["trials"]):
            bar.close()
            return s
        time.sleep(poll)


def cmd_sweep(args):
    if args.sub:
        return args.sub_fn(args)
    missing = [flag for flag, v in (("--model", args.model), ("--dataset", args.dataset), ("--trials", args.trials))
               if v is None]
    if missing:
        raise CliError(f"studio sweep needs {', '.join(missing)} (or a subcommand: show ID, list, cancel ID)")
    if not args.space:
        raise CliError("studio sweep needs at least one --space KEY=KIND:ARGS, e.g. "
                       "--space learning_rate=loguniform:1e-5:1e-3 --space r=choice:4,16")
    sweep_id = sweeps.create(model=args.model, dataset_id=args.dataset, method=args.method, space=args.space,
                             trials=args.trials, metric=args.metric, direction=args.direction, sampler=args.sampler,
                             pruner=args.pruner, parallel=args.parallel, settings=parse_set_args(args.set or []),
                             objective=args.objective, seed_from_advisor=not args.no_advisor)
    if not args.json:
        print(f"started sweep {sweep_id}", file=sys.stderr)
    s = wait(sweep_id) if args.wait else sweeps.sweep_json(sweep_id)
    emit(args, s, sweep_text(s))
    if args.wait and s["best"] is None:
        sys.exit(1)


def cmd_show(args):
    s = sweeps.sweep_json(args.id)
    emit(args, s, sweep_text(s))


def cmd_list(args):
    rows = sweeps.list_sweeps()
    text = "\n".join(f"sweep {r['id']} [{r['state']}] {r['method']} {r['direction']} {r['metric']} "
                     f"({r['trials_wanted']} trials): {r['message']}" for r in rows) or "no sweeps yet"
    emit(args, {"sweeps": rows}, text)


def cmd_cancel(args):
    state = sweeps.cancel(args.id)
    emit(args, {"id": args.id, "state": state}, f"sweep {args.id}: {state}")


def register(sub, add, group) -> None:
    sp = add(sub, "sweep", cmd_sweep, "search hyper-parameters: each trial a training job (studio sweep show ID)")
    sp.add_argument("--model", help="base model id or name")
    sp.add_argument("--dataset", type=int)
    sp.add_argument("--method", default="lora")
    sp.add_argument("--objective", metavar="NAME", help="what the weights learn from (default: implied by the data)")
    sp.add_argument("--trials", type=int, help="how many trials to run")
    sp.add_argument("--space", action="append", metavar="KEY=KIND:ARGS",
                    help="a searched setting (repeatable): loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or "
                         "choice:A,B,...; KEY is any --set key of studio train")
    sp.add_argument("--metric", default="eval_loss", help="what to optimise (default eval_loss)")
    sp.add_argument("--direction", choices=sweeps.DIRECTIONS,
                    help="default: minimize for losses, maximize for accuracy, F1, rewards and margins")
    sp.add_argument("--sampler", choices=sweeps.SAMPLERS, default="tpe", help="Optuna's sampler (default tpe)")
    sp.add_argument("--pruner", choices=sweeps.PRUNERS, default="median",
                    help="stop trials whose eval metric is worse than the median of earlier ones (default median)")
    sp.add_argument("--parallel", type=int, default=0, metavar="K",
                    help="at most K trials at once (default 0: as many as alive training workers)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="a fixed setting for every trial (repeatable)")
    sp.add_argument("--no-advisor", action="store_true", help="do not start with the advisor's suggested settings")
    sp.add_argument("--wait", action="store_true", help="wait for the sweep, with a progress bar on stderr")
    subs = sp.add_subparsers(dest="sub", required=False)

    def child(name, fn, help_):
        c = add(subs, name, cmd_sweep, help_)
        c.set_defaults(sub_fn=fn)
        return c

    child("show", cmd_show, "one sweep: its trials and the best").add_argument("id", type=int)
    child("list", cmd_list, "every sweep")
    child("cancel", cmd_cancel, "stop a sweep and cancel its queued and running trials").add_argument("id", type=int)
