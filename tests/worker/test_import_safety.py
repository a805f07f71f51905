"""Models: only safetensors are loaded; a pickle-only folder is refused with a way out; a model's own
code runs only when an admin trusted that model."""
from __future__ import annotations

import json

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
