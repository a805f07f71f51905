"""Exports of a model version: a merged standalone model, or the trained part alone, with a model card."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from models_db import BaseModel, ModelVersion, session_scope
from studio.settings import get_settings
from worker import lineage, methods
from worker.context import JobContext
from worker.errors import UserFacingError


def model_card(version: ModelVersion, base: BaseModel, merged: bool) -> str:
    """A README naming base, data set, method, hyperparameters, metrics and lineage."""
    cfg, m = version.config, version.metrics
    keep = ("train_loss", "eval_loss", "perplexity", "train_seconds", "steps", "tokens_per_s",
            "peak_memory_gb", "trainable_params", "total_params", "trainable_ratio")
    metric_rows = "\n".join(f"| {k} | {m[k]:.6g} |" if isinstance(m.get(k), float) else f"| {k} | {m.get(k)} |"
                            for k in keep if m.get(k) is not None)
    hp = {**cfg.get("method_params", {}), **cfg.get("training", {}),
          "max_seq_length": cfg.get("max_seq_length"), "eval_split": cfg.get("eval_split")}
    hp_rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    usage = (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained('.')\ntokenizer = AutoTokenizer.from_pretrained('.')\n```"
        if merged else
        f"This `{version.method}` version cannot be merged into the base weights. Load the base, then the adapter:\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
        f"base = AutoModelForCausalLM.from_pretrained('{base.name}')  # the base model named above\n"
        "model = PeftModel.from_pretrained(base, './adapter')\n```"
    )
    return f"""# {version.name}

Fine-tuned with FineTune Studio.

- **Base model**: {base.name} (imported from `{base.source}`)
- **Parent version**: {version.parent_id or "none (trained from the base)"}
- **Data set**: {cfg.get("dataset")} (id {version.dataset_id})
- **Method**: {version.method}
- **Contents**: {"merged standalone model (safetensors)" if merged else "the trained part only (safetensors)"}

## Metrics
| metric | value |
|---|---|
{metric_rows}

## Hyperparameters
| key | value |
|---|---|
{hp_rows}

## Use
{usage}
"""


def export_version(version_id: int, out_dir: Path, *, merged: bool, say=print) -> Path:
    """Write the export to ``out_dir``. Merged: base + lineage merged, saved as safetensors with
    config, tokenizer and generation config. Otherwise: the adapter folder and a loading snippet."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with session_scope() as db:
        versions = lineage.chain(db, version_id)
        version = versions[-1]
        base = db.get(BaseModel, version.base_model_id)
        db.expunge_all()
    method = methods.get(version.method)
    out_dir = Path(out_dir)
    if merged and method.merge is None:
        raise UserFacingError(
            f"{version.method} cannot be merged into the base model; export the adapter instead (--merged off).")
    out_dir.mkdir(parents=True, exist_ok=True)
    if merged:
        say(f"loading {base.name} in float32 to merge onto full-precision weights")
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        model = lineage.load_chain(model, versions, merge_last=True)
        say("saving merged weights")
        model.save_pretrained(out_dir, safe_serialization=True)
        AutoTokenizer.from_pretrained(lineage.artifact(version)).save_pretrained(out_dir)
    else:
        shutil.copytree(lineage.artifact(version), out_dir / "adapter", dirs_exist_ok=True)
    (out_dir / "README.md").write_text(model_card(version, base, merged))
    (out_dir / "studio_version.json").write_text(json.dumps(
        {"version_id": version.id, "name": version.name, "method": version.method, "base_model": base.name,
         "parents": [v.id for v in versions[:-1]], "config": version.config, "metrics": version.metrics},
        indent=2, default=str))
    return out_dir


def run_export_job(ctx: JobContext) -> dict:
    """The worker side of the Models tab's download buttons: build the export, zip it."""
    version_id, merged = ctx.job.config["version_id"], bool(ctx.job.config.get("merged"))
    kind = "merged" if merged else "adapter"
    exports = get_settings().path("exports")
    stage = ctx.dir / f"v{version_id}-{kind}"
    ctx.writer.put(max_steps=3, step=0)
    export_version(version_id, stage, merged=merged, say=ctx.say)
    ctx.writer.put(step=2)
    ctx.say("zipping")
    zip_path = shutil.make_archive(str(exports / f"version-{version_id}-{kind}"), "zip", stage)
    shutil.rmtree(stage, ignore_errors=True)
    ctx.writer.put(step=3)
    return {"zip": str(Path(zip_path).relative_to(get_settings().home_abs)), "version_id": version_id, "merged": merged}
