"""Models: only safetensors are loaded; a pickle-only folder is refused with a way out; a model's own
code runs only when an admin trusted that model."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from models_db import BaseModel
from worker.errors import UserFacingError
from worker.importer import import_model


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "weights.pkl", "model.pth"])
def test_pickle_only_model_folder_is_refused(backend, tmp_path, weights):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / weights).write_bytes(b"\x80\x04not really a pickle")  # never opened: refused by name
    with pytest.raises(UserFacingError) as e:
        import_model(folder, "pickled")
    msg = str(e.value)
    assert weights in msg and "safetensors only" in msg and "convert" in msg.lower()
    assert not (backend.home_abs / "models" / "pickled").exists()  # nothing was stored


def test_pickle_weights_beside_safetensors_are_never_copied(backend, tiny_llama_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    out = import_model(folder, "mixed")
    stored = {p.name for p in Path(out["path"]).iterdir()}
    assert "pytorch_model.bin" not in stored and any(n.endswith(".safetensors") for n in stored)


def test_a_model_with_its_own_code_is_imported_without_running_it_and_loads_only_when_trusted(
        backend, tiny_llama_dir, tmp_path):
    from worker.trust import model_code_kwargs, tokenizer_code_kwargs

    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama_dir, folder)
    ran = tmp_path / "the-model-code-ran"
    config = {**json.loads((folder / "config.json").read_text()), "model_type": "zq_custom",
              "auto_map": {"AutoConfig": "configuration_zq.ZqConfig", "AutoModelForCausalLM": "modeling_zq.ZqModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_zq.py", "modeling_zq.py"):  # run, they would leave a file behind
        (folder / module).write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    out = import_model(folder, "custom")  # nothing asks on a terminal, nothing runs
    assert not ran.exists() and out["config"]["model_type"] == "zq_custom"
    untrusted = BaseModel(name="custom", path=out["path"], source="x", config=out["config"], trust_remote_code=False)
    for kwargs in (model_code_kwargs, tokenizer_code_kwargs):  # every load on a worker goes through these
        with pytest.raises(UserFacingError) as e:
            kwargs(untrusted)
        assert "configuration_zq.py" in str(e.value) and "studio models trust custom --on" in str(e.value)
    trusted = BaseModel(name="custom", path=out["path"], source="x", config=out["config"], trust_remote_code=True)
    assert model_code_kwargs(trusted)["trust_remote_code"] is True
    native = {**config, "model_type": "llama"}  # a known type loads without its code: nothing to trust
    assert model_code_kwargs(BaseModel(name="n", path="/x", source="/x", config=native))["trust_remote_code"] is False
    assert not ran.exists()


def _refused(folder, name="linked") -> str:
    with pytest.raises(UserFacingError) as e:
        import_model(folder, name)
    return str(e.value)


def test_links_outside_the_model_folder_and_special_files_are_refused(backend, tiny_llama_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cases = {
        "file link": lambda f: os.symlink(secret, f / "notes.txt"),
        "weights link": lambda f: (f / "model.safetensors").unlink() or os.symlink(backend.home_abs / "studio.db"
                                                                                  if (backend.home_abs / "studio.db").exists()
                                                                                  else secret, f / "model.safetensors"),
        "folder link": lambda f: os.symlink(outside, f / "extra"),
        "relative link": lambda f: os.symlink("../secret.txt", f / "readme.md"),
        "loop": lambda f: os.symlink(f, f / "again"),
        "pipe": lambda f: os.mkfifo(f / "tokenizer.model"),
    }
    for case, make in cases.items():
        folder = tmp_path / case.replace(" ", "-")
        shutil.copytree(tiny_llama_dir, folder)
        make(folder)
        msg = _refused(folder)
        assert ("outside the model folder" in msg or "contains it" in msg or "not a plain file" in msg), (case, msg)
        assert not any((backend.home_abs / "models").glob("linked*")), case  # nothing stored
    assert "TOP SECRET" not in "".join(p.read_text(errors="ignore") for p in (backend.home_abs / "models").rglob("*")
                                       if p.is_file())

    # a Hugging Face cache snapshot links its files into the model's own blobs/: that is inside, and imports
    cache = tmp_path / "hub" / "models--org--tiny"
    snapshot, blobs = cache / "snapshots" / "abc123", cache / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in Path(tiny_llama_dir).iterdir():
        shutil.copy(f, blobs / f.name)
        os.symlink(f"../../blobs/{f.name}", snapshot / f.name)
    assert import_model(snapshot, "from-cache")["architecture"] == "LlamaForCausalLM"


def _gguf(path: Path, truncate: int = 0) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[:-truncate])
    return path


def test_a_forged_gguf_is_refused_with_the_reason(backend, tmp_path):
    import struct

    from worker.importer import check_gguf

    assert check_gguf(_gguf(tmp_path / "real.gguf")) == "llama"
    forged = {
        "not-gguf.gguf": (os.urandom(512), "not a GGUF file"),
        "version.gguf": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0) + bytes(64), "version 99"),
        "counts.gguf": (b"GGUF" + struct.pack("<IQQ", 3, 2**60, 2**60) + bytes(64), "forged or truncated"),
        "no-arch.gguf": (b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + bytes(8), "names no architecture"),
    }
    for name, (data, why) in forged.items():
        (tmp_path / name).write_bytes(data)
        msg = _refused(tmp_path / name, "forged")
        assert why in msg, (name, msg)
    cut = _gguf(tmp_path / "cut.gguf", truncate=64)  # its tensor data lies past the end
    msg = _refused(cut, "forged")
    assert "forged or truncated" in msg or "not a readable GGUF file" in msg, msg
    assert not any((backend.home_abs / "models").glob("forged*"))


def test_trust_remote_code_comes_only_from_the_model_row():
    from worker.recipes.common import model_code_kwargs

    assert model_code_kwargs(BaseModel(name="m", path="/x", source="/x", trust_remote_code=False)) == {
        "trust_remote_code": False, "use_safetensors": True}
    assert model_code_kwargs(BaseModel(name="m", path="/x", source="/x", trust_remote_code=True))["trust_remote_code"]


FORBIDDEN = {  # pattern -> why it must not appear in the studio's own code
    r"shell\s*=\s*True": "a shell would interpret user strings",
    r"\bos\.(system|popen)\(": "a shell would interpret user strings",
    r"subprocess\.\w+\(\s*[f\"']": "commands are argument lists, never one string",
    r"(?<![.\w])(eval|exec)\(": "no user string is evaluated as Python",
    r"__import__\(": "modules come from registries, never from user strings",
    r"trust_remote_code\s*=\s*True": "a model's code runs only from its admin-set flag",
    r"torch\.load\(|pickle\.loads?\(": "pickle files can run code: safetensors only",
}


def test_no_shell_eval_pickle_or_remote_code_in_the_sources():
    """The rules of docs/security.md that a grep can hold: checked over studio/, worker/ and models_db/."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for pkg in ("studio", "worker", "models_db"):
        for f in (root / pkg).rglob("*.py"):
            text = f.read_text()
            for pattern, why in FORBIDDEN.items():
                found += [f"{f.relative_to(root)}: {m.group(0)!r} ({why})" for m in re.finditer(pattern, text)]
            # importlib only with registry values (worker/job_process.py maps job kinds and tasks to modules)
            if "import_module(" in text and f.name != "job_process.py":
                found.append(f"{f.relative_to(root)}: import_module outside the job registry")
    assert not found, "\n".join(found)
