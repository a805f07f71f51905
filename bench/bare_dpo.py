"""The LoRA DPO a person would write by hand with TRL's DPOTrainer: the baseline bench/preference.py holds the
studio's DPO job against. Plain TRL: conversational pairs (the question as the user's turn, each answer one
assistant message), the LoRA config passed to the trainer as ``peft_config``, TRL's tokenisation and collator.
The settings the studio's job also uses are set to the same values (LoRA r/alpha/targets, batch, steps,
max_length, learning rate, beta, seed); gradient checkpointing is off on both sides (TRL turns it on by default).
Prints one JSON object: wall and training seconds, per-step seconds, peak memory.

    python bench/bare_dpo.py --model DIR --data pairs.jsonl --steps 5 [--batch 4] [--max-len 256] [--lr 2e-5]
"""
from __future__ import annotations

import argparse
import json
import resource
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
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # every linear layer


class StepTimes(TrainerCallback):
    """Each optimizer step's seconds, measured as the studio's meter (worker/perf.py) measures them: from the end
    of whatever came before (the previous step, a log) to the end of the step."""

    def __init__(self):
        self.times, self._mark = [], 0.0

    def on_train_begin(self, args, state, control, **kw):
        self._mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.times.append(now - self._mark)
        self._mark = now

    def on_log(self, args, state, control, **kw):
        self._mark = time.perf_counter()


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="JSONL of prompt/chosen/rejected (text)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with open(a.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if cuda else torch.float32)
    out = a.out or tempfile.mkdtemp(prefix="bare-dpo-")
    args = DPOConfig(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch, learning_rate=a.lr,
                     lr_scheduler_type="linear", beta=a.beta, loss_type=["sigmoid"], max_length=a.max_len,
                     gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[], seed=42,
                     disable_tqdm=True, use_cpu=not cuda, bf16=cuda)
    times = StepTimes()
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
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
                      "loss": [h["loss"] for h in logs],
                      "margins": [h.get("rewards/margins") for h in logs]}))


if __name__ == "__main__":
    main()
