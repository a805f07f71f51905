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

MERGE_REFUSED = ("{method} cannot be merged into the base model (its weights are not a change to the base's); "
                 "export the adapter instead (--merged off): you get the adapter, the base it needs and a loading snippet.")


def auto_class(version: ModelVersion) -> tuple[str, str]:
    """The transformers class that loads the version, and the ``from_pretrained`` arguments its base
    needs (a classifier's base gets a head for the version's labels)."""
    if version.config.get("task") == "seq_cls":
        return "AutoModelForSequenceClassification", f", id2label={dict(enumerate(version.config['labels']))!r}"
    return "AutoModelForCausalLM", ""


def loading_snippet(version: ModelVersion, base: BaseModel, versions: list[ModelVersion], merged: bool) -> str:
    """How to load the export: a standalone model, or the base plus the adapter (peft's or the studio's)."""
    folder = lineage.artifact(version)
    cls, base_args = auto_class(version)
    if merged or not (folder / "adapter_config.json").exists():  # merged, or full/freeze: a whole model
        where = "." if merged else "./adapter"
        return (f"```python\nfrom transformers import {cls}, AutoTokenizer\n"
                f"model = {cls}.from_pretrained('{where}')\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{where}')\n```")
    below = [v for v in versions[:-1] if methods.get(v.method).mergeable]
    if below:  # the adapter was trained on the base with these versions merged in
        base_line = (f"BASE = 'merged-v{below[-1].id}'  # `studio versions export {below[-1].id} --out merged-v{below[-1].id}"
                     f" --merged`: {base.name} with the versions this one was trained on merged in")
    else:
        base_line = f"BASE = {base.path!r}  # the studio's copy of {base.name}, imported from {base.source}"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    if "peft_type" in adapter_config:
        load = "from peft import PeftModel\nmodel = PeftModel.from_pretrained(base, './adapter')"
    else:  # the studio's own bottleneck adapter: its loader ships with FineTune Studio (pip install finetune-studio)
        load = f"from worker.methods import get\nmodel = get({version.method!r}).load(base, './adapter')"
    what = (f"This is the `{version.method}` adapter alone (export with --merged for a standalone model)"
            if methods.get(version.method).mergeable else
            f"This `{version.method}` version cannot be merged into the base weights")
    return (f"{what}. Load the base, then the adapter:\n\n"
            f"```python\nfrom transformers import {cls}, AutoTokenizer\n"
            f"{base_line}\nbase = {cls}.from_pretrained(BASE{base_args})\n"
            f"tokenizer = AutoTokenizer.from_pretrained('./adapter')\n{load}\n```")


def model_card(version: ModelVersion, base: BaseModel, merged: bool, versions: list[ModelVersion]) -> str:
    """A README naming base, data set, method, hyperparameters, metrics and lineage."""
    cfg, m = version.config, version.metrics
    keep = ("train_loss", "eval_loss", "perplexity", "eval_accuracy", "eval_f1", "train_seconds", "steps",
            "tokens_per_s", "peak_memory_gb", "trainable_params", "total_params", "trainable_ratio")
    metric_rows = "\n".join(f"| {k} | {m[k]:.6g} |" if isinstance(m.get(k), float) else f"| {k} | {m.get(k)} |"
                            for k in keep if m.get(k) is not None)
    hp = {**cfg.get("method_params", {}), **cfg.get("training", {}),
          "max_seq_length": cfg.get("max_seq_length"), "eval_split": cfg.get("eval_split")}
    hp_rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    usage = loading_snippet(version, base, versions, merged)
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
            MERGE_REFUSED.format(method=version.method))
    out_dir.mkdir(parents=True, exist_ok=True)
    if merged:
        say(f"loading {base.name} in float32 to merge onto full-precision weights")
        tokenizer = AutoTokenizer.from_pretrained(lineage.artifact(version))
        if version.config.get("task") == "seq_cls":  # a classifier: the base gets a head for the version's labels
            from worker.recipes.seq_cls import load_classifier

            model = load_classifier(base.path, version.config["labels"], tokenizer, dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        model = lineage.load_chain(model, versions, last="merge")
        say("saving merged weights")
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    else:
        shutil.copytree(lineage.artifact(version), out_dir / "adapter", dirs_exist_ok=True)
    (out_dir / "README.md").write_text(model_card(version, base, merged, versions))
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
