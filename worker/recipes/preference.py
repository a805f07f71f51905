"""Preference objectives on TRL (DPO, KTO, ORPO, SimPO, reward models), top to bottom: data -> load -> method ->
train -> save -> register. TRL supplies the loss and its trainer (worker/recipes/trl_trainers.py says which);
everything around it is the studio's, as for SFT: the start (base, or the parent version's lineage), the method
from the registry, the callbacks that write metrics to the database, checkpoints and resume, cancel and fencing."""
from __future__ import annotations

import functools

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from studio import objectives
from worker import data, data_pairs, machine_defaults, methods
from worker.context import JobContext
from worker.recipes import common, trl_trainers
from worker.recipes.seq_cls import load_classifier

REWARD_LABELS = ["reward"]  # a reward model is a one-output classifier head: the version names its one output


def train(ctx: JobContext) -> dict:
    job = common.read_job(ctx)
    spec, dataset = job.spec, job.dataset
    method, objective = methods.get(spec.method), objectives.get(spec.objective)
    run = trl_trainers.run_for(objective.name)
    trainer_class, config_class = run.classes()
    aims = objectives.parse_params(objective.name, spec.objective_params)

    # 1. Data first: AdaLoRA's rank-budget schedule needs the run's length before the method is applied. TRL
    #    tokenises (chat template, loss on the replies); the records longer than max_length are counted here.
    tokenizer = AutoTokenizer.from_pretrained(job.base.path, trust_remote_code=job.base.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    positions = (job.base.config or {}).get("max_position_embeddings") or data.MAX_AUTO_LENGTH
    max_len = spec.max_seq_length or min(positions, data.MAX_AUTO_LENGTH)  # 0: the model's context, at most 4096
    train_ds, eval_ds, report = data_pairs.build_pairs(
        job.home / dataset.path, tokenizer, unpaired=run.unpaired, max_len=max_len, eval_split=spec.eval_split,
        seed=job.training["seed"], over_length_fate="dropped" if run.drops_over_length else "truncated")
    ctx.say(report.summary())
    args = common.training_arguments(ctx, job, has_eval=eval_ds is not None, args_class=config_class,
                                     remove_unused_columns=False, max_length=max_len, **run.settings(aims))
    params = methods.with_context(methods.parse_params(spec.method, spec.method_params),
                                  total_steps=common.optimizer_steps(len(train_ds), args))

    # 2. The start: the base, or the parent version (an SFT version, typically) with its lineage merged in or
    #    continued. It is also the reference of DPO and KTO. Seeded first: new weights come from the seed.
    set_seed(job.training["seed"])
    if objective.task == "seq_cls":  # a reward model: a one-output head on the base
        load = functools.partial(load_classifier, labels=REWARD_LABELS, tokenizer=tokenizer)
    else:
        attn = machine_defaults.load_kwargs(cuda=job.cuda, half_precision_weights=job.base_dtype != torch.float32)
        load = functools.partial(AutoModelForCausalLM.from_pretrained, **attn)
    model = common.load_start(ctx, job, load, method.load_kwargs(params, job.base.path))

    # 3. The method makes the model trainable (LoRA matrices, adapters, prompts, top layers, ...).
    model, sizes = common.make_trainable(ctx, job, method, model, params, objective.task)
    #    The reference, for the objectives that have one: with a peft adapter TRL keeps a frozen copy of the
    #    starting adapter beside it (a few MB, not a second model); otherwise (full, freeze, the studio's own
    #    adapter) the starting model's log-probabilities are computed once, before the first step, so no copy
    #    of the model is kept. A retry builds the same start, so the reference never moves.
    if objective.needs_reference_model and not trl_trainers.uses_reference_adapter(model):
        args.precompute_ref_log_probs = True
    if objective.needs_reference_model:
        how = ("its log-probabilities computed once before training" if args.precompute_ref_log_probs else
               "the trained adapter's starting state kept frozen beside it")
        start = f"version {spec.parent_version_id}" if spec.parent_version_id else "the base model"
        ctx.say(f"{objective.name}: the reference is the starting model ({start}): {how}")

    # 4. Train with TRL's trainer and the studio's callbacks (its curves: rewards, margins, accuracy);
    #    checkpoints make a retry resume where this attempt stopped.
    trainer = common.build_trainer(ctx, job, method, args, trainer_class=trainer_class, curves=objective.curves,
                                   model=model, processing_class=tokenizer, train_dataset=train_ds,
                                   eval_dataset=eval_ds)
    if not job.cuda:
        trl_trainers.trainable_in_float32(trainer.model)
    run_metrics, final_eval = common.fit(ctx, trainer)

    # 5. Save the trained part (without TRL's reference copy) and describe the version with its held-out figures.
    trl_trainers.drop_reference_adapter(trainer.model)
    held_out = {k: v for k, v in final_eval.items() if k == "eval_loss" or k.removeprefix("eval_") in objective.curves}
    metrics = {**run_metrics, **held_out, **sizes, "rows": report.__dict__}
    measured = {k if k == "eval_loss" else k.removeprefix("eval_"): v for k, v in held_out.items()}
    labels = {"labels": REWARD_LABELS} if objective.task == "seq_cls" else {}
    return common.save_version(ctx, job, method, params, trainer, tokenizer, metrics, measured=measured,
                               max_seq_length=max_len, **labels)
