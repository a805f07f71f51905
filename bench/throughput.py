"""Training throughput: real tokens per second (padding excluded) of the studio's default path against
the bare Trainer + peft script (bench/bare_sft.py: padded batches), on a data set whose lengths spread
like real instruction data (log-normal answers, 10 to ~450 tokens). Target on CPU: >= 1.3x.

    .venv/bin/python bench/throughput.py [--steps 8] [--batch 4] [--max-len 512] [--repeats 1] [--home DIR] [--json]
    .venv/bin/python bench/throughput.py --gpu [--gpu-steps 30]   # CUDA: MFU of a 1B model, full and LoRA

Both sides train the same rows in the same order (seed 42) for the same steps; tokens/s is real tokens
seen over the seconds inside ``Trainer.train``. The studio's side is a real job (worker.job_process) with
its defaults: padding-free packing, SDPA on each packed example (worker/packed_attention.py; FlashAttention-2
instead where installed), and on CUDA bf16, fused AdamW and dataloader workers. With ``--repeats`` the two sides
alternate and the best run of each is compared (the load of a shared machine drifts between runs).

With ``--gpu`` it also builds a random-weight Llama of 1.07B parameters (Llama-3.2-1B's shape with the
demo tokenizer's 49,152-token vocabulary), imports it, and runs a full fine-tuning and a LoRA job,
printing the MFU each job recorded (targets: >= 40% full, >= 35% LoRA)."""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit

WORDS = ["the", "model", "learns", "from", "data", "and", "every", "example", "adds", "a", "little", "signal", "about", "what", "a", "good", "answer", "looks", "like", "when", "the", "question", "is", "clear", "and", "the", "context", "is", "short", "or", "long"]
LLAMA_1B = dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=49152,
                tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=500000.0)


def spread_rows(n: int = 256, seed: int = 0) -> list[dict]:
    """Instruction rows with a realistic length spread: short questions, log-normal answers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
        answer_words = min(int(rng.lognormvariate(4.0, 0.9)), 350)  # median ~55 words, long tail
        a = " ".join(rng.choice(WORDS) for _ in range(max(answer_words, 3)))
        rows.append({"instruction": f"Question {i}: {q}?", "input": "", "output": a})
    return rows


def cpu_comparison(a, model_id: int, model_dir: str) -> dict:
    """Bare script and studio job, alternating ``--repeats`` times so that drifting load on a shared machine
    hits both sides alike; the best run of each side is compared."""
    dataset_id, data = perfkit.add_rows(a.home, "spread-rows", spread_rows())
    bare, studio = [], []
    for i in range(a.repeats):
        perfkit.say(f"run {i + 1}: bare Trainer + peft script (padded batches)")
        bare.append(perfkit.run_bare(model_dir, data, a.steps, a.batch, a.max_len))
        perfkit.say(f"run {i + 1}: studio job, default path (packed)")
        job_id = perfkit.submit(model_id, dataset_id, "lora", {
            "max_steps": a.steps, "per_device_train_batch_size": a.batch, "max_seq_length": a.max_len,
            "logging_steps": 1, "eval_split": 0.0, "save_steps": a.steps, "learning_rate": 2e-4})
        perfkit.run_child(job_id, a.home / f"job-{job_id}.log")
        m = perfkit.finished(job_id)
        studio.append({"tokens_per_s": m["tokens_seen"] / m["train_seconds"], "tokens_seen": m["tokens_seen"],
                       "train_s": m["train_seconds"], "job_id": job_id})
    b, s = max(bare, key=lambda r: r["tokens_per_s"]), max(studio, key=lambda r: r["tokens_per_s"])
    return {"bare_tokens_per_s": b["tokens_per_s"], "bare_tokens": b["tokens_seen"], "bare_train_s": b["train_s"],
            "studio_tokens_per_s": s["tokens_per_s"], "studio_tokens": s["tokens_seen"], "studio_train_s": s["train_s"],
            "speedup": s["tokens_per_s"] / b["tokens_per_s"], "job_id": s["job_id"],
            "runs": [{"bare_tokens_per_s": round(x["tokens_per_s"], 1), "studio_tokens_per_s": round(y["tokens_per_s"], 1)}
                     for x, y in zip(bare, studio)]}


def gpu_mfu(a) -> dict:
    """Full fine-tuning and LoRA of a random-weight 1B Llama on this GPU: the MFU each job recorded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from models_db import BaseModel, session_scope
    from worker.importer import import_model

    _, demo_dir = perfkit.demo_model()
    folder = a.home / "llama-1b-random"
    if not (folder / "config.json").exists():
        perfkit.say("building a random-weight 1B Llama")
        config = AutoConfig.for_model(**LLAMA_1B)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder, safe_serialization=True)
        AutoTokenizer.from_pretrained(demo_dir).save_pretrained(folder)
        del model
    with session_scope() as db:
        row = db.query(BaseModel).filter(BaseModel.name == "llama-1b-random").first()
        if row is None:
            row = BaseModel(**import_model(folder, "llama-1b-random"))
            db.add(row)
            db.flush()
        model_id = row.id
    dataset_id, _ = perfkit.add_rows(a.home, "gpu-rows", spread_rows(4096, seed=1))
    out = {"gpu": torch.cuda.get_device_name(0)}
    for method, batch in (("full", 32), ("lora", 32)):
        job_id = perfkit.submit(model_id, dataset_id, method, {
            "max_steps": a.gpu_steps, "per_device_train_batch_size": batch, "max_seq_length": 2048,
            "logging_steps": 5, "eval_split": 0.0, "save_steps": a.gpu_steps})
        perfkit.run_child(job_id, a.home / f"job-{job_id}.log")
        m = perfkit.finished(job_id)
        out[method] = {k: m.get(k) for k in ("mfu", "hfu", "train_tokens_per_s", "step_time_s", "peak_memory_gb",
                                              "model_flops_per_token", "gpu_peak_tflops")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1, help="alternate bare and studio runs; compare the best of each")
    ap.add_argument("--gpu", action="store_true", help="also measure MFU of a 1B model (needs CUDA)")
    ap.add_argument("--gpu-steps", type=int, default=30)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-perf"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    perfkit.use_home(a.home)
    model_id, model_dir = perfkit.demo_model()
    out = cpu_comparison(a, model_id, model_dir)
    if a.gpu:
        out["mfu"] = gpu_mfu(a)
    out["hardware"] = perfkit.hardware()
    if a.json:
        print(json.dumps(out))
        return
    print(f"bare Trainer + peft (padded): {out['bare_tokens_per_s']:.1f} real tokens/s "
          f"({out['bare_tokens']} tokens in {out['bare_train_s']:.1f} s)")
    print(f"studio default (packed):      {out['studio_tokens_per_s']:.1f} real tokens/s "
          f"({out['studio_tokens']} tokens in {out['studio_train_s']:.1f} s)")
    if len(out["runs"]) > 1:
        print("runs (bare, studio tokens/s): " + ", ".join(f"{r['bare_tokens_per_s']} / {r['studio_tokens_per_s']}"
                                                          for r in out["runs"]))
    print(f"speed-up {out['speedup']:.2f}x, best of each (target >= 1.3x)")
    for method in ("full", "lora"):
        if "mfu" in out and out["mfu"].get(method):
            r = out["mfu"][method]
            print(f"{out['mfu']['gpu']} {method}: MFU {100 * (r['mfu'] or 0):.1f}% at {r['train_tokens_per_s']:.0f} "
                  f"tokens/s, {r['peak_memory_gb']:.1f} GiB peak")
    print(out["hardware"])


if __name__ == "__main__":
    main()
