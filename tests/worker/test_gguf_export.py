"""GGUF exports through llama.cpp's own converter (and quantizer), with the Ollama Modelfile, on a tiny Llama that
carries the demo model's tokenizer (llama.cpp's converter only accepts tokenizers it knows): the file loads in
transformers' GGUF reader with its tokenizer and chat template, its greedy tokens agree with the merged export,
its fidelity record is in the export's JSON; what cannot be exported is refused up front, nothing half-written.

llama.cpp comes from llama-cpp-python's source distribution (``python -m worker llama-cpp``; .ci/run unpacks it
and sets STUDIO_TEST_GGUF=1, which makes these tests fail rather than skip without it). Q4_K_M needs
llama-quantize built (``--build``, minutes): that test skips where it is not."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_db import BaseModel, ModelVersion, session_scope
from studio import exports, operations
from studio.jobspec import build_train_spec
from tests.backends import backend_env, in_process
from tests.worker.test_evaluate_combine import run
from worker import gguf, llama_replay
from worker.errors import UserFacingError
from worker.export import export_version

HAVE_CONVERTER = (gguf.llama_cpp_dir() / "convert_hf_to_gguf.py").exists()
needs_llama_cpp = pytest.mark.skipif(not HAVE_CONVERTER and not os.environ.get("STUDIO_TEST_GGUF"),
                                     reason="llama.cpp's converter is not unpacked: python -m worker llama-cpp")


def build_tiny_smol(out: Path) -> Path:
    """A 64-wide, 2-layer Llama with SmolLM2's tokenizer and chat template (from the demo model's GGUF)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker.importer import demo_gguf

    demo = demo_gguf()
    tok = AutoTokenizer.from_pretrained(demo.parent, gguf_file=demo.name)
    tok.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


@contextmanager
def tiny_smol_studio(root: Path):
    """An embedded studio under ``root`` with the tiny SmolLM2-tokenizer Llama registered (one torch thread
    meanwhile): yields its base model id."""
    from models_db.migrate import upgrade
    from worker.importer import register

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
            upgrade()
            yield register(build_tiny_smol(root / "tiny-smol"), "tiny-smol")[0]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """An embedded studio with the tiny SmolLM2-tokenizer Llama and a 2-step LoRA version of it."""
    root = tmp_path_factory.mktemp("gguf")
    with tiny_smol_studio(root) as base_id:
        rows = root / "sums.jsonl"
        rows.write_text("".join(json.dumps({"instruction": f"What is {i} plus 1?", "output": f"It is {i + 1}."}) + "\n"
                                for i in range(16)))
        dataset = operations.add_dataset(rows)[0].id
        spec = build_train_spec(model_id=base_id, dataset_id=dataset, method="lora",
                                settings={"max_steps": 2, "per_device_train_batch_size": 8, "eval_split": 0.0,
                                          "learning_rate": 1e-2, "max_seq_length": 64})
        job, _ = operations.submit_train(spec)
        yield run(job.id).result["version_id"], root


def greedy(model, tokenizer, n: int = 8) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 plus 1?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
    return out[0, ids.shape[1]:].tolist()


@needs_llama_cpp
@pytest.mark.parametrize("fmt", ["gguf-f16", "gguf-q8_0"])
def test_a_lora_version_exports_to_gguf_that_agrees_with_the_merged_export(fmt, smol, capsys):
    from studio.cli import main

    version_id, root = smol
    out = root / fmt
    main(["versions", "export", str(version_id), "--out", str(out), "--format", fmt, "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    name = f"model-{exports.FORMATS[fmt].gguf_type}.gguf"
    assert (out / name).exists() and result["fidelity"]["runtime"] == "transformers' GGUF reader (dequantized)"
    record = result["fidelity"]
    assert record["chat_template"] is True and record["stops_at_eos"] is True and record["eos_token_ids"] == [2]
    min_agreement, max_kl = exports.FORMATS[fmt].fidelity
    assert record["verified"] is (record["token_agreement"] >= min_agreement and record["mean_kl"] <= max_kl)
    # the GGUF carries the tokenizer and chat template; its greedy tokens are the merged export's
    tok = AutoTokenizer.from_pretrained(out, gguf_file=name)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    merged = export_version(version_id, root / f"merged-for-{fmt}", format="merged", say=lambda _: None)
    expected = greedy(AutoModelForCausalLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged))
    got = greedy(AutoModelForCausalLM.from_pretrained(out, gguf_file=name), tok)
    assert got == expected if fmt == "gguf-f16" else sum(a == b for a, b in zip(got, expected)) >= 6
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{name}\nTEMPLATE \"\"\"") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "ollama create" in (out / "README.md").read_text()
    # and in llama.cpp itself where it is built (.ci/run builds it and sets STUDIO_TEST_LLAMA_CPP)
    built = llama_replay.binary() is not None
    assert built or not os.environ.get("STUDIO_TEST_LLAMA_CPP"), "llama-simple is not built: python -m worker llama-cpp --build"
    replayed = record["llama_cpp"]
    assert replayed["ran"] is built
    if built:
        assert replayed["prompts"] == record["prompts"] and replayed["runtime"] == "llama.cpp (llama-simple, greedy)"
        assert replayed["ok"] is (replayed["first_token_agreement"] >= min_agreement)
        if fmt == "gguf-f16":  # the same weights: llama.cpp starts every reply where the trained model does
            assert replayed["first_token_agreement"] == 1.0 and replayed["ok"] and record["verified"]
            from studio.tabs import versions as tab
            from worker.fidelity import summary

            said = f"{replayed['identical_replies']} of 3 identical"
            assert f"In llama.cpp: 100% of replies start as the trained model's, {said}." in tab.fidelity_line(record)
            assert f"; in llama.cpp 100% of replies start as the trained model's, {said}" in summary(record)
    else:
        assert "python -m worker llama-cpp --build" in replayed["reason"]


@needs_llama_cpp
def test_llama_cpp_replay_marks_a_reply_unlike_the_trained_models(smol):
    """The replay's own failure path, run in llama.cpp: a reference whose replies are not what this model says
    (another model's, here every reply starts with a token the model does not pick) is not ok, with the count."""
    if llama_replay.binary() is None:
        assert not os.environ.get("STUDIO_TEST_LLAMA_CPP"), "llama-simple is not built: python -m worker llama-cpp --build"
        pytest.skip("llama-simple is not built here: python -m worker llama-cpp --build (minutes)")
    from worker.fidelity import Reference

    version_id, root = smol
    out = export_version(version_id, root / "replay-f16", format="gguf-f16", say=lambda _: None)
    name = next(p.name for p in out.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(out, gguf_file=name)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for q in ("What is 2 plus 3?", "Name a colour.")]
    said = [llama_replay.reply_text(tok, llama_replay.generate(llama_replay.binary(), out / name,
                                                               tok.decode(p, skip_special_tokens=False), 8), p)
            for p in prompts]
    zebra = tok("Zebra", add_special_tokens=False)["input_ids"][:1]  # a reply this model does not start with
    assert all(s is not None and not s.startswith(tok.decode(zebra)) for s in said)
    wrong = [zebra for _ in prompts]
    record = llama_replay.replay(out / name, tok, Reference("sft", prompts, replies=wrong, eos_ids=[2]), 0.9, 8)
    assert record["ran"] and record["first_token_agreement"] == 0.0 and record["ok"] is False
    assert record["reason"] == "in llama.cpp the first reply token differs from the trained model's on 2 of 2 prompts"
    # where the trained model nearly tied its top token with llama.cpp's first, the reply still agrees (a tie that
    # quantization flips), counted apart; a wider gap does not
    import numpy as np

    def logprobs(gap: float) -> list:
        rows = []
        for s in said:
            row = np.full(len(tok), -20.0)
            row[zebra[0]], row[tok(s, add_special_tokens=False)["input_ids"][0]] = 0.0, -gap
            rows.append(row[None, :])
        return rows

    tied = llama_replay.replay(out / name, tok, Reference("sft", prompts, replies=wrong, logprobs=logprobs(0.05),
                                                          eos_ids=[2]), 0.9, 8)
    assert tied["ok"] and tied["first_token_agreement"] == 1.0 and tied["first_token_near_ties"] == 2
    apart = llama_replay.replay(out / name, tok, Reference("sft", prompts, replies=wrong, logprobs=logprobs(1.0),
                                                           eos_ids=[2]), 0.9, 8)
    assert not apart["ok"] and apart["first_token_near_ties"] == 0


def test_the_modelfile_renders_what_the_chat_template_renders(tmp_path):
    from worker.importer import demo_gguf

    demo = demo_gguf()
    tok = AutoTokenizer.from_pretrained(demo.parent, gguf_file=demo.name)
    family = gguf.family_of(tok.chat_template)
    system = gguf.default_system(tok)
    assert family.name == "chatml" and system and "SmolLM" in system
    for given in (None, "Answer briefly."):  # Ollama's SYSTEM default stands in for the template's own
        messages = ([{"role": "system", "content": given}] if given else []) + [{"role": "user", "content": "Hi!"}]
        assert gguf.render_ollama(family.template, given or system, "Hi!") == tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
    text = gguf.modelfile("model-q8_0.gguf", tok)
    assert f'SYSTEM """{system}"""' in text and text.count("PARAMETER stop") == 2
    with pytest.raises(UserFacingError, match="cannot translate into an Ollama Modelfile"):
        gguf.family_of("{% for m in messages %}<<{{ m.role }}>>{{ m.content }}{% endfor %}")


# The other families' chat templates as their models ship them (Llama 3.x, Gemma 2/3 with the system turn folded
# into the first user turn, Mistral's [INST]), trimmed to one conversation's path; the BOS they start with is
# the tokenizer's to add in llama.cpp, as in Ollama, so it is left out of the comparison.
FAMILY_TEMPLATES = {
    "llama3": ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "gemma": ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + "
              "'\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set prefix = '' %}{% set loop_messages = "
              "messages %}{% endif %}{% for message in loop_messages %}{% set role = 'model' if message['role'] == "
              "'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') "
              "+ message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<start_of_turn>model\n' }}{% endif %}"),
    "inst": ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
             "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
             "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + (system + '\n\n' "
             "if system is defined and loop.last else '') + message['content'] + ' [/INST]' }}{% else %}"
             "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"),
}


@pytest.mark.parametrize("name", list(FAMILY_TEMPLATES))
def test_each_family_s_modelfile_renders_what_its_chat_template_renders(name, tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = FAMILY_TEMPLATES[name]
    family = gguf.family_of(tok.chat_template)
    assert family.name == name
    for system in (None, "Answer briefly."):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hi!"}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert gguf.render_ollama(family.template, system, "Hi!") == rendered.removeprefix(tok.bos_token or "")
    text = gguf.modelfile("model-f16.gguf", tok)
    assert text.startswith('FROM ./model-f16.gguf\nTEMPLATE \"\"\"') and "SYSTEM" not in text  # no default system
    assert [line for line in text.splitlines() if line.startswith("PARAMETER stop")] == [
        *(f'PARAMETER stop "{stop}"' for stop in family.stops), f'PARAMETER stop "{tok.eos_token}"']


def test_what_cannot_be_a_gguf_is_refused_up_front(smol, tmp_path, monkeypatch):
    version_id, _ = smol
    classifier = ModelVersion(id=99, method="lora", config={"task": "seq_cls"})
    with pytest.raises(exports.ExportError, match="is a classifier; GGUF"):
        exports.check_allowed(classifier, exports.FORMATS["gguf-q8_0"])
    soft = ModelVersion(id=98, method="prompt_tuning", config={})
    with pytest.raises(exports.ExportError, match="prompt_tuning cannot be merged"):
        exports.check_allowed(soft, exports.FORMATS["gguf-f16"])
    bottleneck = ModelVersion(id=97, method="adapter", config={})
    with pytest.raises(exports.ExportError, match="adapter cannot be merged .* no gguf-q4_k_m export"):
        exports.check_allowed(bottleneck, exports.FORMATS["gguf-q4_k_m"])
    # the size of the files, said under the picker before the export starts (a Q8_0 weight is 8.5 bits)
    from studio.tabs import versions as tab
    from worker.export import base_architectures

    with session_scope() as db:
        base = db.get(BaseModel, db.get(ModelVersion, version_id).base_model_id)
        db.expunge(base)
    assert base_architectures(base) == ["LlamaForCausalLM"]
    params = exports.safetensors_params(Path(base.path))
    assert exports.files_bytes(exports.FORMATS["gguf-q8_0"], Path(base.path)) == int(params * 1.07)
    assert f"About {params * 1.07 / 2**20:.1f} MB of files" in tab.export_hint(version_id, "gguf-q8_0")
    assert f"About {params * 2 / 2**20:.1f} MB of files" in tab.export_hint(version_id, "gguf-f16")
    # a disk too small: refused before anything is loaded or written
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(UserFacingError, match=r"as gguf-q8_0 writes ~0\.\d\d GB, and .* has 0\.00 GB free"):
        export_version(version_id, tmp_path / "full-disk", format="gguf-q8_0", say=lambda _: None)
    assert not (tmp_path / "full-disk").exists()
    monkeypatch.undo()
    # an architecture llama.cpp's converter does not convert, and a chat template no Modelfile can express: refused
    # before the base is loaded (nothing said about loading it) and before the output folder is made
    said: list[str] = []
    monkeypatch.setattr(gguf, "known_architectures", lambda: {"GPT2LMHeadModel", "Qwen3ForCausalLM"})
    with pytest.raises(UserFacingError, match="converter .* does not convert LlamaForCausalLM, so this version has no "
                                              "GGUF export; export merged safetensors or ONNX instead"):
        export_version(version_id, tmp_path / "arch", format="gguf-f16", say=said.append)
    assert not (tmp_path / "arch").exists() and not any("loading" in line for line in said), said
    monkeypatch.undo()
    monkeypatch.setattr(gguf, "FAMILIES", ())
    with pytest.raises(UserFacingError, match="cannot translate into an Ollama Modelfile"):
        export_version(version_id, tmp_path / "template", format="gguf-q8_0", say=said.append)
    assert not (tmp_path / "template").exists() and not any("loading" in line for line in said), said
    monkeypatch.undo()
    # no converter on this worker: said with the command that fetches it, nothing written
    monkeypatch.setenv("STUDIO_LLAMA_CPP_DIR", str(tmp_path / "none"))
    from studio.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(UserFacingError, match="python -m worker llama-cpp"):
            export_version(version_id, tmp_path / "no-tools", format="gguf-f16", say=lambda _: None)
        assert not (tmp_path / "no-tools").exists()
        # the converter but no llama-quantize (as CI has it): Q4_K_M is refused up front with the command that builds it
        (tmp_path / "none").mkdir()
        (tmp_path / "none" / "convert_hf_to_gguf.py").write_text("")
        with pytest.raises(UserFacingError, match=r"Q4_K_M GGUF export needs llama.cpp's llama-quantize, not built on "
                                                  r"this worker: run `python -m worker llama-cpp --build`"):
            export_version(version_id, tmp_path / "no-quantizer", format="gguf-q4_k_m", say=lambda _: None)
        assert not (tmp_path / "no-quantizer").exists()
    finally:
        monkeypatch.delenv("STUDIO_LLAMA_CPP_DIR")
        get_settings.cache_clear()


@needs_llama_cpp
def test_q4_k_m_through_llama_quantize(smol):
    if not (gguf.llama_cpp_dir() / "build" / "bin" / "llama-quantize").exists():
        assert not os.environ.get("STUDIO_TEST_LLAMA_CPP"), "llama-quantize is not built: python -m worker llama-cpp --build"
        pytest.skip("llama-quantize is not built here: python -m worker llama-cpp --build (minutes)")
    version_id, root = smol
    out = export_version(version_id, root / "q4", format="gguf-q4_k_m", say=lambda _: None)
    record = json.loads((out / "studio_version.json").read_text())["fidelity"]
    assert (out / "model-q4_k_m.gguf").exists() and (out / "Modelfile").exists() and record["prompts"] == 3
    assert not any(p.name.startswith(".gguf-") for p in root.iterdir())  # the temporary folder is gone
