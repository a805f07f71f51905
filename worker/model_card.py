"""What ships beside an exported model: the model card (lineage, data set, method, hyperparameters,
metrics) and, for a version that is not merged, the snippet that loads it onto its base."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from models_db import BaseModel, ModelVersion
from models_db import queries as q
from studio import combine, exports
from worker import lineage, methods


def auto_class(version: ModelVersion) -> tuple[str, str]:
    """The transformers class that loads the version, and the ``from_pretrained`` arguments its base
    needs: a classifier's base gets a head for the version's labels and the tokenizer's pad token (a
    decoder's head reads the last token before the padding; many decoders' configs name no pad token)."""
    if version.config.get("task") == "seq_cls":
        return ("AutoModelForSequenceClassification",
                f", id2label={dict(enumerate(version.config['labels']))!r}, pad_token_id=tokenizer.pad_token_id")
    return "AutoModelForCausalLM", ""


def standalone_snippet(fmt: exports.ExportFormat, cls: str = "AutoModelForCausalLM", where: str = ".") -> str:
    """How to load a standalone export (merged, or a base model converted): ONNX, GGUF, or a transformers folder."""
    if fmt.kind == "onnx":
        return ("```python\nimport numpy as np, onnxruntime as ort\nfrom transformers import AutoTokenizer\n"
                "tokenizer = AutoTokenizer.from_pretrained('.')\n"
                "session = ort.InferenceSession('model.onnx')\n"
                "batch = tokenizer(['Hello'], return_tensors='np')\n"
                "logits = session.run(['logits'], {'input_ids': batch['input_ids'].astype(np.int64),\n"
                "                                  'attention_mask': batch['attention_mask'].astype(np.int64)})[0]\n```\n\n"
                "The graph takes the whole sequence and returns logits for every position (no KV cache).")
    if fmt.kind == "gguf":
        name = f"model-{fmt.gguf_type}.gguf"
        return (f"```sh\nollama create my-model -f Modelfile && ollama run my-model   # Ollama, its chat template\n"
                f"llama-cli -m {name} -cnv                                     # llama.cpp\n```\n\n"
                "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer  # needs gguf; dequantizes\n"
                f"model = AutoModelForCausalLM.from_pretrained('.', gguf_file='{name}')\n"
                f"tokenizer = AutoTokenizer.from_pretrained('.', gguf_file='{name}')\n```")
    extra = ", device_map='auto'" if fmt.kind == "bnb" else ""
    needs = ("\n\nNeeds bitsandbytes (CUDA, or its CPU backend); the quantization settings are in config.json."
             if fmt.kind == "bnb" else "")
    return (f"```python\nfrom transformers import {cls}, AutoTokenizer\n"
            f"model = {cls}.from_pretrained('{where}'{extra})\n"
            f"tokenizer = AutoTokenizer.from_pretrained('{where}')\n```{needs}")


def loading_snippet(version: ModelVersion, base: BaseModel, versions: list[ModelVersion], fmt: exports.ExportFormat) -> str:
    """How to load the export: a standalone model, or the base plus the adapter (peft's or the studio's)."""
    folder = lineage.artifact(version)
    cls, base_args = auto_class(version)
    if fmt.merged or not (folder / "adapter_config.json").exists():  # merged, or full/freeze: a whole model
        return standalone_snippet(fmt, cls, "." if fmt.merged else "./adapter")
    below = [v for v in versions[:-1] if methods.get(v.method).mergeable]
    if below:  # the adapter was trained on the base with these versions merged in
        base_line = (f"BASE = 'merged-v{below[-1].id}'  # `studio versions export {below[-1].id} --out merged-v{below[-1].id}"
                     f" --format merged`: {base.name} with the versions this one was trained on merged in")
    else:
        # never the studio's own folder: the card travels; the person points BASE_MODEL at their copy
        base_line = (f"BASE = os.environ.get('BASE_MODEL', {base.name!r})  # the base model {base.name} (imported "
                     f"into the studio from {public_source(base.source)}): set BASE_MODEL to its folder or hub id")
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    if "peft_type" in adapter_config:
        load = "from peft import PeftModel\nmodel = PeftModel.from_pretrained(base, './adapter')"
    else:  # the studio's own bottleneck adapter: its loader ships with FineTune Studio (pip install finetune-studio)
        load = f"from worker.methods import get\nmodel = get({version.method!r}).load(base, './adapter')"
    what = (f"This is the `{version.method}` adapter alone (export with --format merged for a standalone model)"
            if methods.get(version.method).mergeable else
            f"This `{version.method}` version cannot be merged into the base weights")
    return (f"{what}. Load the base, then the adapter:\n\n"
            f"```python\nimport os\nfrom transformers import {cls}, AutoTokenizer\n"
            f"{base_line}\ntokenizer = AutoTokenizer.from_pretrained('./adapter')\n"
            f"base = {cls}.from_pretrained(BASE{base_args})\n{load}\n```")


def public_source(source: str | None) -> str:
    """Where a base came from, fit to publish: a hub id as it is, a local file or folder by its name only
    (a card never carries a path of the machine that exported it)."""
    if not source:
        return "unknown"
    path = Path(source)
    return path.name if path.is_absolute() or source.startswith(("./", "../", "~")) else source


def _lineage_line(base: BaseModel, versions: list[ModelVersion], parents: list[dict]) -> str:
    """Base → each version the export builds on; a combined one names what it combines (its parents are
    not in this chain: its adapter applies to what they started from)."""
    def step(v: ModelVersion) -> str:
        if (v.config or {}).get("combination") is None:
            return f"#{v.id} {v.name} ({v.method}, data set {v.dataset_id})"
        mine = parents if v is versions[-1] and parents else []
        of = " + ".join(f"#{p['id']} × {p['weight']:g}" for p in mine)
        return f"#{v.id} {v.name} ({v.method}, combined{' from ' + of if of else ''})"
    return " → ".join([f"{base.name}", *map(step, versions)])


def _dataset_line(version: ModelVersion, parents: list[dict]) -> str:
    if (version.config or {}).get("combination") is not None and version.dataset_id is None:
        ids = ", ".join(str(p["dataset_id"]) for p in parents if p["dataset_id"])
        return f"none of its own: its parents' ({ids or 'unknown'})"
    return f"{version.config.get('dataset')} (id {version.dataset_id})"


def card_parents(db: Session, version_id: int) -> list[dict]:
    """Every parent of a version with its weight (``version_parents``: several for a combined version),
    as plain values, since the card is written after the session closes."""
    return [{"id": p.id, "name": p.name, "method": p.method, "dataset_id": p.dataset_id, "weight": w}
            for p, w in q.parents(db, version_id)]


def _parent_line(version: ModelVersion, parents: list[dict]) -> str:
    combination = (version.config or {}).get("combination")
    if combination is None or not parents:
        return str(version.parent_id or "none (trained from the base)")
    listed = ", ".join(f"#{p['id']} {p['name']} × {p['weight']:g}" for p in parents)
    return f"{listed} (combined; see Combination below)"


def combination_section(version: ModelVersion, parents: list[dict]) -> str:
    """For a combined version: how (peft's ``add_weighted_adapter`` type, its density and seed where they
    matter), on top of what, and every parent with its weight; empty for any other version."""
    how = (version.config or {}).get("combination")
    if how is None:
        return ""
    kind = how.get("combination", "linear")
    settings = [f"`{kind}`: {combine.HOWS.get(kind, 'see peft add_weighted_adapter')}"]
    if kind in combine.USES_DENSITY:
        settings.append(f"density {how.get('density'):g}")
    if kind.startswith("dare"):
        settings.append(f"seed {how.get('seed')}")
    start = how.get("start_version_id")
    on = f"version #{start} (every parent was trained on top of it)" if start else "the base model"
    rows = "\n".join(f"| #{p['id']} | {p['name']} | {p['method']} | {p['dataset_id'] or '—'} | {p['weight']:g} |"
                     for p in parents)
    return f"""
## Combination
{len(parents)} LoRA versions combined with peft's `add_weighted_adapter` into one adapter on {on}.

- **Method of combination**: {"; ".join(settings)}

| parent | name | method | data set | weight |
|---|---|---|---|---|
{rows}
"""


def model_card(version: ModelVersion, base: BaseModel, fmt: exports.ExportFormat, versions: list[ModelVersion],
               latency: float | None = None, parents: list[dict] | None = None) -> str:
    """A README naming base, lineage, data set, method, hyperparameters, metrics, format and how to load it;
    ``parents`` (``card_parents``) lists a combined version's parents with their weights."""
    cfg, m = version.config, version.metrics
    keep = ("train_loss", "eval_loss", "perplexity", "eval_accuracy", "eval_f1", "train_seconds", "steps",
            "tokens_per_s", "peak_memory_gb", "trainable_params", "total_params", "trainable_ratio")
    metric_rows = "\n".join(f"| {k} | {m[k]:.6g} |" if isinstance(m.get(k), float) else f"| {k} | {m.get(k)} |"
                            for k in keep if m.get(k) is not None)
    if latency is not None:
        metric_rows += f"\n| export_ms_per_token_{fmt.name} | {latency:.3g} |"
    hp = {**cfg.get("method_params", {}), **cfg.get("training", {}),
          "max_seq_length": cfg.get("max_seq_length"), "eval_split": cfg.get("eval_split")}
    hp_rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    usage = loading_snippet(version, base, versions, fmt)
    return f"""# {version.name}

Fine-tuned with FineTune Studio.

- **Base model**: {base.name} (imported from `{public_source(base.source)}`)
- **Lineage**: {_lineage_line(base, versions, parents or [])}
- **Parent version**: {_parent_line(version, parents or [])}
- **Data set**: {_dataset_line(version, parents or [])}
- **Method**: {version.method}
- **Task**: {cfg.get("task") or "causal_lm"}
- **Contents**: {fmt.label} (format `{fmt.name}`)
{combination_section(version, parents or [])}
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


def base_card(base: BaseModel, fmt: exports.ExportFormat, latency: float | None = None) -> str:
    """A base model's README when it is exported as it is (no version, no training): where it came from, its
    architecture and size, the format, and how to load it."""
    speed = f"\n- **Measured**: {latency:.3g} ms per greedy token (transformers, this worker)" if latency else ""
    return f"""# {base.name}

The base model {base.name} as it is (no fine-tuning), converted by FineTune Studio.

- **Imported from**: `{public_source(base.source)}`
- **Architecture**: {base.architecture or "unknown"} ({base.params_total / 1e6:.1f}M parameters)
- **Contents**: {fmt.label.replace("merged model", "the base model")} (format `{fmt.name}`){speed}

## Use
{standalone_snippet(fmt)}
"""


# --- the merge and the writers --------------------------------------------------------------------------
