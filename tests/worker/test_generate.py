"""The interactive worker's generation on a tiny model: a LoRA version trained through the real job,
streamed into its Generation row, checked against a plain greedy ``generate``; the cache, a redelivered
task, the model cache, a base-model chat and a version whose files are gone."""
from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_db import Generation, ModelVersion, session_scope
from studio import generations
from tests.worker.test_recipe_methods import reload, run_train, studio  # noqa: F401 - studio is a fixture
from worker import generate, lineage

SETTINGS = {"max_new_tokens": 12, "temperature": 0, "seed": 0}


@pytest.fixture
def sent(monkeypatch):
    """The generation ids the studio sent to the interactive queue (no worker consumes it here)."""
    ids = []
    monkeypatch.setattr(generations, "send", lambda gid: ids.append(gid) or True)
    return ids


@pytest.fixture(scope="module")
def lora(studio):  # noqa: F811
    return run_train(studio, "lora")


def greedy(model, tokenizer, prompt: str, n: int) -> str:
    enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_version_streams_into_its_row_and_matches_plain_generate(studio, lora, sent, monkeypatch):  # noqa: F811
    generate.CACHE.clear()
    flushed = []
    real_write = generate.write
    monkeypatch.setattr(generate, "FLUSH_S", 0.0)  # write every piece, to see the output grow
    monkeypatch.setattr(generate, "write", lambda gid, wid, **v: (flushed.append(v.get("output")), real_write(gid, wid, **v)))
    [row] = generations.request([lora.id], ["What is 3 plus 1?"], SETTINGS)
    assert row["state"] == "queued" and sent == [row["id"]]

    assert generate.run_generation(row["id"]) == "done"
    [done] = generations.status([row["id"]])
    assert done["state"] == "done", done["error"]
    assert 0 < done["new_tokens"] <= 12 and done["ms_per_token"] > 0 and done["ttft_ms"] > 0  # 12 or an EOS
    # from the click: the queue wait and the model load come before the first token
    assert done["first_token_ms"] >= done["ttft_ms"] and done["queued_ms"] >= 0
    assert done["stopped_at_limit"] == (done["new_tokens"] == 12)
    expected = greedy(reload(studio, lora), AutoTokenizer.from_pretrained(lineage.artifact(lora)), "What is 3 plus 1?", 12)
    assert done["output"] == expected
    growing = [o for o in flushed[:-1] if o is not None]  # the pieces written while streaming, then the final one
    assert len(growing) >= 2 and all(b.startswith(a) for a, b in itertools.pairwise(growing))

    # asked again: the same row, done, nothing sent and nothing run
    [again] = generations.request([str(lora.id)], ["What is 3 plus 1?"], SETTINGS)
    assert again["id"] == row["id"] and again["state"] == "done" and sent == [row["id"]]
    # a redelivered message does nothing
    assert generate.run_generation(row["id"]) == "skipped"
    assert generations.status([row["id"]])[0]["output"] == expected

    # another prompt reuses the loaded model: no second load
    loads = generate.CACHE.loads
    [other] = generations.request([lora.id], ["What is 7 plus 1?"], SETTINGS)
    assert generate.run_generation(other["id"]) == "done" and generate.CACHE.loads == loads


def test_base_model_chat_and_sampling_is_seeded(studio, sent):  # noqa: F811
    generate.CACHE.clear()
    conversation = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "What is 2 plus 1?"}]
    sampled = {"max_new_tokens": 8, "temperature": 0.9, "top_p": 0.95, "seed": 7}
    rows = generations.request([f"base:{studio.model_id}"], [conversation, "The quick brown"], sampled)
    assert [r["mode"] for r in rows] == ["messages", "chat"]
    for r in rows:
        assert generate.run_generation(r["id"]) == "done"
    first = generations.status([rows[0]["id"]])[0]["output"]
    # the same seed through the model itself gives the same sample
    model = AutoModelForCausalLM.from_pretrained(studio.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(studio.model_dir)
    enc = tok.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(7)
    out = model.generate(**enc, **generate.generate_kwargs(generations.canonical_settings(sampled), tok))
    assert first == tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_missing_files_fail_with_a_message_and_retry_on_request(studio, sent, tmp_path):  # noqa: F811
    generate.CACHE.clear()
    version = run_train(studio, "lora", max_steps=1, eval_steps=1, save_steps=1)
    folder = lineage.artifact(version)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    [row] = generations.request([version.id], ["hi"], SETTINGS)
    assert generate.run_generation(row["id"]) == "failed"
    [failed] = generations.status([row["id"]])
    assert f"files of version {version.id}" in failed["error"] and "missing" in failed["error"]
    assert "⚠" in generations.display(failed)
    shutil.move(moved, folder)
    [retry] = generations.request([version.id], ["hi"], SETTINGS)  # a failed row is re-queued and re-sent
    assert retry["id"] == row["id"] and retry["state"] == "queued" and sent.count(row["id"]) == 2
    assert generate.run_generation(row["id"]) == "done"
    with session_scope() as db:
        assert db.scalar(select(Generation.state).where(Generation.id == row["id"])) == "done"
        assert db.get(ModelVersion, version.id) is not None


def test_latency_reaches_the_comparison(studio, lora, sent):  # noqa: F811
    from studio import versions

    other = run_train(studio, "lora", max_steps=1, eval_steps=1, save_steps=1)
    for row in generations.request([lora.id, other.id], ["What is 5 plus 1?"], SETTINGS):
        generate.run_generation(row["id"])
    out = versions.compare([lora.id, other.id])
    [latency] = [m for m in out["metrics"] if m["key"] == "ms_per_token"]
    assert all(x is not None and x > 0 for x in latency["values"])
