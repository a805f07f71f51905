"""The fine-tuning script an expert writes by hand with the HF Trainer and peft, per method: the bar the
studio's defaults must clear (bench/quality.py, tests/worker/test_quality_defaults.py).

LoRA-family: r=16, alpha=32 on every linear layer, lr 2e-4 with a linear decay and no warm-up (the
QLoRA paper's and LLaMA-Factory's choices); full: lr 2e-5; freeze: the top quarter of the layers, lr 5e-5.
Cut at 256 tokens, padded batches (no packing), seed 42, the Trainer's other defaults. Prints one JSON
object: wall and training seconds, steps; saves what it trained to ``--out``.

    python bench/expert_sft.py --model DIR --data rows.jsonl --method lora --steps 30 --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()  # the wall clock starts before the heavy imports, as a user's script does
# bench/ holds a datasets.py of its own: keep it from shadowing the datasets package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,  # noqa: E402
                          TrainingArguments)

LR = {"lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "full": 2e-5, "freeze": 5e-5}


def encode(tokenizer, row: dict, max_len: int) -> dict:
    """The conversation's tokens, with the prompt's labels masked (-100): the loss is on the answer."""
    prompt = [{"role": "user", "content": row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")}]
    full = prompt + [{"role": "assistant", "content": row["output"]}]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = tokenizer.apply_chat_template(full, tokenize=True, return_dict=False)[:max_len]
    labels = [-100] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids):]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


@torch.no_grad()
def heldout_loss(model, tokenizer, rows: list[dict], max_len: int = 1024) -> float:
    """Mean loss per answer token over held-out ``rows`` (the prompt is context, not scored): the one
    figure both sides of bench/quality.py are judged by."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for row in rows:
        enc = encode(tokenizer, row, max_len)
        ids = torch.tensor([enc["input_ids"]], device=device)
        labels = torch.tensor([enc["labels"]], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total += nll.item()
        count += int((target != -100).sum())
    return total / max(count, 1)


def prepare(model_dir: str, method: str):
    """The base model made trainable the way the expert would for ``method``."""
    from peft import LoraConfig, get_peft_model

    kwargs = {}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if method in ("lora", "dora", "qlora"):
        if method == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM",
                                                use_dora=method == "dora"))
    if method == "freeze":
        layers = model.model.layers
        keep = max(1, len(layers) // 4)
        model.requires_grad_(False)
        for layer in layers[-keep:]:
            layer.requires_grad_(True)
        model.model.norm.requires_grad_(True)
    return model


def train(model_dir: str, rows: list[dict], method: str, steps: int, batch: int = 4, max_len: int = 256,
          out: str | None = None, lr: float | None = None) -> tuple[object, dict]:
    """Train as the expert script does; returns (the trained model, its timings)."""
    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = Dataset.from_list([encode(tokenizer, r, max_len) for r in rows])
    model = prepare(model_dir, method)
    args = TrainingArguments(output_dir=out or "/tmp/expert-sft", max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=lr or LR[method], lr_scheduler_type="linear", warmup_steps=0,
                             logging_steps=1, save_strategy="no", report_to=[], seed=42, disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return model, {"train_s": seconds, "steps": trainer.state.global_step}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", default="lora", choices=sorted(LR))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--out", required=True)
    ap.add_argument("--heldout", help="JSONL rows to score after the timed run (mean loss per answer token)")
    a = ap.parse_args()
    with open(a.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    model, timings = train(a.model, rows, a.method, a.steps, a.batch, a.max_len, out=a.out)
    wall = time.perf_counter() - T0  # the script's whole life up to its saved result; scoring is not part of it
    result = {**timings, "wall_s": wall}
    if a.heldout:
        with open(a.heldout) as f:
            held = [json.loads(line) for line in f if line.strip()]
        result["heldout_loss"] = heldout_loss(model, AutoTokenizer.from_pretrained(a.model), held)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
