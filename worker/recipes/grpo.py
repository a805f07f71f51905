"""GRPO (and RLOO) on TRL, top to bottom: data -> load -> method -> rewards -> train -> save -> register. For each
prompt the policy samples num_generations completions; the job's rewards (worker/rewards.py) score them against the
row's reference answer, and TRL's GRPOTrainer (RLOOTrainer) moves the policy toward the completions that beat their
group (the mean of the others'). Around it,
everything is the studio's, as for SFT and DPO: the start (base, or the parent version's lineage), the method from
the registry, the callbacks that write metrics (and here a few sampled completions per logging step) to the
database, checkpoints and resume, cancel and fencing."""
from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from studio import objectives
from studio.objectives import rewards as reward_names
from worker import data, machine_defaults, methods
from worker import rewards as worker_rewards
from worker.context import JobContext
from worker.recipes import common, trl_trainers


def train(ctx: JobContext) -> dict:
    job = common.read_job(ctx)
    spec, dataset = job.spec, job.dataset
    method, objective = methods.get(spec.method), objectives.get(spec.objective)
    run = trl_trainers.run_for(objective.name)
    trainer_class, config_class = run.classes()
    aims = objectives.parse_params(objective.name, spec.objective_params)
    chosen = reward_names.parse(aims.reward, aims.max_completion_length, objective.name)

    # 1. Data first: prompts (the question as the user's turn, through the chat template as SFT used) with the
    #    row's reference answer, which the rewards compare the completions with.
    tokenizer = AutoTokenizer.from_pretrained(job.base.path, trust_remote_code=job.base.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    positions = (job.base.config or {}).get("max_position_embeddings") or data.MAX_AUTO_LENGTH
    max_len = spec.max_seq_length or min(positions, data.MAX_AUTO_LENGTH)  # 0: the model's context, at most 4096
    train_ds, eval_ds, report = prompts_with_answers(job.home / dataset.path, tokenizer, max_len=max_len,
                                                     eval_split=spec.eval_split, seed=job.training["seed"],
                                                     numeric=any(r.name == "numeric_match" for r in chosen))
    ctx.say(report.summary(aims.max_completion_length))
    #    An evaluation batch holds whole groups of generations, as a training batch must (checked at submit).
    job.training["per_device_eval_batch_size"] = whole_groups(job.training["per_device_eval_batch_size"],
                                                              aims.num_generations)
    args = common.training_arguments(ctx, job, has_eval=eval_ds is not None, args_class=config_class,
                                     remove_unused_columns=False, **run.settings(aims))
    #    TRL repeats each prompt num_generations times: the batches count completions.
    completions = len(train_ds) * aims.num_generations
    params = methods.with_context(methods.parse_params(spec.method, spec.method_params),
                                  total_steps=common.optimizer_steps(completions, args))

    # 2. The start: the base, or the parent version (an SFT version, typically) with its lineage merged in or
    #    continued. Seeded first: new weights come from the seed.
    set_seed(job.training["seed"])
    attn = machine_defaults.load_kwargs(cuda=job.cuda, half_precision_weights=job.base_dtype != torch.float32)
    load = functools.partial(AutoModelForCausalLM.from_pretrained, **attn)
    model = common.load_start(ctx, job, load, method.load_kwargs(params, job.base.path))

    # 3. The method makes the model trainable (LoRA matrices, adapters, top layers, ...).
    model, sizes = common.make_trainable(ctx, job, method, model, params, objective.task)
    #    With beta > 0 the KL term needs the starting model: a peft adapter's start is kept as a frozen copy
    #    beside it (TRL's "ref" adapter, a few MB); any other method gets a second model, which TRL loads from
    #    the start's folder (the base, or the merged lineage saved here first).
    reference = ctx.dir / "reference"
    if aims.beta > 0:
        start = f"version {spec.parent_version_id}" if spec.parent_version_id else "the base model"
        if trl_trainers.uses_reference_adapter(model):
            ctx.say(f"{objective.name}: beta {aims.beta:g}: the reference is the starting model ({start}), its adapter "
                    "kept frozen")
        else:
            if job.ancestors:
                model.save_pretrained(reference, safe_serialization=True)
                model.config._name_or_path = str(reference)
            ctx.say(f"{objective.name}: beta {aims.beta:g}: the reference is the starting model ({start}), a second "
                    "copy in memory")

    # 4. The rewards, then train with TRL's trainer and the studio's callbacks (reward per reward function, KL,
    #    completion length) plus a few sampled completions per logging step; checkpoints make a retry resume.
    funcs, recorder = worker_rewards.build(chosen, cuda=job.cuda)
    ctx.say("rewards: " + ", ".join(r.describe() for r in chosen))
    trainer = common.build_trainer(ctx, job, method, args, trainer_class=trainer_class, curves=objective.curves,
                                   model=model, reward_funcs=funcs, processing_class=tokenizer,
                                   train_dataset=train_ds, eval_dataset=eval_ds)
    trainer.add_callback(worker_rewards.SamplesCallback(ctx, recorder, {r.name: r.weight for r in chosen}))
    if not job.cuda:
        trl_trainers.trainable_in_float32(trainer.model)
    run_metrics, final_eval = common.fit(ctx, trainer)

    # 5. Save the trained part (without TRL's reference copy) and describe the version with its held-out figures.
    trl_trainers.drop_reference_adapter(trainer.model)
    shutil.rmtree(reference, ignore_errors=True)
    held_out = {k: v for k, v in final_eval.items() if k == "eval_loss" or k.removeprefix("eval_") in objective.curves}
    metrics = {**run_metrics, **held_out, **sizes, "rows": report.__dict__}
    measured = {k if k == "eval_loss" else k.removeprefix("eval_"): v for k, v in held_out.items()}
    return common.save_version(ctx, job, method, params, trainer, tokenizer, metrics, measured=measured,
                               max_seq_length=max_len)


@dataclass
class PromptsReport:
    rows: int
    train_rows: int
    eval_rows: int
    over_length: int  # prompts longer than max_seq_length tokens
    max_seq_length: int
    eval_source: str = ""
    no_number: int = 0  # references without a number (numeric_match gives them 0)

    def summary(self, max_completion_length: int) -> str:
        parts = [f"{self.rows} prompts: {self.train_rows} train, {self.eval_rows} eval"
                 + (f" ({self.eval_source})" if self.eval_source else "")
                 + f"; up to {max_completion_length} tokens sampled per completion"]
        if self.over_length:
            parts.append(f"{self.over_length} prompts are longer than max_seq_length {self.max_seq_length} tokens "
                         "(kept whole: TRL's GRPO does not cut prompts)")
        if self.no_number:
            parts.append(f"{self.no_number} references have no number: numeric_match scores them 0 "
                         "(exact_match compares the answer as text)")
        return "; ".join(parts)


def prompts_with_answers(path: Path, tokenizer, *, max_len: int, eval_split: float, seed: int, numeric: bool):
    """The trainer's train and eval records (``prompt``, ``answer``) from a qa data set's canonical rows and a
    :class:`PromptsReport`. A split stored with the data set version wins; otherwise ``eval_split`` of the rows
    are held out by ``seed``. With a chat template the prompt is the user's turn, else the question as text."""
    import datasets

    def read(p: Path) -> list[dict]:
        with open(p, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    rows = read(Path(path))
    eval_file = data.stored_eval(Path(path))
    held, source = (read(eval_file), "the data set's stored split") if eval_file else ([], "")
    if eval_file is None and eval_split > 0 and len(rows) >= 4:
        parts = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(test_size=eval_split,
                                                                                           seed=seed)
        held = [rows[i] for i in parts["test"]["i"]]
        rows, source = [rows[i] for i in parts["train"]["i"]], f"eval_split {eval_split} of the rows, seed {seed}"
    chat = bool(tokenizer.chat_template)

    def record(row: dict) -> dict:
        question = row["question"]
        prompt = [{"role": "user", "content": question}] if chat else question + "\n\n"
        return {"prompt": prompt, "answer": str(row["answer"])}

    train, evals = [record(r) for r in rows], [record(r) for r in held]
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) if chat
             else r["prompt"] for r in train + evals]
    over = sum(len(ids) > max_len for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0
    no_number = sum(reward_names.numeric_match(r["answer"], r["answer"]) == 0 for r in train + evals) if numeric else 0
    report = PromptsReport(len(train) + len(evals), len(train), len(evals), over, max_len, source, no_number)
    return (datasets.Dataset.from_list(train), datasets.Dataset.from_list(evals) if evals else None, report)


def whole_groups(batch: int, generations: int) -> int:
    """The evaluation batch size rounded up to whole groups of ``generations`` completions."""
    return max(-(-batch // generations), 1) * generations
