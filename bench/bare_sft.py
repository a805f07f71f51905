"""The LoRA SFT a person would write by hand with the HF Trainer and peft: the baseline that
bench/overhead.py and bench/throughput.py hold the studio against. Deliberately plain: chat template,
loss on the answer only, padded batches (DataCollatorForSeq2Seq), the Trainer's defaults, the adapter
saved at the end. Prints one JSON object: wall and training seconds, steps, real tokens seen.

    python bench/bare_sft.py --model DIR --data rows.jsonl --steps 8 [--batch 4] [--max-len 256]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # the wall clock starts before the heavy imports, as a user's script does
# bench/ holds a datasets.py of its own: keep it from shadowing the datasets package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,  # noqa: E402
                          TrainingArguments)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.expert_sft import encode  # noqa: E402  the same tokenisation as the expert's script


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with open(a.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train = Dataset.from_list([encode(tokenizer, r, a.max_len) for r in rows])
    model = AutoModelForCausalLM.from_pretrained(a.model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    out = a.out or tempfile.mkdtemp(prefix="bare-sft-")
    args = TrainingArguments(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch,
                             learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to=[], seed=42,
                             include_num_input_tokens_seen="non_padding", disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    model.save_pretrained(out)
    print(json.dumps({"wall_s": time.perf_counter() - T0, "train_s": train_s, "steps": trainer.state.global_step,
                      "tokens_seen": trainer.state.num_input_tokens_seen,
                      "tokens_per_s": trainer.state.num_input_tokens_seen / train_s,
                      "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


if __name__ == "__main__":
    main()
