"""Where packed time goes on CPU: one LoRA training step (forward + backward) of the demo model on the same
examples as (a) padded batches, (b) packed rows with transformers' SDPA and its dense block-diagonal mask,
(c) packed rows with SDPA run on each example (worker/packed_attention.py, the studio's default without
FlashAttention). Prints real tokens/s of each and their ratios.

    .venv/bin/python bench/attention.py [--rows 32] [--batch 4] [--max-len 512] [--home /tmp/bench-perf]

The three run interleaved batch by batch (a, b, c on batch 1, then on batch 2, ...) so that the load of a
shared machine hits them alike; rows are bench/throughput.py's (log-normal answer lengths)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit
from bench.throughput import spread_rows

KINDS = ("padded", "packed, dense mask", "packed, SDPA per example")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-perf"))
    a = ap.parse_args()
    perfkit.use_home(a.home)
    _, model_dir = perfkit.demo_model()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker import data, packed_attention

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = spread_rows()[:a.rows]
    enc = data.tokenize_fn(tokenizer, a.max_len)({"messages": [
        [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}] for r in rows]})
    features = [{"input_ids": i, "labels": lab} for i, lab in zip(enc["input_ids"], enc["labels"])]
    batches = [features[i:i + a.batch] for i in range(0, len(features), a.batch)]
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])).train()

    def collator(kind: str):
        base.set_attn_implementation(packed_attention.register() if kind == KINDS[2] else "sdpa")
        return data.collator(tokenizer, packing=kind != KINDS[0], model=model)

    def step(kind: str, batch) -> float:
        inputs = collator(kind)(batch)
        started = time.perf_counter()
        model(**inputs).loss.backward()
        return time.perf_counter() - started

    for kind in KINDS:  # warm-up: the first step of each allocates and picks kernels
        step(kind, batches[0])
    seconds = dict.fromkeys(KINDS, 0.0)
    for i, batch in enumerate(batches):
        for kind in KINDS:
            seconds[kind] += step(kind, batch)
        perfkit.say(f"batch {i + 1}/{len(batches)}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    real = sum(len(f["input_ids"]) for f in features)
    for kind in KINDS:
        print(f"{kind:26s} {real / seconds[kind]:7.1f} real tokens/s ({seconds[kind]:.1f} s for {len(batches)} steps)")
    print(f"packed dense / padded {seconds[KINDS[0]] / seconds[KINDS[1]]:.2f}x; per example / padded "
          f"{seconds[KINDS[0]] / seconds[KINDS[2]]:.2f}x; per example / dense {seconds[KINDS[1]] / seconds[KINDS[2]]:.2f}x")
    print(perfkit.hardware())


if __name__ == "__main__":
    main()
