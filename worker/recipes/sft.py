"""Supervised fine-tuning of a causal LM, top to bottom: data -> load -> method -> train -> save -> register."""
from __future__ import annotations

import functools

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from studio.settings import get_settings
from worker import data, machine_defaults, methods
from worker.context import JobContext
from worker.recipes import common


def train(ctx: JobContext) -> dict:
    job = common.read_job(ctx)
    spec, dataset = job.spec, job.dataset
    method = methods.get(spec.method)

    # 1. Data first: AdaLoRA's rank-budget schedule needs the run's length before the method is applied.
    #    Chat template applied, loss on responses only, cached by content + tokenizer + length.
    tokenizer = AutoTokenizer.from_pretrained(job.base.path, trust_remote_code=job.base.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    positions = (job.base.config or {}).get("max_position_embeddings") or data.MAX_AUTO_LENGTH
    train_ds, eval_ds, report = data.build_sft(
        job.home / dataset.path, tokenizer, max_len=spec.max_seq_length, eval_split=spec.eval_split,
        cap=min(positions, data.MAX_AUTO_LENGTH),
        seed=job.training["seed"], cache_dir=get_settings().path("cache", "tokenized"),
        key=data.cache_key(dataset.content_hash, tokenizer, spec.max_seq_length))
    ctx.say(report.summary())
    # Padding-free packing by default (studio/jobspec.py): batches hold only real tokens.
    args = common.training_arguments(ctx, job, has_eval=eval_ds is not None, packed=spec.packing,
                                     remove_unused_columns=False)
    params = methods.with_context(methods.parse_params(spec.method, spec.method_params),
                                  total_steps=common.optimizer_steps(len(train_ds), args))

    # 2. The base, with the parent version's lineage merged in or (continuing an unmergeable one) trainable.
    #    Seeded first: new weights (LoRA matrices, heads) come from the seed, so a rerun is the same run.
    set_seed(job.training["seed"])
    #    FlashAttention-2 where installed (16-bit weights on CUDA), else PyTorch SDPA (worker/machine_defaults.py).
    attn = machine_defaults.load_kwargs(cuda=job.cuda, half_precision_weights=job.base_dtype != torch.float32)
    load = functools.partial(AutoModelForCausalLM.from_pretrained, **attn)
    model = common.load_start(ctx, job, load, method.load_kwargs(params, job.base.path))
    #    Packed rows without FlashAttention: SDPA on each example, not a dense mask over the whole row.
    if spec.packing and machine_defaults.packed_attention(model):
        ctx.say("fast path: packed rows attend per example (SDPA, no dense mask)")

    # 3. The method makes the model trainable (LoRA matrices, adapters, prompts, top layers, ...).
    model, sizes = common.make_trainable(ctx, job, method, model, params, "causal_lm")

    # 4. Train with the HF Trainer; checkpoints make a retry resume where this attempt stopped.
    trainer = common.build_trainer(ctx, job, method, args, model=model, processing_class=tokenizer,
                                   train_dataset=train_ds, eval_dataset=eval_ds,
                                   data_collator=data.collator(tokenizer, packing=spec.packing, model=model))
    run, final_eval = common.fit(ctx, trainer)

    # 5. Save the trained part (safetensors) with the tokenizer, and describe the version.
    perplexity = float(torch.exp(torch.tensor(final_eval["eval_loss"]))) if "eval_loss" in final_eval else None
    metrics = {**run, "perplexity": perplexity, **sizes, "rows": report.__dict__}
    # the length trained at (chosen from the data when max_seq_length was 0), for evaluation and export
    return common.save_version(ctx, job, method, params, trainer, tokenizer, metrics,
                               max_seq_length=report.max_seq_length)
