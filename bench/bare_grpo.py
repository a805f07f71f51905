"""The LoRA GRPO a person would write by hand with TRL's GRPOTrainer: the baseline bench/preference.py holds the
studio's GRPO job against. Plain TRL: the question as the user's turn, the LoRA config passed to the trainer as
``peft_config``, and a numeric-match reward written here (1 when the completion's last number equals the number
after the reference's ``####``). The settings the studio's job also uses are set to the same values (LoRA
r/alpha/targets, batch, steps, generations, completion length, temperature, beta 0, loss, learning rate, seed);
gradient checkpointing is off on both sides (TRL turns it on by default). Prints one JSON object: wall and
training seconds, per-step seconds, peak memory, mean reward per step.

    python bench/bare_grpo.py --model DIR --data qa.jsonl --steps 4 [--batch 4] [--generations 4] [--completion 48]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # the wall clock starts before the heavy imports, as a user's script does
# bench/ holds a datasets.py of its own: keep it from shadowing the datasets package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bare_dpo import TARGETS, StepTimes, peak_memory_gb  # noqa: E402

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def number(text: str) -> float | None:
    found = NUMBER.findall(text or "")
    try:
        return float(found[-1].replace(",", "")) if found else None
    except ValueError:
        return None


def numeric_match(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's last number is the reference's final answer (after ####), else 0.0."""
    scores = []
    for completion, reference in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        want, got = number(reference.split("####")[-1]), number(text)
        scores.append(1.0 if want is not None and got is not None and abs(got - want) < 1e-9 else 0.0)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="JSONL of question/answer (GSM8K: the answer ends in '#### N')")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="completions per step (whole groups)")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--completion", type=int, default=48, help="max_completion_length")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with open(a.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}], "answer": r["answer"]}
                               for r in rows])
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if cuda else torch.float32)
    out = a.out or tempfile.mkdtemp(prefix="bare-grpo-")
    args = GRPOConfig(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch, learning_rate=a.lr,
                      lr_scheduler_type="linear", num_generations=a.generations, max_completion_length=a.completion,
                      temperature=1.0, beta=0.0, loss_type="dapo", gradient_checkpointing=False, logging_steps=1,
                      save_strategy="no", report_to=[], seed=42, disable_tqdm=True, use_cpu=not cuda, bf16=cuda)
    times = StepTimes()
    trainer = GRPOTrainer(model=model, reward_funcs=[numeric_match], args=args, train_dataset=train,
                          processing_class=tokenizer,
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                                 task_type="CAUSAL_LM"),
                          callbacks=[times])
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    peak = peak_memory_gb()
    trainer.model.save_pretrained(out)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"wall_s": time.perf_counter() - T0, "train_s": train_s, "steps": trainer.state.global_step,
                      "step_times": times.times, "peak_memory_gb": peak,
                      "peak_memory_kind": "cuda_allocated" if cuda else "cpu_rss",
                      "loss": [h["loss"] for h in logs], "reward": [h.get("reward") for h in logs],
                      "completion_length": [h.get("completions/mean_length") for h in logs]}))


if __name__ == "__main__":
    main()
