"""A base model exported as it is (no version): GGUF with its Ollama Modelfile, half precision, bitsandbytes or
ONNX, through the same steps as a version's merged export (worker/export.py): the same up-front checks (memory,
disk, llama.cpp's tools, the architecture, the chat template), the same writers, the same fidelity record (the
"trained model" it is compared with is the base itself, loaded in float32 by transformers) and, in the export
job, the same zip. The studio refuses what would convert nothing before it queues (studio/exports.py
``check_base_allowed``); ``studio models export`` queues it (no tab lists base models with actions of their own).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from models_db import BaseModel, session_scope
from studio import exports, store
from worker import fidelity
from worker.errors import UserFacingError
from worker.export import build_into, prepare, write_merged
from worker.model_card import base_card
from worker.trust import model_code_kwargs

STOCK_PROMPTS = "Three stock questions (a base model has no data of its own)"


def load_base(base: BaseModel, say):
    """The base in float32, as transformers loads it: what the export is made from and checked against."""
    import torch
    from transformers import AutoModelForCausalLM

    say(f"loading {base.name} in float32")
    return AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))


def export_base(base_model_id: int, out_dir: Path, *, format: str, say=print,
                progress: Callable[[int], None] = lambda step: None) -> Path:
    """Write base model ``base_model_id`` as it is to ``out_dir`` in ``format`` (studio.exports.base_formats), with a
    model card and ``studio_version.json`` (``version_id`` null, ``base_model_id`` set, the ``fidelity`` record).
    Refused up front (UserFacingError) like a version's export; a failure while writing removes the folder it made.
    ``progress(n)``: steps 1 (checked), 2 (written), 3 (verified, card written)."""
    with session_scope() as db:
        base = db.get(BaseModel, base_model_id)
        if base is None:  # deleted since it was queued, or not this person's (models_db.access)
            raise UserFacingError(f"base model {base_model_id} does not exist (studio models list)")
        db.expunge(base)
    base.path = store.local_model(base.path)  # a worker on another machine converts its own copy (detached row)
    try:
        fmt = exports.get_format(format)
        exports.check_base_allowed(base, fmt)
    except exports.ExportError as e:
        raise UserFacingError(str(e)) from None
    out_dir = Path(out_dir)
    tokenizer = prepare(f"base model {base.name}", fmt, base, [], out_dir, base.path, say)
    progress(1)
    prompts = fidelity.prompts_for(None)
    extra, latency = build_into(out_dir, lambda: write_merged(lambda: load_base(base, say), tokenizer, fmt, out_dir,
                                                              prompts, "causal_lm", base, say, progress))
    say(fidelity.summary(extra["fidelity"]))
    progress(3)
    (out_dir / "README.md").write_text(base_card(base, fmt, latency) + fidelity.card_section(
        extra["fidelity"], prompts=STOCK_PROMPTS, against="the base model loaded in float32 by transformers"))
    (out_dir / "studio_version.json").write_text(json.dumps(
        {"version_id": None, "base_model_id": base.id, "base_model": base.name, "architecture": base.architecture,
         "format": fmt.name, "export_ms_per_token": latency, **extra}, indent=2, default=str))
    return out_dir
