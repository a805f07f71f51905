"""Generations from the studio side, on both backends, without torch: cache keys, reuse of a done row,
re-sending a lost one, retrying a failed one, prompts sampled from a data set's eval split (or its
training rows), the latency row of the comparison, the CLI, and the Playground and side-by-side handlers
(the worker's part is played by writing the row, as the interactive worker would)."""
import json
from datetime import timedelta

import gradio as gr
import pytest
from sqlalchemy import update

from models_db import BaseModel, Generation, ModelVersion, session_scope
from models_db.schema import utcnow
from studio import cli, generations, operations, versions
from studio.datasets.split import Split
from studio.tabs import playground, side_by_side

S = {"max_new_tokens": 8, "temperature": 0, "seed": 1}


@pytest.fixture
def studio(backend, tmp_path, monkeypatch):
    """A base model, an instruction data set with an eval split, and two versions trained on it."""
    rows = [{"instruction": f"What is {i} plus 1?", "output": f"The answer is {i + 1}."} for i in range(20)]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, _, _ = operations.add_dataset(src, split=Split(ratio=0.25, seed=3))
    with session_scope() as db:
        base = BaseModel(name="tiny", path="models/tiny", source="test")
        db.add(base)
        db.flush()
        vs = [ModelVersion(name=f"v{i}", base_model_id=base.id, dataset_id=ds.id, method="lora", config={},
                           metrics={"train_loss": 0.5}) for i in range(2)]
        db.add_all(vs)
        db.flush()
        ids = {"base": base.id, "dataset": ds.id, "versions": [v.id for v in vs]}
    sent = []
    monkeypatch.setattr(generations, "send", lambda gid: sent.append(gid) or True)
    ids["sent"] = sent
    return ids


def finish(gid: int, output: str, ms: float = 2.0, tokens: int = 3) -> None:
    """What the interactive worker writes at the end."""
    with session_scope() as db:
        db.execute(update(Generation).where(Generation.id == gid).values(
            state="done", output=output, ms_per_token=ms, new_tokens=tokens, updated_at=utcnow()))


def test_keys_reuse_stale_resend_and_failed_retry(studio):
    v = studio["versions"][0]
    k = generations.cache_key(studio["base"], v, "hi", generations.canonical_settings(S))
    assert k != generations.cache_key(studio["base"], v, "hi", generations.canonical_settings({**S, "seed": 2}))
    assert k != generations.cache_key(studio["base"], None, "hi", generations.canonical_settings(S))
    assert generations.canonical_settings({"max_new_tokens": "8"}) == {
        "max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0}

    [a] = generations.request([v], ["hi"], S)
    [b] = generations.request([f"#{v}"], ["hi"], S)  # in flight: the same row, not sent twice
    assert a["id"] == b["id"] and studio["sent"] == [a["id"]] and a["state"] == "queued"
    finish(a["id"], "hello")
    [c] = generations.request([v], ["hi"], S)
    assert c["id"] == a["id"] and c["state"] == "done" and c["output"] == "hello" and studio["sent"] == [a["id"]]

    [d] = generations.request([v], ["bye"], S)
    old = utcnow() - timedelta(seconds=3600)
    with session_scope() as db:  # the worker took it, then vanished
        db.execute(update(Generation).where(Generation.id == d["id"]).values(state="running", worker_id="w1",
                                                                             updated_at=old))
    [stuck] = generations.status([d["id"]])
    assert "probably lost" in stuck["note"] and "w1" in stuck["note"]
    [again] = generations.request([v], ["bye"], S)
    assert again["id"] == d["id"] and again["state"] == "queued" and studio["sent"][-1] == d["id"]

    with session_scope() as db:
        db.execute(update(Generation).where(Generation.id == d["id"]).values(updated_at=old))
    assert "no worker has picked this up" in generations.status([d["id"]])[0]["note"]
    with session_scope() as db:  # another one is being written: the worker is alive, just busy
        db.execute(update(Generation).where(Generation.id == a["id"]).values(state="running", updated_at=utcnow()))
    assert "waiting for the interactive worker" in generations.status([d["id"]])[0]["note"]
    finish(a["id"], "hello")

    with session_scope() as db:
        db.execute(update(Generation).where(Generation.id == d["id"]).values(state="failed", error="boom"))
    assert generations.display(generations.status([d["id"]])[0]) == "⚠ boom"
    [retried] = generations.request([v], ["bye"], S)
    assert retried["state"] == "queued" and retried["error"] is None and studio["sent"].count(d["id"]) == 3


def test_refs_conversations_and_bad_input(studio):
    base = f"base:{studio['base']}"
    rows = generations.request([base, "base:tiny"], [[{"role": "user", "content": "hi"}], "hi"], S)
    assert len({r["id"] for r in rows}) == 1  # a one-turn conversation is the same prompt; base by id or name
    [conv] = generations.request([base], [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                           {"role": "user", "content": "c"}]], S)
    assert conv["mode"] == "messages" and json.loads(conv["prompt"])[-1]["content"] == "c"
    for refs, prompts, settings, says in (
            (["999"], ["x"], S, "version 999 does not exist"), (["base:nope"], ["x"], S, "base model 'nope'"),
            (["v9x"], ["x"], S, "neither a version id"), ([base], ["  "], S, "empty"),
            ([base], ["x"], {"temperature": 5}, "temperature 5.0 is out of range"),
            ([base], ["x"], {"beams": 2}, "unknown generation setting"),
            ([base], [[{"role": "assistant", "content": "x"}]], S, "end with the user's turn")):
        with pytest.raises(generations.GenerationError, match=says):
            generations.request(refs, prompts, settings)


def test_sampling_from_the_eval_split_then_the_training_rows(studio, tmp_path):
    v = studio["versions"][0]
    picked, where = generations.sample_prompts(v, 3)
    assert len(picked) == 3 and "eval split" in where
    evals = [json.loads(line) for line in
             (operations.get_settings().home_abs / _dataset_path(studio["dataset"])).with_name("eval.jsonl").open()]
    questions = {r["messages"][-2]["content"]: r["messages"][-1]["content"] for r in evals}
    assert all(p.prompt in questions and p.reference == questions[p.prompt] for p in picked)
    assert generations.sample_prompts(v, 3) == (picked, where)  # seeded: the same sample again
    assert len(generations.sample_prompts(v, 50)[0]) == 5  # all 5 eval rows, no more

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"row {i} is a plain sentence to continue"}) + "\n" for i in range(4)))
    ds, _, _ = operations.add_dataset(text, format="text")
    with session_scope() as db:
        db.get(ModelVersion, v).dataset_id = ds.id
    picked, where = generations.sample_prompts(v, 2)
    assert "no eval split" in where and all(p.raw and p.prompt.startswith("row ") for p in picked)
    assert generations.row_prompt({"text": "a b c d", "label": "x"}).reference == "x"


def _dataset_path(dataset_id: int) -> str:
    from models_db import Dataset

    with session_scope() as db:
        return db.get(Dataset, dataset_id).path


def test_latency_in_the_comparison_and_cli(studio, capsys):
    a, b = studio["versions"]
    for v, ms in ((a, [2.0, 4.0, 9.0]), (b, [1.0])):
        for i, x in enumerate(ms):
            [row] = generations.request([v], [f"p{i}"], S)
            finish(row["id"], f"out{i}", ms=x)
    [lat] = [m for m in versions.compare([a, b])["metrics"] if m["key"] == "ms_per_token"]
    assert lat["values"] == [4.0, 1.0] and lat["label"] == "latency (ms/token)" and lat["better"] == "lower"

    capsys.readouterr()
    cli.main(["versions", "compare", str(a), str(b), "--json"])
    assert "ms_per_token" in {m["key"] for m in json.loads(capsys.readouterr().out)["metrics"]}
    # cached outputs come back at once; a queued one is waited for until the timeout, then reported
    cli.main(["versions", "generate", str(a), "--prompt", "p0", "--prompt", "p2", "--max-new-tokens", "8",
              "--seed", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [g["output"] for g in out["generations"]] == ["out0", "out2"]
    with pytest.raises(SystemExit):
        cli.main(["versions", "generate", str(a), "--prompt", "new", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert "did not finish" in err and "0/1 finished" in err


def test_playground_handlers_stream_a_reply_and_keep_the_conversation(studio):
    v = str(studio["versions"][0])
    assert v in [c[1] for c in playground.on_open(None).choices]
    chat, history, gid, box, timer, stats = playground.send(v, "What is 1 plus 1?", [], 8, 0, 1, 1)
    assert history == [{"role": "user", "content": "What is 1 plus 1?"}] and gid and box == "" and timer.active
    assert chat[-1] == {"role": "assistant", "content": "…"}
    with session_scope() as db:  # the worker has written part of the reply
        db.execute(update(Generation).where(Generation.id == gid).values(state="running", output="The ans"))
    chat, *_ , note = playground.poll(gid, history)
    assert chat[-1]["content"].startswith("The ans") and note == "Writing…"
    finish(gid, "The answer is 2.", ms=3.5, tokens=6)
    chat, history, gid2, timer, stats = playground.poll(gid, history)
    assert history[-1] == {"role": "assistant", "content": "The answer is 2."} and gid2 is None and not timer.active
    assert "3.5 ms/token" in stats and "6 new tokens" in stats

    # the second turn sends the whole conversation
    _, history, gid, *_ = playground.send(v, "And 2 plus 2?", history, 8, 0, 1, 1)
    with session_scope() as db:
        prompt = json.loads(db.get(Generation, gid).prompt)
    assert [m["content"] for m in prompt] == ["What is 1 plus 1?", "The answer is 2.", "And 2 plus 2?"]
    with session_scope() as db:
        db.execute(update(Generation).where(Generation.id == gid).values(state="failed", error="files missing"))
    chat, history, gid, _, stats = playground.poll(gid, history)
    assert "files missing" in stats and "⚠" in chat[-1]["content"] and len(history) == 2
    with pytest.raises(gr.Error, match="Type a message"):
        playground.send(v, " ", [], 8, 0, 1, 1)


def test_side_by_side_handlers_fill_the_grid(studio):
    a, b = studio["versions"]
    text, sampled, note = side_by_side.sample([a, b], 2)
    assert len(text.splitlines()) == 2 and "eval split" in note
    grid, table, timer = side_by_side.run([a, b], True, text, sampled, 8, 0, 1, 0)
    assert grid["columns"] == [f"#{a} v0", f"#{b} v1", "base · tiny"] and len(grid["ids"]) == 2
    assert grid["references"][0].startswith("The answer is") and "0/6 outputs" in table and timer.active
    for row in grid["ids"]:
        for i, gid in enumerate(row):
            finish(gid, f"output of column {i}")
    table, timer = side_by_side.poll(grid)
    assert not timer.active and "6/6 outputs" in table and "output of column 2" in table and "2.0 ms/token" in table
    # the same prompts again: every cell comes from the cache
    again, table, _ = side_by_side.run([a, b], True, text, sampled, 8, 0, 1, 0)
    assert again["ids"] == grid["ids"] and "6/6 outputs" in table
    # typed prompts replace the sampled ones
    typed, _, _ = side_by_side.run([a, b], False, "one\ntwo\nthree", sampled, 8, 0, 1, 0)
    assert typed["prompts"] == ["one", "two", "three"] and typed["references"] == []
    with pytest.raises(gr.Error, match="2 to 4 versions"):
        side_by_side.run([a], False, "x", None, 8, 0, 1, 0)


def test_the_stats_line_says_where_the_reply_stopped_and_when_the_first_token_came():
    from studio.tabs.playground import stats_line

    row = {"new_tokens": 128, "ms_per_token": 20.0, "ttft_ms": 40.0, "first_token_ms": 1540.0, "queued_ms": 1200.0,
           "stopped_at_limit": True, "max_new_tokens": 128}
    line = stats_line(row)
    assert "first token 1540 ms after sending, 1200 ms of it waiting for the worker" in line
    assert "Stopped at the 128-token limit" in line and "Max new tokens" in line
    done = stats_line({**row, "new_tokens": 12, "stopped_at_limit": False, "queued_ms": 0.2})
    assert "Stopped" not in done and "waiting for the worker" not in done


def test_the_playground_opens_on_the_newest_version_unless_one_was_picked(monkeypatch):
    from studio import generations
    from studio.tabs import playground

    choices = [("#3 newest (lora)", "3"), ("#1 older (lora)", "1"), ("base · tiny", "base:1")]
    monkeypatch.setattr(generations, "model_choices", lambda: choices)
    assert playground.on_open("1").value == "3"  # shown by default earlier: a newer version now leads
    assert playground.on_open("1", picked=True).value == "1"  # the person's pick stays while it exists
    assert playground.on_open("7", picked=True).value == "3"  # deleted since: the newest
