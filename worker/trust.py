"""What loading a base model may run: its weights through safetensors only (never pickle), and its own
Python code (``trust_remote_code``) only when an admin allowed it for that model (`studio models trust`,
docs/security.md). Every ``from_pretrained`` on a worker of a base, of a model built from it (a merged
export) or of their tokenizer takes these kwargs from the BaseModel row, so the flag is read in one place.

Torch-free and light: the interactive worker imports it without the training stack."""
from __future__ import annotations

from models_db import BaseModel


def model_code_kwargs(base: BaseModel) -> dict:
    """``from_pretrained`` kwargs for a model's weights: safetensors only, remote code only if allowed."""
    return {"trust_remote_code": bool(base.trust_remote_code), "use_safetensors": True}


def tokenizer_code_kwargs(base: BaseModel) -> dict:
    """``from_pretrained`` kwargs for a tokenizer (or config): remote code only if allowed. No
    ``use_safetensors``: a tokenizer has no weights, and it would keep the unknown kwarg in its config."""
    return {"trust_remote_code": bool(base.trust_remote_code)}
