"""A base model exported as it is (`studio models export`): the export job a version's download runs, with the
base in place of a version: GGUF through llama.cpp's converter with its Ollama Modelfile, the fidelity record
against the base itself, the zip; and what would convert nothing (adapter, merged float32, an encoder) refused
before anything is queued, the worker's own checks before anything is written.

The GGUF test needs llama.cpp's converter (``python -m worker llama-cpp``; STUDIO_TEST_GGUF=1 makes it fail rather
than skip without it), and uses the tiny Llama with SmolLM2's tokenizer that llama.cpp's converter accepts."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_db import Job, session_scope
from studio import exports, operations
from tests.worker.test_evaluate_combine import run
from tests.worker.test_gguf_export import greedy, needs_llama_cpp, tiny_smol_studio
from worker.errors import UserFacingError
from worker.export_base import export_base


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """An embedded studio with one base model, the tiny SmolLM2-tokenizer Llama, and nothing trained on it."""
    root = tmp_path_factory.mktemp("base-export")
    with tiny_smol_studio(root) as base_id:
        yield base_id, root


def export_jobs() -> list[Job]:
    with session_scope() as db:
        rows = db.query(Job).filter(Job.kind == "export").all()
        db.expunge_all()
        return rows


def cli(capsys, *argv) -> tuple[int, dict | None, str]:
    """``studio ARGV --json``: its exit status, its JSON (None on a refusal) and its stderr."""
    from studio.cli import main

    try:
        main([*argv, "--json"])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


@needs_llama_cpp
def test_a_base_model_exports_to_gguf_with_its_modelfile_and_fidelity(studio, capsys, monkeypatch):
    from studio.cli import model_export

    base_id, root = studio
    monkeypatch.setattr(model_export, "wait_for", lambda job_id, quiet=False: run(job_id))  # the worker, here
    out = root / "tiny-smol-gguf"
    code, result, err = cli(capsys, "models", "export", "tiny-smol", "--format", "gguf-f16", "--out", str(out))
    assert code == 0, err
    # a normal export job, with the base in its config instead of a version, run through its five steps
    assert result["kind"] == "export" and result["state"] == "succeeded" and result["step"] == result["max_steps"] == 5
    assert result["config"] == {"base_model_id": base_id, "format": "gguf-f16", "merged": True}
    assert result["result"]["base_model_id"] == base_id and result["version_id"] is None
    assert Path(result["zip_path"]).name == f"base-{base_id}-gguf-f16.zip" and Path(result["zip_path"]).exists()
    # the fidelity record: the GGUF read back by transformers' GGUF reader against the base in float32
    record = result["fidelity"]
    assert record == result["result"]["fidelity"] == json.loads((out / "studio_version.json").read_text())["fidelity"]
    assert record["runtime"] == "transformers' GGUF reader (dequantized)" and record["prompts"] == 3
    assert record["chat_template"] is True and record["eos_token_ids"] == [2] and record["stops_at_eos"] is True
    assert record["verified"] is True and record["token_agreement"] >= 0.9 and record["mean_kl"] <= 0.01, record
    # the file loads in transformers' GGUF reader, with the tokenizer and chat template inside; float16 keeps the
    # base's greedy tokens
    tok = AutoTokenizer.from_pretrained(out, gguf_file="model-f16.gguf")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    gguf_model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf")
    with session_scope() as db:
        from models_db import BaseModel

        base_path = db.get(BaseModel, base_id).path
    assert greedy(gguf_model, tok) == greedy(AutoModelForCausalLM.from_pretrained(base_path),
                                             AutoTokenizer.from_pretrained(base_path))
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith('FROM ./model-f16.gguf\nTEMPLATE """') and 'PARAMETER stop "<|im_end|>"' in modelfile
    meta = json.loads((out / "studio_version.json").read_text())
    assert meta["version_id"] is None and meta["base_model_id"] == base_id and meta["format"] == "gguf-f16"
    card = (out / "README.md").read_text()
    assert card.startswith("# tiny-smol") and "as it is (no fine-tuning)" in card and "ollama create" in card
    assert "compared with the base model loaded in float32" in card
    # asked again: the built zip is reused, no second job
    assert operations.submit_export(None, base_model_id=base_id, format="gguf-f16").id == result["id"]


def test_a_base_model_in_other_formats_converts_and_verifies(studio, tmp_path):
    """Without llama.cpp (CI always runs it): the same path in half precision, read back by transformers."""
    base_id, _ = studio
    said: list[str] = []
    out = export_base(base_id, tmp_path / "fp16", format="merged-fp16", say=said.append)
    record = json.loads((out / "studio_version.json").read_text())["fidelity"]
    assert record["runtime"] == "transformers" and record["verified"] is True and record["token_agreement"] >= 0.9
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float16
    assert any(line.startswith("the merged-fp16 files will take about") for line in said), said


def test_a_base_export_that_would_convert_nothing_is_refused_before_it_queues(studio, capsys, tiny_bert_dir):
    from worker.importer import register

    before = len(export_jobs())
    code, _, err = cli(capsys, "models", "export", "tiny-smol", "--format", "adapter")
    assert code == 2 and "base model tiny-smol has no trained part, so it has no adapter export" in err, err
    assert "gguf-f16" in err  # what to export instead
    code, _, err = cli(capsys, "models", "export", "tiny-smol", "--format", "merged")
    assert code == 2 and "as merged would be its own weights unchanged" in err, err
    code, _, err = cli(capsys, "models", "export", "nope", "--format", "gguf-f16")
    assert code == 2 and "no base model 'nope' (studio models list)" in err, err
    bert, _ = register(tiny_bert_dir, "tiny-bert-export")
    code, _, err = cli(capsys, "models", "export", "tiny-bert-export", "--format", "onnx")
    assert code == 2 and "(BertForSequenceClassification) does not generate text" in err, err
    assert "Traceback" not in err and len(export_jobs()) == before  # nothing queued


def test_the_worker_checks_a_base_export_again_before_it_writes(studio, tmp_path, monkeypatch):
    """The worker's own checks (a job queued before things changed): nothing loaded, no folder made."""
    base_id, _ = studio
    with pytest.raises(UserFacingError, match="has no trained part"):
        export_base(base_id, tmp_path / "adapter", format="adapter", say=lambda _: None)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(UserFacingError, match=r"Exporting base model tiny-smol as gguf-q8_0 writes ~0\.\d\d GB"):
        export_base(base_id, tmp_path / "full-disk", format="gguf-q8_0", say=lambda _: None)
    monkeypatch.undo()
    from worker import gguf

    said: list[str] = []
    monkeypatch.setattr(gguf, "converter", lambda: Path(sys.executable))  # the converter's presence is not the point
    monkeypatch.setattr(gguf, "known_architectures", lambda: {"GPT2LMHeadModel"})
    with pytest.raises(UserFacingError, match="does not convert LlamaForCausalLM, so base model tiny-smol has no GGUF"):
        export_base(base_id, tmp_path / "arch", format="gguf-f16", say=said.append)
    assert not any("loading" in line for line in said), said
    monkeypatch.setenv("STUDIO_EXPORT_MEMORY_GB", "0.01")
    from studio.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(UserFacingError, match=r"Exporting base model tiny-smol as onnx needs ~.*; free memory"):
            export_base(base_id, tmp_path / "memory", format="onnx", say=lambda _: None)
    finally:
        monkeypatch.delenv("STUDIO_EXPORT_MEMORY_GB")
        get_settings.cache_clear()
    assert not any((tmp_path / name).exists() for name in ("adapter", "full-disk", "arch", "memory"))
    assert exports.base_formats() == ["merged-fp16", "merged-bf16", "bnb-8bit", "bnb-4bit", "onnx", "gguf-f16",
                                      "gguf-q8_0", "gguf-q4_k_m"]


def test_the_jobs_tab_names_a_base_model_export():
    from studio.tabs.job_views import view

    job = Job(kind="export", config={"base_model_id": 3, "format": "gguf-q8_0", "merged": True},
              result={"zip": "exports/base-3-gguf-q8_0.zip", "base_model_id": 3, "format": "gguf-q8_0",
                      "fidelity": {"verified": True}})
    assert view("export").what(job) == "base model #3 as gguf-q8_0"
    shown = view("export").result(job)
    assert "export of base model #3 is ready" in shown and "<code>exports/base-3-gguf-q8_0.zip</code>" in shown
    assert "verified against the base model in float32" in shown and "Versions tab" not in shown
    job.result = {**job.result, "fidelity": {"verified": False, "reason": "mean KL 0.3 is above the 0.1"}}
    assert "<b>not verified</b>: mean KL 0.3" in view("export").result(job)
