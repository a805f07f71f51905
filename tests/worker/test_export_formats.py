"""Deployment exports on a tiny Llama: every format reloads and agrees with the adapter model; the zip a
download job builds and its model card; the memory check that refuses a merge up front (in the studio
and again in the worker); what a method that cannot merge may export; the per-format latency figure."""
from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_db import Job, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import exports, operations
from studio.jobspec import SpecError, build_train_spec
from studio.settings import get_settings
from tests.worker import test_recipe_methods as recipe
from tests.worker.test_recipe_methods import (
    fixed_batch,
    logits,
    reload,
    run_snippet,
    run_train,
)
from worker import job_process, lineage
from worker.errors import UserFacingError
from worker.export import export_version
from tests.worker.test_gguf_export import needs_llama_cpp

studio = recipe.studio  # the module-scoped embedded studio with the tiny Llama and an instruction data set

# How close each format's logits must be to the adapter model's (float32, on the same fixed batch), and how
# often its greedy next token must be the same. Quantized and half-precision weights round, so they get
# looser bounds; the tiny random model's logits are close together, which makes top-1 a strict check.
# (The tiny model's logits have a standard deviation of about 0.1: 4-bit's 0.15 is loose, its top-1 check is not;
# on CPUs with AVX-512 bf16, bitsandbytes' 4-bit kernel computes in bf16, so 60 % of 400-way top-1 is the bar.)
TOLERANCE = {"merged": (1e-4, 1.0), "merged-fp16": (2e-3, 0.95), "merged-bf16": (1e-2, 0.9),
             "bnb-8bit": (1e-2, 0.9), "bnb-4bit": (1.5e-1, 0.6), "onnx": (1e-4, 1.0)}


@pytest.fixture(scope="module")
def lora(studio):
    """A LoRA version trained from another LoRA version: a merged export folds in both."""
    parent = run_train(studio, "lora", max_steps=2)
    return run_train(studio, "lora", parent=parent.id, max_steps=2, learning_rate=5e-3)


@pytest.fixture
def memory_limit(monkeypatch):
    """Set STUDIO_EXPORT_MEMORY_GB for one test."""
    def set_limit(gb: float):
        monkeypatch.setenv("STUDIO_EXPORT_MEMORY_GB", str(gb))
        get_settings.cache_clear()
    yield set_limit
    monkeypatch.delenv("STUDIO_EXPORT_MEMORY_GB", raising=False)
    get_settings.cache_clear()


def exported_logits(fmt: str, out, batch) -> torch.Tensor:
    """Logits of the exported files, loaded the way the README says (onnxruntime for ONNX)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {k: v.numpy().astype(np.int64) for k, v in batch.items()}
        return torch.from_numpy(session.run(["logits"], feed)[0])
    kwargs = {"device_map": {"": "cpu"}} if fmt.startswith("bnb") else {}
    return logits(AutoModelForCausalLM.from_pretrained(out, **kwargs), batch)


def metrics_of(version_id: int) -> dict:
    with session_scope() as db:
        return dict(db.get(ModelVersion, version_id).metrics)


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_each_format_reloads_and_agrees_with_the_adapter_model(fmt, studio, lora, tmp_path):
    out = export_version(lora.id, tmp_path / fmt, format=fmt, say=lambda _: None)
    batch = fixed_batch(json.loads((Path(studio.model_dir) / "config.json").read_text())["vocab_size"])
    expected = logits(reload(studio, lora), batch)  # the adapter on the float32 base, through the lineage
    got = exported_logits(fmt, out, batch)
    atol, agree = TOLERANCE[fmt]
    assert (got - expected).abs().max().item() <= atol, (fmt, (got - expected).abs().max().item())
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean().item() >= agree
    config = json.loads((out / "config.json").read_text())
    saved = safetensors_dtypes(out) if fmt != "onnx" else {}
    if fmt.startswith("bnb"):  # really quantized: the config says so, the layers' weights are stored as integers
        q = config["quantization_config"]
        assert q["quant_method"] == "bitsandbytes" and q[f"load_in_{fmt[4]}bit"] is True
        assert saved["model.layers.0.self_attn.q_proj.weight"] == (torch.int8 if fmt == "bnb-8bit" else torch.uint8)
        assert saved["lm_head.weight"] == torch.float32  # heads stay in full precision (qlora.SKIP_MODULES)
    if fmt in ("merged-fp16", "merged-bf16"):
        assert set(saved.values()) == {torch.float16 if fmt == "merged-fp16" else torch.bfloat16}
    # the export's latency, measured on the reloaded files, is in the version's metrics and the card
    ms = metrics_of(lora.id)[f"export_ms_per_token_{fmt}"]
    assert 0 < ms < 10_000
    card = (out / "README.md").read_text()
    assert f"| export_ms_per_token_{fmt} |" in card and f"format `{fmt}`" in card
    # the export verified itself: the version's eval prompts replayed in its own runtime
    record = json.loads((out / "studio_version.json").read_text())["fidelity"]
    assert_fidelity(record, fmt)
    assert "## Fidelity" in card


def assert_fidelity(record: dict, fmt: str) -> None:
    """The fidelity record of an export: its figures, its tolerance, and a verdict that follows from them."""
    min_agreement, max_kl = exports.FORMATS[fmt].fidelity
    assert record["prompts"] == 3 and record["tokens_compared"] > 0 and record["chat_template"] is True
    assert record["tolerance"] == {"min_agreement": min_agreement, "max_kl": max_kl}
    assert record["stops_at_eos"] is True and record["eos_token_ids"]  # the end of turn survived the export
    within = record["token_agreement"] >= min_agreement and record["mean_kl"] <= max_kl
    assert record["verified"] is within and (record["reason"] is None) is within, record
    if fmt in ("merged", "onnx", "adapter"):  # lossless formats: the same model
        assert record["verified"] and record["token_agreement"] == 1.0 and record["mean_kl"] < 1e-6, record


def safetensors_dtypes(folder: Path) -> dict:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open is no dict


def run_job(job: Job) -> Job:
    """Claim the export job and run its child entry point in this process, as a worker would."""
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        return db.get(Job, job.id)


def test_download_jobs_build_the_zips_with_a_full_model_card(studio, lora):
    job = run_job(operations.submit_export(lora.id, format="merged"))
    assert job.state == "succeeded", job.error
    assert job.step == job.max_steps == 5 and job.result["format"] == "merged" and job.result["ms_per_token"] > 0
    path = get_settings().home_abs / job.result["zip"]
    assert path.name == f"version-{lora.id}-merged.zip"
    names = set(zipfile.ZipFile(path).namelist())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "README.md", "studio_version.json"} <= names, names
    card = zipfile.ZipFile(path).read("README.md").decode()
    with session_scope() as db:
        version = db.get(ModelVersion, lora.id)
        ancestors = lineage.chain(db, lora.id)[:-1]
        cfg = version.config
    assert ancestors and f"#{ancestors[0].id} " in card.split("**Lineage**")[1].splitlines()[0]  # the parent
    assert f"**Data set**: {cfg['dataset']} (id {version.dataset_id})" in card and "**Method**: lora" in card
    assert re.search(r"\| learning_rate \| 0\.005 \|", card) and re.search(r"\| r \| \d+ \|", card)  # hyperparameters
    assert re.search(r"\| train_loss \| [\d.]+ \|", card)  # metrics
    from studio.tabs import job_views
    from studio.tabs import versions as tab

    assert f"The merged export of version #{lora.id} is ready to download on the Versions tab" in job_views.status_html(job)
    message, button = tab.export_status(job.id)
    assert message.startswith(f"Ready: `version-{lora.id}-merged.zip`") and button.visible
    # the same request again reuses the built zip instead of queuing another job
    assert operations.submit_export(lora.id, format="merged").id == job.id

    adapter = run_job(operations.submit_export(lora.id, format="adapter"))
    names = set(zipfile.ZipFile(get_settings().home_abs / adapter.result["zip"]).namelist())
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "README.md"} <= names, names
    assert not any(n.endswith("model.safetensors") and not n.startswith("adapter/") for n in names)
    # each job's result carries the export's own check; the adapter is loaded the README's way (peft on the base)
    assert job.result["fidelity"]["verified"] is True
    assert_fidelity(adapter.result["fidelity"], "adapter")
    assert adapter.result["fidelity"]["runtime"] == "transformers + the exported adapter"
    assert "verified against the trained model" in job_views.status_html(adapter)
    assert "✓ **Verified**" in tab.export_status(adapter.id)[0]


def test_a_merge_that_does_not_fit_is_refused_up_front_with_the_numbers(studio, lora, memory_limit, tmp_path):
    base_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(studio.model_dir).parameters())
    est = exports.estimate(exports.FORMATS["onnx"], Path(studio.model_dir), [])
    assert est.parts["base in float32"] == 4 * base_params and est.parts["working copy"] == 2 * 4 * base_params

    memory_limit(0.05)
    with session_scope() as db:
        queued = db.query(Job).filter(Job.kind == "export").count()
    refusal = (rf"Exporting version {lora.id} as merged needs ~0\.50 GB \(base in float32 0\.00 GB, .*runtime 0\.50 GB\), "
               r"this machine has 0\.05 GB available \(STUDIO_EXPORT_MEMORY_GB\); export the adapter instead or free memory")
    with pytest.raises(SpecError, match=refusal):  # in the studio: nothing is queued
        operations.submit_export(lora.id, format="merged")
    with session_scope() as db:
        assert db.query(Job).filter(Job.kind == "export").count() == queued
    with pytest.raises(UserFacingError, match=refusal):  # and again in the worker, before loading anything
        export_version(lora.id, tmp_path / "refused", format="merged", say=lambda _: None)
    assert not (tmp_path / "refused").exists()
    export_version(lora.id, tmp_path / "adapter", format="adapter", say=lambda _: None)  # the adapter still exports

    from studio.tabs import versions as tab

    assert "**Cannot export:**" in tab.export_hint(lora.id, "merged") and "0.05 GB available" in tab.export_hint(
        lora.id, "merged")
    with pytest.raises(Exception, match="0.05 GB available"):
        tab.build_export(lora.id, "bnb-4bit")
    memory_limit(64)
    assert "needs ~0.50 GB" in tab.export_hint(lora.id, "merged") and "64.00 GB available" in tab.export_hint(
        lora.id, "merged")


def test_a_method_that_cannot_merge_exports_the_adapter_only(studio, tmp_path):
    from studio.tabs import versions as tab

    version = run_train(studio, "prompt_tuning", max_steps=2)
    assert exports.allowed_formats("prompt_tuning") == ["adapter"]
    picker = tab.export_picker("prompt_tuning")
    assert [c[1] for c in picker.choices] == ["adapter"] and picker.value == "adapter"
    assert "cannot be merged" in picker.info
    out = export_version(version.id, tmp_path / "soft-prompt", format="adapter", say=lambda _: None)
    assert_fidelity(json.loads((out / "studio_version.json").read_text())["fidelity"], "adapter")  # studio's loader
    assert len(tab.export_picker("lora").choices) == len(exports.FORMATS)
    for fmt in ("merged", "bnb-4bit", "onnx", "gguf-q8_0"):
        with pytest.raises(SpecError, match=rf"prompt_tuning cannot be merged .* no {fmt} export; export the adapter "
                                            r"instead \(--format adapter\)"):
            operations.submit_export(version.id, format=fmt)
    with pytest.raises(SpecError, match="unknown export format 'gguf': use one of merged, merged-fp16"):
        operations.submit_export(version.id, format="gguf")


@needs_llama_cpp
def test_a_conversion_llama_cpp_fails_leaves_nothing_behind(studio, lora, tmp_path):
    """The tiny Llama's own tokenizer is none llama.cpp's converter knows (it hashes pre-tokenizers), which only the
    conversion finds out: it fails after the merge with the converter's last words, and neither the output folder
    nor the temporary one beside it stays."""
    with pytest.raises(UserFacingError, match=r"llama\.cpp's converter failed on this LlamaForCausalLM model \(.*pre-tokenizer.*\); "
                                              r"export merged safetensors instead"):
        export_version(lora.id, tmp_path / "out" / "gguf", format="gguf-f16", say=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []


def test_bnb_refuses_clearly_where_it_cannot_quantize(studio, lora, tmp_path, monkeypatch):
    """This machine's bitsandbytes quantizes on the CPU (tested above); where it cannot and there is no
    CUDA GPU, the export says what it needs instead of failing inside transformers."""
    from worker.methods import MethodError, qlora

    def no_backend(bits, device):
        raise MethodError(qlora.NO_BACKEND.format(bits=bits, reason="no CPU backend"))

    monkeypatch.setattr(qlora, "probe_backend", no_backend)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserFacingError, match="the bnb-4bit export cannot quantize on this worker: .*It needs a CUDA "
                                              "GPU"):
        export_version(lora.id, tmp_path / "bnb", format="bnb-4bit", say=lambda _: None)


def test_the_cli_takes_format_and_keeps_merged_as_an_alias(studio, lora, tmp_path, capsys):
    from studio.cli import main

    main(["versions", "export", str(lora.id), "--out", str(tmp_path / "bf16"), "--format", "merged-bf16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "merged-bf16" and out["merged"] is True and out["ms_per_token"] > 0
    assert_fidelity(out["fidelity"], "merged-bf16")  # the export's own check is in its --json
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    main(["versions", "export", str(lora.id), "--out", str(tmp_path / "alias"), "--merged", "--json"])
    assert json.loads(capsys.readouterr().out)["format"] == "merged"
    with pytest.raises(SystemExit) as exit_:
        main(["versions", "export", str(lora.id), "--out", str(tmp_path / "x"), "--merged", "--format", "onnx"])
    assert exit_.value.code == 2 and "--merged is --format merged" in capsys.readouterr().err


# --- a decoder classifier: its base names no pad token ------------------------------------------------------

@dataclass
class Classifiers:
    base_dir: str  # the imported tiny Llama whose config names no pad token
    train: Callable  # method -> a trained seq_cls version (and its lineage)
    lora: tuple | None = None  # one LoRA classifier, trained once for every format


@pytest.fixture(scope="module")
def classifiers(studio, tmp_path_factory):
    """A tiny Llama whose config names no pad token (like SmolLM2's), and a two-label data set to train on."""
    from tests.tiny import build_tiny_llama
    from tests.worker.test_seq_cls import toy_rows, write_jsonl
    from worker.importer import register

    root = tmp_path_factory.mktemp("classifiers")
    src = build_tiny_llama(root / "nopad")
    config = json.loads((src / "config.json").read_text())
    config.pop("pad_token_id")
    (src / "config.json").write_text(json.dumps(config))
    model_id, model_path = register(src, "nopad-llama")
    ds, _, _ = operations.add_dataset(write_jsonl(root / "cls.jsonl", toy_rows(32)))

    def train(method: str) -> tuple[ModelVersion, list[ModelVersion]]:
        spec = build_train_spec(model_id=model_id, dataset_id=ds.id, method=method,
                                settings={"max_steps": 2, "per_device_train_batch_size": 8, "eval_split": 0.25})
        job, _ = operations.submit_train(spec)
        done = run_job(job)
        assert done.state == "succeeded", done.error
        with session_scope() as db:
            chain = lineage.chain(db, done.result["version_id"])
            db.expunge_all()
        return chain[-1], chain

    return Classifiers(model_path, train)


def padded_batch(tokenizer_dir) -> dict:
    from tests.worker.test_seq_cls import toy_rows

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tok([r["text"] for r in toy_rows(4)], padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # really padded
    return dict(batch)


def classifier_reference(classifiers: Classifiers, version, chain, tokenizer_dir):
    from worker.recipes.seq_cls import load_classifier

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    base = load_classifier(classifiers.base_dir, version.config["labels"], tok)
    return lineage.load_chain(base, chain, last="inference")


def test_decoder_classifier_adapter_snippet_sets_the_pad_token(classifiers, tmp_path, monkeypatch):
    """A decoder's classification head reads the last token before the padding, so the loading snippet must
    pass the tokenizer's pad token: a base config without one cannot score a padded batch."""
    version, chain = classifiers.train("prompt_tuning")
    out = export_version(version.id, tmp_path / "export", format="adapter", say=lambda _: None)
    readme = (out / "README.md").read_text()
    assert "pad_token_id=tokenizer.pad_token_id" in readme
    monkeypatch.setenv("BASE_MODEL", str(classifiers.base_dir))  # the card names no local path: point it here
    batch = padded_batch(out / "adapter")
    reference = classifier_reference(classifiers, version, chain, out / "adapter")
    torch.testing.assert_close(logits(run_snippet(readme, out, monkeypatch), batch), logits(reference, batch),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["merged-bf16", "bnb-4bit", "onnx"])
def test_a_merged_decoder_classifier_exports_in_each_format(fmt, classifiers, tmp_path):
    """The head stays in full precision and keeps its labels and pad token; a classifier generates nothing,
    so no ms/token is recorded for it."""
    from transformers import AutoModelForSequenceClassification

    classifiers.lora = classifiers.lora or classifiers.train("lora")
    version, chain = classifiers.lora
    out = export_version(version.id, tmp_path / fmt, format=fmt, say=lambda _: None)
    batch = padded_batch(out)
    expected = logits(classifier_reference(classifiers, version, chain, out), batch)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {k: v.numpy().astype(np.int64) for k, v in batch.items()
                                                        if k in ("input_ids", "attention_mask")})[0])
    else:
        kwargs = {"device_map": {"": "cpu"}} if fmt.startswith("bnb") else {}
        model = AutoModelForSequenceClassification.from_pretrained(out, **kwargs)
        assert model.config.id2label == {0: "bad", 1: "good"} and model.config.pad_token_id is not None
        got = logits(model, batch)
    atol, _ = TOLERANCE[fmt]
    assert (got - expected).abs().max().item() <= atol, (fmt, (got - expected).abs().max().item())
    assert not any(k.startswith("export_ms_per_token") for k in metrics_of(version.id))
    record = json.loads((out / "studio_version.json").read_text())["fidelity"]  # label distributions compared
    assert record["tokens_compared"] == record["prompts"] == 3 and "stops_at_eos" not in record
    assert record["verified"] is (record["token_agreement"] >= exports.FORMATS[fmt].fidelity[0]
                                  and record["mean_kl"] <= exports.FORMATS[fmt].fidelity[1])
    if fmt == "onnx":
        assert record["verified"] and record["token_agreement"] == 1.0, record


# --- the job on each backend (SQLite, and Postgres + Redis when set) ----------------------------------------

def test_export_job_on_each_backend_records_its_latency(backend, tiny_llama_dir, tmp_path):
    """A "full" version whose weights are another random tiny Llama (no training needed): its merged-fp16
    export job runs, the zip's model is those weights in half precision, and the latency lands in the
    version's metrics (a JSON column rewritten by the worker) on this backend."""
    import shutil

    from tests.tiny import build_tiny_llama
    from worker.importer import register

    base_id, _ = register(tiny_llama_dir, "tiny")
    trained = build_tiny_llama(tmp_path / "trained", seed=1)
    home = get_settings().home_abs
    shutil.copytree(trained, home / "versions" / "full-1")
    with session_scope() as db:
        version = ModelVersion(name="full-1", method="full", base_model_id=base_id, config={"method_params": {}},
                               metrics={"train_loss": 1.5}, artifacts={"adapter": "versions/full-1"})
        db.add(version)
        db.flush()
        version_id = version.id
    job = run_job(operations.submit_export(version_id, format="merged-fp16"))
    assert job.state == "succeeded", job.error
    with zipfile.ZipFile(home / job.result["zip"]) as z:
        z.extractall(tmp_path / "unzipped")
    batch = fixed_batch(json.loads((trained / "config.json").read_text())["vocab_size"])
    got = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "unzipped"), batch)
    torch.testing.assert_close(got, logits(AutoModelForCausalLM.from_pretrained(trained), batch), atol=2e-3, rtol=0)
    assert job.result["fidelity"]["prompts"] == 3  # no data set: the stock prompts
    metrics = metrics_of(version_id)
    assert metrics["train_loss"] == 1.5 and metrics["export_ms_per_token_merged-fp16"] == pytest.approx(
        job.result["ms_per_token"], abs=1e-3)
