"""Studio overhead: the same LoRA SFT (demo model, a fixed 64-row data set, fixed steps) run (a) as the
bare Trainer + peft script a person would write (bench/bare_sft.py) and (b) as a studio job submitted to
the queue and run by a real ``studio worker``; prints both wall times and their ratio (target <= 1.05).

    .venv/bin/python bench/overhead.py [--steps 8] [--repeats 1] [--home /tmp/bench-perf] [--json]

Wall times: (a) from starting the script's process to its exit; (b) from submitting the job to the
database saying it succeeded (the worker is already running, as in the studio). Both load the model,
tokenise, train ``--steps`` steps of batch 4 and save the adapter; the studio also writes metrics,
TensorBoard files, samples the system and registers the version (save_steps = steps: the checkpoint at the
last step is skipped, as the version is saved from the same weights right after). To compare the same
computation the job trains on padded batches (``packing=false``); bench/throughput.py measures what
packing adds. Runs alternate a, b, a, b... so drifting load on a
shared machine hits both sides alike; the best of each side is compared. The evaluation job the
studio queues after each training job is waited for between runs and not counted: the training job
has succeeded, and its version is usable, before it starts."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit
from bench.methods import dataset_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-perf"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    perfkit.use_home(a.home)
    model_id, model_dir = perfkit.demo_model()
    dataset_id, data = perfkit.add_rows(a.home, "overhead-rows", dataset_rows())
    settings = {"max_steps": a.steps, "per_device_train_batch_size": a.batch, "max_seq_length": a.max_len,
                "logging_steps": 1, "eval_split": 0.0, "save_steps": a.steps, "packing": False,
                "learning_rate": 2e-4}
    perfkit.cancel_leftovers()
    worker = perfkit.Worker(a.home / "worker.log")
    bare, studio = [], []
    try:
        worker.wait_ready()
        for i in range(a.repeats):
            perfkit.say(f"run {i + 1}: bare Trainer + peft script")
            bare.append(perfkit.run_bare(model_dir, data, a.steps, a.batch, a.max_len))
            perfkit.say(f"run {i + 1}: studio job through the queue")
            started = time.perf_counter()
            job_id = perfkit.submit(model_id, dataset_id, "lora", settings)
            metrics = perfkit.finished(job_id)
            studio.append({"wall_s": time.perf_counter() - started, "train_s": metrics["train_seconds"],
                           "tokens_seen": metrics["tokens_seen"], "job_id": job_id})
            perfkit.wait_idle()  # the follow-up evaluation job must not run beside the next timed run
    finally:
        worker.stop()
    best_bare = min(r["process_wall_s"] for r in bare)
    best_studio = min(r["wall_s"] for r in studio)
    out = {"steps": a.steps, "batch": a.batch, "repeats": a.repeats,
           "bare_wall_s": [round(r["process_wall_s"], 2) for r in bare],
           "bare_train_s": [round(r["train_s"], 2) for r in bare],
           "studio_wall_s": [round(r["wall_s"], 2) for r in studio],
           "studio_train_s": [round(r["train_s"], 2) for r in studio],
           "ratio_wall": round(best_studio / best_bare, 3),
           "ratio_train": round(min(r["train_s"] for r in studio) / min(r["train_s"] for r in bare), 3),
           "same_tokens": bare[0]["tokens_seen"] == studio[0]["tokens_seen"],
           "hardware": perfkit.hardware()}
    if a.json:
        print(json.dumps(out))
        return
    print(f"bare Trainer + peft: wall {out['bare_wall_s']} s (training {out['bare_train_s']} s)")
    print(f"studio job (queue):  wall {out['studio_wall_s']} s (training {out['studio_train_s']} s)")
    print(f"ratio studio/bare: wall {out['ratio_wall']:.3f}x, training {out['ratio_train']:.3f}x "
          f"(target <= 1.05x); same tokens trained: {out['same_tokens']}")
    print(out["hardware"])


if __name__ == "__main__":
    main()
