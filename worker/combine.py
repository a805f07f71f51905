"""Combine several LoRA versions of one base into a new version, top to bottom: load the base once ->
each parent's adapter -> peft's ``add_weighted_adapter`` (linear, TIES, DARE, cat, SVD) -> save the
combined adapter (safetensors) -> evaluate it on every parent's data set, so the person sees whether the
combination kept each skill. The studio checked the versions at submit (studio/combine.py).

The base is loaded in float32 whatever the parents were trained on: a qlora parent's adapter is plain
LoRA matrices, and combining (then merging, for export or a continued version) onto full-precision
weights loses nothing to re-quantization."""
from __future__ import annotations

import time

from models_db import BaseModel, Dataset, session_scope
from studio.combine import CombineSpec
from studio.settings import get_settings
from worker import lineage
from worker.context import JobContext
from worker.evaluation_job import evaluate_model
from worker.methods.base import save_pretrained_only
from worker.trust import model_code_kwargs, tokenizer_code_kwargs

COMBINED = "default"  # peft saves the adapter called "default" at the folder's top, where lineage loads it


def run_combine_job(ctx: JobContext) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = CombineSpec(**ctx.job.config)
    with session_scope() as db:
        base = db.get(BaseModel, spec.base_model_id)
        start = lineage.chain(db, spec.start_version_id) if spec.start_version_id else []
        parents = [lineage.chain(db, p)[-1] for p in spec.parents]
        datasets = {p.dataset_id: db.get(Dataset, p.dataset_id) for p in parents if p.dataset_id}
        db.expunge_all()
    ctx.writer.put(max_steps=2 + len(datasets), step=0)
    started = time.time()

    # 1. The base once, with what every parent was trained on top of merged in.
    ctx.say(f"loading {base.name}")
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))
    if start:
        model = lineage.load_chain(model, start, last="merge")

    # 2. Every parent's adapter beside the others, then peft's weighted combination as a new adapter.
    names = [f"v{p.id}" for p in parents]
    model = PeftModel.from_pretrained(model, str(lineage.artifact(parents[0])), adapter_name=names[0])
    for p, name in zip(parents[1:], names[1:]):
        model.load_adapter(str(lineage.artifact(p)), adapter_name=name)
    ctx.say(f"combining {', '.join(f'#{p.id} x {w:g}' for p, w in zip(parents, spec.weights))} ({spec.combination})")
    torch.manual_seed(spec.seed)  # DARE drops weights at random: the same job gives the same adapter
    density = spec.density if spec.combination in ("ties", "dare_linear", "dare_ties", "magnitude_prune") else None
    model.add_weighted_adapter(names, spec.weights, COMBINED, combination_type=spec.combination, density=density)
    model.set_adapter(COMBINED)
    for name in names:
        model.delete_adapter(name)
    model.requires_grad_(False)
    model.eval()
    ctx.writer.put(step=1)

    # 3. Save the combined adapter with the tokenizer, where versions keep theirs.
    ctx.say("saving the combined adapter")
    rel = f"versions/job-{ctx.job.id}/adapter"
    out = get_settings().home_abs / rel
    save_pretrained_only(model, out)
    tokenizer = AutoTokenizer.from_pretrained(lineage.artifact(parents[0]), **tokenizer_code_kwargs(base))
    tokenizer.save_pretrained(out)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ctx.writer.put(step=2)
    seconds = time.time() - started

    # 4. Did it keep every skill? Measured on each parent's data set (Evaluation rows, via child.py).
    evaluations = []
    for i, ds in enumerate(datasets.values()):
        cfg = next(p.config for p in parents if p.dataset_id == ds.id)
        evaluations.append(evaluate_model(
            ctx, model, tokenizer, spec.task, ds, max_len=int(cfg.get("max_seq_length") or 512),
            batch_size=int((cfg.get("training") or {}).get("per_device_eval_batch_size") or 8)))
        ctx.writer.put(step=3 + i)
    return {"metrics": {"combine_seconds": seconds}, "evaluations": evaluations,
            "version": _version(spec, base, parents, model, rel, seconds)}


def _version(spec: CombineSpec, base: BaseModel, parents: list, model, rel: str, seconds: float) -> dict:
    """The new version's row: LoRA, every parent with its weight (VersionParent rows), no single data set."""
    peft_config = model.peft_config[COMBINED]
    first = parents[0].config or {}
    method_params = {**(first.get("method_params") or {}), "r": peft_config.r, "lora_alpha": peft_config.lora_alpha,
                     "rank_pattern": "", "alpha_pattern": ""}
    config = {"task": spec.task, "combination": spec.to_json(), "method_params": method_params,
              "max_seq_length": max(int((p.config or {}).get("max_seq_length") or 512) for p in parents),
              "training": {"per_device_eval_batch_size": (first.get("training") or {}).get("per_device_eval_batch_size", 8)},
              "base_model": base.name, "dataset": None}
    metrics = {"combine_seconds": seconds, "r": peft_config.r}
    return {"name": spec.name, "base_model_id": base.id, "parent_id": parents[0].id, "dataset_id": None,
            "method": "lora", "config": config, "metrics": metrics, "artifacts": {"adapter": rel},
            "parents": [[p.id, w] for p, w in zip(parents, spec.weights)]}
