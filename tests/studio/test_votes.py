"""The preference loop without torch, on both backends: votes between two generations (rows written directly,
as the interactive worker would), the refusals, the preference data set they make with its provenance, the DPO
job queued from the preferred version, the side-by-side vote buttons (blind: random order, versions revealed
after the vote), the Playground's "Another answer" and vote, and `studio votes` on the command line."""
from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import gradio as gr
import pytest

from models_db import BaseModel, Dataset, Generation, Job, ModelVersion, session_scope
from models_db.access import acting_as
from models_db.schema import PreferenceVote
from studio import auth, generations, operations, votes
from studio.settings import get_settings
from studio.tabs import playground, side_by_side

CONFIG = {"model_id": 0, "method": "lora", "method_params": {"r": 4, "lora_alpha": 8}, "task": "causal_lm",
          "objective": "sft"}


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 256,
         "max_position_embeddings": 128, "tie_word_embeddings": False}


@pytest.fixture
def studio(backend, tmp_path, monkeypatch):
    """A tiny base (only its config.json, which the DPO submission reads) and two SFT LoRA versions of it."""
    model_dir = tmp_path / "tiny-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA))
    with session_scope() as db:
        base = BaseModel(name="tiny", path=str(model_dir), source="test", architecture="LlamaForCausalLM",
                         config=LLAMA)
        db.add(base)
        db.flush()
        vs = [ModelVersion(name=f"v{i}", base_model_id=base.id, method="lora", config={**CONFIG, "model_id": base.id})
              for i in range(2)]
        db.add_all(vs)
        db.flush()
        ids = SimpleNamespace(base=base.id, v0=vs[0].id, v1=vs[1].id, sent=[])
    monkeypatch.setattr(generations, "send", lambda gid: True)
    monkeypatch.setattr(operations, "send", lambda kind, job_id, queue=None: ids.sent.append((kind, job_id)) or True)
    return ids


def gen(s, version, prompt, output, *, state="done", mode="chat", base=None) -> int:
    """A generation row as the interactive worker leaves it."""
    with session_scope() as db:
        g = Generation(cache_key=uuid.uuid4().hex, base_model_id=base or s.base, version_id=version, prompt=prompt,
                       settings={"max_new_tokens": 8, "mode": mode}, state=state, output=output, new_tokens=3)
        db.add(g)
        db.flush()
        return g.id


def rows_of(dataset_id: int) -> list[dict]:
    with session_scope() as db:
        path = get_settings().home_abs / db.get(Dataset, dataset_id).path
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------ votes become pairs

def test_votes_make_a_preference_data_set_with_its_provenance(studio):
    s = studio
    a1, b1 = gen(s, s.v0, "What is 2 plus 2?", "Five."), gen(s, s.v1, "What is 2 plus 2?", "Four.")
    a2, b2 = gen(s, s.v0, "Name a colour.", "Blue."), gen(s, s.v1, "Name a colour.", "Table.")
    convo = json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Say bye."}])
    a3, b3 = gen(s, s.v0, convo, "Bye!", mode="messages"), gen(s, s.v1, convo, "Goodbye, see you.", mode="messages")
    a4, b4 = gen(s, s.v0, "Tell a joke.", "No."), gen(s, s.v1, "Tell a joke.", "Nope.")
    first = votes.record(a1, b1, "a")  # changed their mind below: the later vote replaces it
    v1 = votes.record(a1, b1, "B")
    v2 = votes.record(a2, b2, "a", blind=True)
    v3 = votes.record(b3, a3, "a")  # B shown first: A is v1's answer
    votes.record(a4, b4, "tie")
    votes.record(b4, a4, "both bad")  # the same two answers again: replaces the tie
    assert v1["winner"] == "b" and v1["a"]["model"] == f"#{s.v0} v0" and v1["b"]["version_id"] == s.v1
    assert votes.summary() == {"votes": 6, "pairs": 3, "ties": 0, "both_bad": 1, "replaced": 2,
                               "preferred": votes.summary()["preferred"]}

    built = votes.build_dataset(name="my votes")
    ds = built["dataset"]
    assert ds["format"] == "preference" and ds["rows"] == 3 and ds["name"] == "my votes" and not built["reused"]
    assert built["message"] == f"data set #{ds['id']} registered with 3 preference pairs from 3 votes"
    assert rows_of(ds["id"]) == [
        {"prompt": "What is 2 plus 2?", "chosen": "Four.", "rejected": "Five."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Table."},
        {"prompt": json.loads(convo), "chosen": "Goodbye, see you.", "rejected": "Bye!"},
    ]
    prov = votes.provenance_of(ds["id"])
    assert prov["kind"] == "preference votes" and prov["votes"] == sorted([v1["id"], v2["id"], v3["id"]])
    assert first["id"] not in prov["votes"] and prov["replaced"] == 2 and prov["both_bad"] == 1
    assert prov["rows"][0] == {"row": 1, "votes": [v1["id"]]} and prov["blind_votes"] == 1
    assert prov["prompts"] == ["What is 2 plus 2?", "Name a colour.", "Say bye."]
    assert {(v["ref"], v["wins"], v["losses"]) for v in prov["versions"]} == {(str(s.v1), 2, 1), (str(s.v0), 1, 2)}
    assert prov["preferred"]["ref"] == str(s.v1)
    assert prov["preferred"]["why"] == (f"#{s.v1} v1 won 2 of the 3 decisive votes against another model "
                                        f"(#{s.v0} v0 won 1)")
    with session_scope() as db:  # `studio dataset show` keeps it with the data set
        assert db.get(Dataset, ds["id"]).stats["provenance"] == prov

    again = votes.build_dataset(name="my votes")  # the same votes: the same version
    assert again["reused"] and again["dataset"]["id"] == ds["id"] and "already holds 3" in again["message"]


def test_refusals_say_why_and_record_nothing(studio):
    s = studio
    a, b = gen(s, s.v0, "Q?", "One answer."), gen(s, s.v1, "Q?", "Another answer.")
    same = gen(s, s.v1, "Q?", " One answer. ")
    other = gen(s, s.v1, "Another question?", "Yes.")
    running, failed = gen(s, s.v1, "Q?", "Hal", state="running"), gen(s, s.v1, "Q?", "", state="failed")
    empty = gen(s, s.v1, "Q?", "  ")
    cases = [((a, a, "a"), "A and B are the same answer"),
             ((a, same, "a"), r"are identical: there is nothing to prefer. Ask again with another seed"),
             ((a, other, "b"), "reply to different prompts"),
             ((a, running, "a"), rf"answer B \(generation {running}\) is still being written"),
             ((failed, b, "a"), rf"answer A \(generation {failed}\) failed"),
             ((a, empty, "a"), "is empty: nothing to judge"),
             ((a, 999_999, "a"), "answer B: generation 999999 does not exist"),
             ((a, b, "maybe"), r"winner 'maybe': choose a \(A is better\), b \(B is better\), tie, or bad")]
    for args, message in cases:
        with pytest.raises(votes.VoteError, match=message):
            votes.record(*args)
    with pytest.raises(votes.VoteError, match="no usable votes yet: a preference pair needs a vote that one answer"):
        votes.build_dataset()
    with pytest.raises(gr.Error, match="Run prompts side by side first"):  # the UI says the same, without a trace
        side_by_side.next_pair(None, True)
    for handler in (side_by_side.build_votes, side_by_side.train_votes):
        with pytest.raises(gr.Error, match="no usable votes yet"):
            handler("x")
    votes.record(a, b, "tie")
    with pytest.raises(votes.VoteError, match=r"no usable votes yet \(1 vote so far: 1 tie\(s\), 0 both bad"):
        votes.train_dpo()
    with session_scope() as db:
        assert db.query(PreferenceVote).count() == 1 and db.query(Dataset).count() == 0 and db.query(Job).count() == 0


def test_votes_are_private_to_whoever_cast_them(studio):
    s = studio
    auth.add_user("alice", "alice-secret-42", team="red")
    auth.add_user("ally", "ally-secret-42", team="red")
    alice, ally = auth.viewer_by_name("alice"), auth.viewer_by_name("ally")
    with acting_as(alice):
        a, b = gen(s, s.v0, "Q?", "Yes."), gen(s, s.v1, "Q?", "No.")
        votes.record(a, b, "a")
    with acting_as(ally):  # a teammate cannot judge alice's generations, see her votes, or build from them
        with pytest.raises(votes.VoteError, match=rf"generation {a} belongs to user alice; generations are private"):
            votes.record(a, b, "b")
        assert votes.list_votes() == [] and votes.summary()["votes"] == 0
        with pytest.raises(votes.VoteError, match="no usable votes yet"):
            votes.build_dataset()
    with acting_as(alice):
        assert [v["winner"] for v in votes.list_votes()] == ["a"]
    assert len(votes.list_votes()) == 1  # the embedded user / admin sees every vote


# ------------------------------------------------------------------------------ DPO from the preferred version

def test_train_dpo_queues_a_dpo_job_from_the_preferred_version(studio):
    s = studio
    for i in range(3):  # v1 wins two of three
        a, b = gen(s, s.v0, f"Q{i}?", f"v0 says {i}"), gen(s, s.v1, f"Q{i}?", f"v1 says {i}")
        votes.record(a, b, "b" if i < 2 else "a")
    out = votes.train_dpo(settings={"max_steps": "2"})
    job_id, ds_id = out["job"]["id"], out["dataset_id"]
    assert out["from_version"] == s.v1 and out["pairs"] == 3 and s.sent == [("train", job_id)]
    assert out["message"] == (f"job #{job_id} queued: DPO from version #{s.v1} on data set #{ds_id} (3 pairs). Why "
                              f"version #{s.v1}: #{s.v1} v1 won 2 of the 3 decisive votes against another model "
                              f"(#{s.v0} v0 won 1).")
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert (job.state, job.dataset_id, job.parent_version_id) == ("queued", ds_id, s.v1)
        assert job.config["objective"] == "dpo" and job.config["method"] == "lora"
        assert job.config["training"]["max_steps"] == 2 and f"Version {s.v1} (lora)" in job.config["lineage_note"]

    # an explicit data set built from votes works too; one not built from votes is refused
    again = votes.train_dpo(ds_id, settings={"max_steps": "2", "beta": "0.2"})
    assert again["dataset_id"] == ds_id and again["job"]["id"] != job_id
    with session_scope() as db:
        assert db.get(Job, again["job"]["id"]).config["objective_params"]["beta"] == 0.2
    plain = get_settings().path("tmp") / "pairs.jsonl"
    plain.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    other, _, _ = operations.add_dataset(plain)
    with pytest.raises(votes.VoteError, match=rf"dataset {other.id} was not built from preference votes"):
        votes.train_dpo(other.id)


def test_the_base_model_can_be_the_preferred_one(studio):
    s = studio
    a, b = gen(s, s.v0, "Q?", "v0 answer"), gen(s, None, "Q?", "base answer")
    votes.record(a, b, "b")
    out = votes.train_dpo(settings={"max_steps": "2"})
    assert out["from_version"] is None and out["preferred"]["ref"] == f"base:{s.base}"
    assert "DPO from base model tiny" in out["message"]
    with session_scope() as db:
        job = db.get(Job, out["job"]["id"])
        assert job.parent_version_id is None and job.base_model_id == s.base and job.config["method"] == "lora"


# ------------------------------------------------------------------------------ the side-by-side buttons

def grid_of(s, prompt="What is 2 plus 2?", outputs=("Five.", "Four.")) -> dict:
    ids = [gen(s, s.v0, prompt, outputs[0]), gen(s, s.v1, prompt, outputs[1])]
    return {"columns": [f"#{s.v0} v0", f"#{s.v1} v1"], "prompts": [prompt], "references": [], "ids": [ids]}


def test_side_by_side_blind_vote_hides_then_reveals_the_versions(studio, monkeypatch):
    s = studio
    grid = grid_of(s)
    monkeypatch.setattr(side_by_side, "_order", SimpleNamespace(random=lambda: 0.1))  # the blind draw swaps them
    duel, head, box_a, box_b, count, table = side_by_side.next_pair(grid, True)
    assert table.visible is False  # the grid above names every answer's version: hidden while a blind pair waits
    assert (duel["a"], duel["b"]) == (grid["ids"][0][1], grid["ids"][0][0])  # v1's answer is shown as A
    assert (box_a.value, box_a.label, box_b.value, box_b.label) == ("Four.", "Answer A", "Five.", "Answer B")
    assert "v0" not in head + box_a.label + box_b.label and "v1" not in head and "1 pair left" in head
    assert "No preference votes yet" in count

    duel2, reveal, box_a, box_b, count, table = side_by_side.vote(duel, "a")
    assert table.visible is True
    assert duel2 is None and f"you preferred A (#{s.v1} v1)" in reveal
    assert f"A was **#{s.v1} v1**, B was **#{s.v0} v0**" in reveal and box_a.label == f"Answer A · #{s.v1} v1"
    assert count.startswith("1 vote: 1 preference pair")
    with session_scope() as db:
        v = db.query(PreferenceVote).one()
        assert (v.generation_a_id, v.version_a_id, v.generation_b_id, v.version_b_id) == \
            (grid["ids"][0][1], s.v1, grid["ids"][0][0], s.v0)
        assert v.blind and v.winner == "a" and v.source == "side_by_side"
    with pytest.raises(gr.Error, match="Click 'Next pair to judge' first"):
        side_by_side.vote(None, "a")

    # judged: nothing left; not blind: column order, names shown
    duel, head, *_ = side_by_side.next_pair(grid, True)
    assert duel is None and "Nothing left to judge here" in head
    monkeypatch.setattr(side_by_side, "_order", SimpleNamespace(random=lambda: 0.1))
    open_grid = grid_of(s, "Name a colour.", ("Blue.", "Table."))
    duel, head, box_a, box_b, _, table = side_by_side.next_pair(open_grid, False)
    assert table.visible is True
    assert duel["a"] == open_grid["ids"][0][0] and box_a.label == f"Answer A · #{s.v0} v0" and not duel["blind"]
    side_by_side.vote(duel, "a")

    result, count = side_by_side.build_votes("")
    assert result.startswith("data set #") and "registered with 2 preference pairs from 2 votes" in result
    ds_id = int(result.split("#")[1].split()[0])
    assert [r["chosen"] for r in rows_of(ds_id)] == ["Four.", "Blue."]  # the blind A (v1's answer) was chosen
    result, _ = side_by_side.train_votes("")
    assert "queued: DPO from version #" in result and "Follow it in the Jobs tab" in result


# ------------------------------------------------------------------------------ the Playground

def finish(gid: int, output: str) -> None:
    with session_scope() as db:
        g = db.get(Generation, gid)
        g.state, g.output, g.new_tokens = "done", output, 3


def test_playground_another_answer_and_vote(studio):
    v = str(studio.v0)
    _, history, gid, *_ = playground.send(v, "Tell me a joke.", [], 8, 0.7, 1, 5)
    finish(gid, "Why did the chicken cross the road?")
    _, history, *_ = playground.poll(gid, history)
    with pytest.raises(gr.Error, match="Temperature 0 is greedy"):
        playground.regenerate(v, history, 8, 0, 1, 5)
    with pytest.raises(gr.Error, match="Send a message and wait for its reply first"):
        playground.regenerate(v, history[:-1], 8, 0.7, 1, 5)

    chat, history, gid_b, timer, _, pair, box, previous, note = playground.regenerate(v, history, 8, 0.7, 1, 5)
    assert previous == "Why did the chicken cross the road?" and box.visible and timer.active
    assert pair["b"] == gid_b and pair["a"] != gid_b and history == [{"role": "user", "content": "Tell me a joke."}]
    with pytest.raises(gr.Error, match=rf"answer B \(generation {gid_b}\) is still being written"):
        playground.vote(pair, "a", history)
    finish(gid_b, "Knock knock.")
    _, history, *_ = playground.poll(gid_b, history)
    assert history[-1]["content"] == "Knock knock."

    chat, history, pair2, box, voted = playground.vote(pair, "a", history)
    assert pair2 is None and not box.visible and voted.startswith("Vote #") and "answer A stays" in voted
    assert history[-1] == {"role": "assistant", "content": "Why did the chicken cross the road?"}
    with session_scope() as db:
        vote = db.query(PreferenceVote).one()
        assert (vote.source, vote.blind, vote.winner, vote.answer_b) == ("playground", False, "a", "Knock knock.")
    # one model's two answers make a pair; that model is the one to start DPO from
    best = votes.summary()["preferred"]
    assert best["ref"] == v and "no vote compared two models" in best["why"]


# ------------------------------------------------------------------------------ the CLI

def test_cli_votes(studio, capsys):
    from studio.cli import main

    s = studio
    a, b = gen(s, s.v0, "Q?", "Yes."), gen(s, s.v1, "Q?", "No.")
    main(["votes", "add", str(a), str(b), "--winner", "b", "--json"])
    added = json.loads(capsys.readouterr().out)
    assert added["winner"] == "b" and added["source"] == "cli"
    main(["votes", "list", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [v["id"] for v in listed["votes"]] == [added["id"]] and listed["summary"]["pairs"] == 1
    main(["votes", "list"])
    assert "1 vote: 1 preference pair" in capsys.readouterr().out
    main(["votes", "dataset", "--name", "cli votes", "--json"])
    built = json.loads(capsys.readouterr().out)
    assert built["dataset"]["name"] == "cli votes" and built["pairs"] == 1
    main(["votes", "train-dpo", "--dataset", str(built["dataset"]["id"]), "--set", "max_steps=2", "--json"])
    out, err = capsys.readouterr()
    trained = json.loads(out)
    assert trained["from_version"] == s.v1 and trained["job"]["state"] == "queued" and err == ""
    with pytest.raises(SystemExit) as exit_:
        main(["votes", "add", str(a), str(a), "--winner", "a"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "" and err.count("\n") == 1 and "the same answer" in err
