"""Supervised fine-tuning of a causal LM, top to bottom: load -> method -> data -> train -> save -> register."""
from __future__ import annotations

import resource
import time

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, EarlyStoppingCallback,
                          PrinterCallback, Trainer, TrainingArguments)

from models_db import BaseModel, Dataset, session_scope
from studio.jobspec import TrainSpec
from studio.settings import get_settings
from worker import data, lineage, methods
from worker.callbacks import StudioCallback, latest_complete_checkpoint
from worker.context import JobContext


def train(ctx: JobContext) -> dict:
    spec = TrainSpec(**ctx.job.config)
    home = get_settings().home_abs
    with session_scope() as db:
        base, dataset = db.get(BaseModel, spec.model_id), db.get(Dataset, spec.dataset_id)
        ancestors = lineage.chain(db, spec.parent_version_id) if spec.parent_version_id else []
        db.expunge_all()
    method = methods.get(spec.method)
    params = methods.parse_params(spec.method, spec.method_params)
    cuda = torch.cuda.is_available()
    training = dict(spec.training)
    # transformers 5 folded warmup_ratio into warmup_steps (a value below 1 is a fraction of the run)
    ratio = training.pop("warmup_ratio", 0.0)
    training["warmup_steps"] = ratio or training.get("warmup_steps", 0)
    if not cuda:  # mixed precision is a GPU affair; on CPU the studio trains in fp32
        training.update(bf16=False, fp16=False)
    elif not training["bf16"] and not training["fp16"]:
        training["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True

    # 1. The base model, with the parent version's weights merged in when continuing from one.
    #    A frozen base is loaded in 16-bit on GPU (it is never updated); trained weights stay fp32.
    ctx.say(f"loading {base.name}")
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    frozen_base = spec.method not in ("full", "freeze")
    dtype = (torch.bfloat16 if training["bf16"] else torch.float16) if cuda and frozen_base else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=dtype, **method.load_kwargs(params))
    if ancestors:
        model = lineage.load_chain(model, ancestors, merge_last=True)

    # 2. The method makes the model trainable (LoRA matrices, adapters, prompts, top layers, ...).
    model = method.apply(model, params, spec.task)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx.say(f"{spec.method}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.3f}%)")

    # 3. Data: chat template applied, loss on responses only, cached by content + tokenizer + length.
    cache = get_settings().path("cache", "tokenized")
    train_ds, eval_ds, report = data.build_sft(
        home / dataset.path, tokenizer, max_len=spec.max_seq_length, eval_split=spec.eval_split,
        seed=training["seed"], cache_dir=cache, key=data.cache_key(dataset.content_hash, tokenizer, spec.max_seq_length))
    ctx.say(report.summary())

    # 4. Train with the HF Trainer; checkpoints make a retry resume where this attempt stopped.
    early = spec.early_stopping_patience > 0 and eval_ds is not None
    if early:  # the best checkpoint must be among those evaluated
        training["save_steps"] = training["eval_steps"]
    args = TrainingArguments(
        output_dir=str(ctx.dir / "checkpoints"), **training,
        eval_strategy="steps" if eval_ds is not None else "no",
        load_best_model_at_end=early, metric_for_best_model="eval_loss" if early else None,
        gradient_checkpointing_kwargs={"use_reentrant": False} if training["gradient_checkpointing"] else None,
        include_num_input_tokens_seen="non_padding", report_to=[], disable_tqdm=True,
        remove_unused_columns=False, use_cpu=not cuda, dataloader_pin_memory=cuda,
    )
    callbacks = [StudioCallback(ctx)] + ([EarlyStoppingCallback(spec.early_stopping_patience)] if early else [])
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=data.IGNORE),
                      callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # StudioCallback prints one readable line per log instead
    resume = latest_complete_checkpoint(ctx.dir / "checkpoints")
    if resume:
        ctx.say(f"resuming from {resume.rsplit('/', 1)[-1]}")
    started = time.time()
    out = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    final_eval = trainer.evaluate() if eval_ds is not None else {}

    # 5. Save the trained part (safetensors) with the tokenizer, and describe the version.
    ctx.say("saving")
    rel = f"versions/job-{ctx.job.id}/adapter"
    method.save(trainer.model, home / rel)
    tokenizer.save_pretrained(home / rel)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "train_loss": losses[-1] if losses else out.training_loss,
        "first_train_loss": losses[0] if losses else None,
        "eval_loss": final_eval.get("eval_loss"),
        "perplexity": float(torch.exp(torch.tensor(final_eval["eval_loss"]))) if "eval_loss" in final_eval else None,
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_s": trainer.state.num_input_tokens_seen / seconds if seconds else None,
        "peak_memory_gb": peak / 2**30,
        "peak_memory_kind": "cuda_allocated" if cuda else "cpu_rss",
        "trainable_params": trainable, "total_params": total, "trainable_ratio": trainable / total,
        "rows": report.__dict__,
    }
    config = {**spec.to_json(), "training": training, "base_model": base.name, "dataset": dataset.name}
    return {
        "step": trainer.state.global_step,
        "metrics": metrics,
        "version": {
            "name": f"{base.name}-{spec.method}-job{ctx.job.id}", "base_model_id": base.id,
            "parent_id": spec.parent_version_id, "dataset_id": dataset.id, "method": spec.method,
            "config": config, "metrics": metrics, "artifacts": {"adapter": rel},
        },
    }
