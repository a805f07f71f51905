"""Evaluate a model version on a data set version, on a worker: the ``evaluate`` job.

The data goes through the training tokenisation (worker/data.py: chat template, loss on the responses
only; worker/data_cls.py: the classifier's label indices), and the numbers through the HF Trainer's own
``evaluate`` with the version's eval batch size, so they are the figures training reports for the same
rows. Causal LM: eval_loss and perplexity = exp(eval_loss). Classification: accuracy, macro F1 and eval_loss.
Rows: the data set's stored eval split, or all its training rows when it has none (``split="train"``).
A benchmark data set (multiple_choice, qa) is also scored on the same rows by lm-evaluation-harness
(worker/benchmark.py); preference pairs by how often the chosen answer scores higher (worker/pair_scores.py). A base model is evaluated as it is (``base_model_id`` instead of ``version_id``)."""
from __future__ import annotations

import math

from models_db import BaseModel, Dataset, session_scope
from studio import benchmarks, store
from studio.evaluations import task_of
from studio.settings import get_settings
from worker import data, data_cls, lineage
from worker.context import JobContext
from worker.errors import UserFacingError
from worker.trust import model_code_kwargs, tokenizer_code_kwargs


def load_version(version_id: int):
    """The version rebuilt for inference from its lineage on a float32 base, with its tokenizer.
    Returns (model, tokenizer, version); a classifier's base gets a head for the version's labels."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with session_scope() as db:
        versions = lineage.chain(db, version_id)
        base = db.get(BaseModel, versions[-1].base_model_id)
        db.expunge_all()
    version = versions[-1]
    tokenizer = AutoTokenizer.from_pretrained(lineage.artifact(version), **tokenizer_code_kwargs(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task_of(version) == "seq_cls":
        from worker.recipes.seq_cls import load_classifier

        model = load_classifier(base.path, version.config["labels"], tokenizer, dtype=torch.float32,
                                **model_code_kwargs(base))
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))
    return lineage.load_chain(model, versions, last="inference"), tokenizer, version


def load_base(base_model_id: int):
    """A base model as it is (float32), with its tokenizer: the "before" of every comparison."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with session_scope() as db:
        base = db.get(BaseModel, base_model_id)
        if base is None:
            raise UserFacingError(f"base model {base_model_id} no longer exists")
        db.expunge(base)
    path = store.local_model(base.path)
    tokenizer = AutoTokenizer.from_pretrained(path, **tokenizer_code_kwargs(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **model_code_kwargs(base)), tokenizer


def evaluate_model(ctx: JobContext, model, tokenizer, task: str, dataset: Dataset, *, max_len: int,
                   batch_size: int = 8, labels: list[str] | None = None) -> dict:
    """Measure ``model`` on ``dataset``'s eval split (or its training rows when it has none).
    Returns ``{"dataset_id", "split", "rows", "metrics"}`` (an Evaluation row's fields)."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from worker.recipes.seq_cls import classification_metrics

    # the data set from the shared store when registered on another machine (studio/store.py)
    path, cache = store.local_dataset(dataset.path), get_settings().path("cache", "tokenized")
    if dataset.format == "preference":  # pairs: which answer the model (or reward model) scores higher
        from worker import pair_scores

        figures, examples, split, n = pair_scores.score(model, tokenizer, path, max_len=max_len,
                                                       reward_model=task == "seq_cls", say=ctx.say)
        return {"dataset_id": dataset.id, "split": split, "rows": n, "metrics": figures, "examples": examples}
    if task == "seq_cls":
        positions = getattr(model.config, "max_position_embeddings", None)
        max_len = min(max_len, positions or max_len)
    key = data.cache_key(dataset.content_hash, tokenizer, max_len)  # the training run's cache, when it had one
    if task == "seq_cls":
        train, evals, report = data_cls.build_cls(path, tokenizer, max_len=max_len, eval_split=0, seed=0,
                                                  cache_dir=cache, key=key)
        if labels is not None and report.labels != list(labels):
            raise UserFacingError(f"dataset {dataset.id} has the labels {', '.join(report.labels)} but the classifier "
                                  f"was trained on {', '.join(labels)}; evaluate it on data with exactly its labels.")
        collator, compute, keep_columns = DataCollatorWithPadding(tokenizer), classification_metrics, False
    else:
        train, evals, report = data.build_sft(path, tokenizer, max_len=max_len, eval_split=0, seed=0,
                                              cache_dir=cache, key=key)
        collator, compute, keep_columns = data.collator(tokenizer, model=model), None, True
    rows, split = (evals, "eval") if evals is not None else (train, "train")
    ctx.say(f"evaluating on {len(rows)} {'eval' if split == 'eval' else 'training'} rows of dataset {dataset.id}")
    cuda = torch.cuda.is_available()
    args = TrainingArguments(output_dir=str(ctx.dir / "eval"), per_device_eval_batch_size=batch_size, report_to=[],
                             use_cpu=not cuda, dataloader_pin_memory=cuda, disable_tqdm=True,
                             remove_unused_columns=not keep_columns)
    trainer = Trainer(model=model, args=args, eval_dataset=rows, data_collator=collator, processing_class=tokenizer,
                      compute_metrics=compute)
    out = trainer.evaluate()
    evaluation = {"dataset_id": dataset.id, "split": split, "rows": len(rows), "metrics": measured(task, out)}
    if benchmarks.is_benchmark(dataset.format):  # the same rows scored by lm-evaluation-harness, beside the loss
        from worker import benchmark

        figures, examples = benchmark.score(model, tokenizer, dataset.format,
                                            benchmark.read_rows(data.stored_eval(path) or path),
                                            batch_size=batch_size, say=ctx.say)
        evaluation["metrics"].update(figures)
        evaluation["examples"] = examples
    return evaluation


def measured(task: str, out: dict) -> dict:
    """The Evaluation row's metrics from the Trainer's ``eval_*`` figures."""
    loss = float(out["eval_loss"])
    if task == "seq_cls":
        return {"accuracy": float(out["eval_accuracy"]), "f1": float(out["eval_f1"]), "eval_loss": loss}
    return {"eval_loss": loss, "perplexity": math.exp(loss) if loss < 700 else float("inf")}


def run_evaluate_job(ctx: JobContext) -> dict:
    """The ``evaluate`` job: load the version (or the base model as it is), measure it on the data set;
    job_process.py stores the row (and a benchmark's per-question results)."""
    cfg_job = ctx.job.config
    dataset_id = int(cfg_job["dataset_id"])
    ctx.writer.put(max_steps=2, step=0)
    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        if dataset is None:
            raise UserFacingError(f"dataset {dataset_id} no longer exists")
        db.expunge(dataset)
    if cfg_job.get("version_id") is not None:
        version_id = int(cfg_job["version_id"])
        ctx.say(f"loading version {version_id}")
        model, tokenizer, version = load_version(version_id)
        cfg, task, target = version.config or {}, task_of(version), {"version_id": version_id}
    else:
        base_id = int(cfg_job["base_model_id"])
        ctx.say(f"loading base model {base_id} as it is")
        model, tokenizer = load_base(base_id)
        cfg, task, target = {}, "causal_lm", {"base_model_id": base_id}
    ctx.writer.put(step=1)
    evaluation = evaluate_model(ctx, model, tokenizer, task, dataset,
                                max_len=int(cfg.get("max_seq_length") or 512),
                                batch_size=int((cfg.get("training") or {}).get("per_device_eval_batch_size") or 8),
                                labels=cfg.get("labels"))
    ctx.writer.put(step=2)
    ctx.say(", ".join(f"{k} {v:.4g}" for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))))
    return {"evaluations": [{**target, **evaluation}]}
