"""What loading a base model may run: its weights through safetensors only (never pickle), and its own
Python code (``trust_remote_code``) only when an admin allowed it for that model (`studio models trust`,
docs/security.md). Every ``from_pretrained`` on a worker of a base, of a model built from it (a merged
export) or of their tokenizer takes these kwargs from the BaseModel row, so the flag is read in one place.

Torch-free and light: the interactive worker imports it without the training stack."""
from __future__ import annotations

from models_db import BaseModel
from worker.errors import UserFacingError


def model_code_kwargs(base: BaseModel) -> dict:
    """``from_pretrained`` kwargs for a model's weights: safetensors only, remote code only if allowed."""
    _refuse_untrusted_code(base)
    return {"trust_remote_code": bool(base.trust_remote_code), "use_safetensors": True}


def tokenizer_code_kwargs(base: BaseModel) -> dict:
    """``from_pretrained`` kwargs for a tokenizer (or config): remote code only if allowed. No
    ``use_safetensors``: a tokenizer has no weights, and it would keep the unknown kwarg in its config."""
    _refuse_untrusted_code(base)
    return {"trust_remote_code": bool(base.trust_remote_code)}


def own_code(config: dict) -> list[str]:
    """The Python files a model needs to load (``auto_map``), when transformers does not know its type itself
    ([] when it loads without them)."""
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        return []
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # at load time only

    if config.get("model_type") in CONFIG_MAPPING_NAMES:
        return []
    refs = auto_map.values() if isinstance(auto_map, dict) else []
    return sorted({str(ref if isinstance(ref, str) else ref[0]).split("--")[-1].rsplit(".", 1)[0] + ".py"
                   for ref in refs if ref})


def _refuse_untrusted_code(base: BaseModel) -> None:
    """A model that cannot load without its own code, not trusted by an admin: refused with the reason, before
    transformers would ask on a terminal or fail with its own words."""
    if base.trust_remote_code:
        return
    files = own_code(base.config or {})
    if files:
        raise UserFacingError(
            f"model {base.name} needs its own Python code to load ({', '.join(files)}: model type "
            f"{(base.config or {}).get('model_type')!r}, which transformers does not know). The studio runs a "
            f"model's code only when an admin trusts that model: `studio models trust {base.name} --on`, after "
            "reading those files.")
