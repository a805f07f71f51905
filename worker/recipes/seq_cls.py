"""Sequence classification, top to bottom: data -> load with a new head -> method -> train -> save -> register.

Works for encoders (BERT, MiniLM), whose head reads the first token, and for decoders (Llama,
SmolLM2), whose head reads the last token before the padding, so they need a known pad token."""
from __future__ import annotations

import numpy as np
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          set_seed)

from studio.settings import get_settings
from worker import data, data_cls, methods
from worker.context import JobContext
from worker.recipes import common

CLS_DEFAULT_LENGTH = 512  # max_seq_length 0 for a classifier: its texts are short, and a head needs no more


def load_classifier(path, labels: list[str], tokenizer, **kwargs):
    """The base model with a classification head sized and named for ``labels``, and the tokenizer's
    pad token (a decoder's head reads the last token before the padding).

    The head starts random; every method trains it in full (peft keeps it in ``modules_to_save``)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def classification_metrics(prediction) -> dict:
    """Accuracy and macro F1 (the mean over the classes seen in the labels or the predictions)."""
    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    predicted, actual = np.argmax(logits, axis=-1), np.asarray(prediction.label_ids)
    f1 = []
    for c in np.union1d(actual, predicted):
        tp = np.sum((predicted == c) & (actual == c))
        wrong = np.sum((predicted == c) != (actual == c))  # false positives + false negatives
        f1.append(2 * tp / (2 * tp + wrong))
    return {"accuracy": float(np.mean(predicted == actual)), "f1": float(np.mean(f1))}


def train(ctx: JobContext) -> dict:
    job = common.read_job(ctx)
    spec, dataset = job.spec, job.dataset
    method = methods.get(spec.method)

    # 1. Data first: its labels size the head, and its length sets schedules such as AdaLoRA's.
    tokenizer = AutoTokenizer.from_pretrained(job.base.path, trust_remote_code=job.base.trust_remote_code)
    if tokenizer.pad_token is None:  # decoders: padding marks where the last real token is
        tokenizer.pad_token = tokenizer.eos_token
    positions = getattr(AutoConfig.from_pretrained(job.base.path, trust_remote_code=job.base.trust_remote_code),
                        "max_position_embeddings", None)
    wanted = spec.max_seq_length or CLS_DEFAULT_LENGTH  # 0 ("from the data"): classification texts are short
    max_len = min(wanted, positions or wanted)
    train_ds, eval_ds, report = data_cls.build_cls(
        job.home / dataset.path, tokenizer, max_len=max_len, eval_split=spec.eval_split, seed=job.training["seed"],
        cache_dir=get_settings().path("cache", "tokenized"),
        key=data.cache_key(dataset.content_hash, tokenizer, max_len))
    ctx.say(report.summary())
    # remove_unused_columns drops what the model does not take (a decoder takes no token_type_ids)
    args = common.training_arguments(ctx, job, has_eval=eval_ds is not None, remove_unused_columns=True)
    params = methods.with_context(methods.parse_params(spec.method, spec.method_params),
                                  total_steps=common.optimizer_steps(len(train_ds), args))

    # 2. The base with a new head for these labels, and the parent version's lineage (the studio
    #    refuses a parent trained on other labels). Seeded first: the head and the method's new
    #    weights come from the seed, so a rerun is the same run.
    def load(path, **kwargs):
        return load_classifier(path, report.labels, tokenizer, **kwargs)

    set_seed(job.training["seed"])
    model = common.load_start(ctx, job, load, method.load_kwargs(params, job.base.path))

    # 3. The method makes the model trainable; the head always trains in full.
    model, sizes = common.make_trainable(ctx, job, method, model, params, "seq_cls")

    # 4. Train with the HF Trainer; accuracy and macro F1 on the eval split at every evaluation.
    trainer = common.build_trainer(ctx, job, method, args, model=model, processing_class=tokenizer,
                                   train_dataset=train_ds, eval_dataset=eval_ds,
                                   data_collator=DataCollatorWithPadding(tokenizer),
                                   compute_metrics=classification_metrics)
    run, final_eval = common.fit(ctx, trainer)

    # 5. Save the trained part with the head, and describe the version.
    metrics = {
        **run, "eval_accuracy": final_eval.get("eval_accuracy"), "eval_f1": final_eval.get("eval_f1"), **sizes,
        "label_distribution": {"train": report.train_counts, "eval": report.eval_counts}, "rows": report.__dict__,
    }
    return common.save_version(ctx, job, method, params, trainer, tokenizer, metrics, labels=report.labels,
                               max_seq_length=max_len)
