"""Sweeps without training: bad input refused before anything is queued; the ask-and-tell loop driven by jobs that
finish (marked finished here, as a worker would), the CLI's JSON, the Sweeps tab's handlers and Promote best.
The trials that really train are in tests/worker/test_sweep_trials.py."""
from __future__ import annotations

import json

import pytest

from models_db import BaseModel, Job, ModelVersion, Sweep, session_scope
from models_db import jobs as jobq
from studio import operations, sweeps
from tests.cli import write_instruction_jsonl

SPACE = ["learning_rate=loguniform:1e-5:1e-3", "r=choice:4,16"]


@pytest.fixture
def world(backend, tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 256,
              "max_position_embeddings": 128, "tie_word_embeddings": False}
    (model_dir / "config.json").write_text(json.dumps(config))
    with session_scope() as db:
        base = BaseModel(name="tiny", path=str(model_dir), source=str(model_dir), architecture="LlamaForCausalLM",
                         config=config)
        db.add(base)
        db.flush()
        base_id = base.id
    write_instruction_jsonl(tmp_path / "rows.jsonl", n=20)
    ds, _, _ = operations.add_dataset(tmp_path / "rows.jsonl")
    yield {"model": base_id, "dataset": ds.id}
    sweeps.reset_storages()


def counts() -> tuple[int, int]:
    with session_scope() as db:
        return db.query(Sweep).count(), db.query(Job).count()


BAD = [
    (["lr=loguniform:1e-5:1e-3"], {}, "unknown setting 'lr'"),
    (["learning_rate=loguniform:1e-3:1e-5"], {}, "bounds are reversed"),
    (["learning_rate=loguniform:1e-5:2"], {}, "outside [1e-08, 1.0]"),
    (["r=choice:4,0"], {}, "r must be >= 1"),
    (["r=uniform:4:16"], {}, "int:LOW:HIGH or choice"),
    (["learning_rate=loguniform:0:1e-3"], {}, "positive low bound"),
    (["learning_rate=beta:1:2"], {}, "unknown kind 'beta'"),
    (SPACE, {"trials": 0}, "at least 1 trial"),
    (SPACE, {"metric": "eval_loss"}, "holds out no eval rows"),
    (SPACE, {"metric": "bleu"}, "does not record it"),
    (SPACE, {"sampler": "grid"}, "learning_rate is a continuous range"),
    (["r=choice:4,16"], {"sampler": "grid", "trials": 3}, "the grid has only 2 points"),
    (SPACE, {"settings": {"learning_rate": "1e-4"}}, "both searched (--space) and fixed (--set)"),
]


def test_bad_sweeps_are_refused_before_anything_is_queued(world):
    for space, extra, message in BAD:
        kwargs = {"trials": 2, "metric": "train_loss", **extra}
        with pytest.raises(sweeps.SweepError) as e:
            sweeps.create(model=world["model"], dataset_id=world["dataset"], method="lora", space=space, **kwargs)
        assert message in str(e.value), (space, extra, str(e.value))
    assert counts() == (0, 0)


def finish(job_id: int, loss: float, version: bool = True) -> None:
    """What a worker does: claim the trial's job and succeed it with its figures (and a version)."""
    with session_scope() as db:
        claim = jobq.claim(db, job_id, "w", 60)
        job = db.get(Job, job_id)
        v = {"name": f"v{job_id}", "base_model_id": job.base_model_id, "dataset_id": job.dataset_id, "method": "lora",
             "config": job.config, "metrics": {"train_loss": loss}, "artifacts": {}} if version else None
        jobq.succeed(db, claim, result={"metrics": {"train_loss": loss}}, version=v)


def queued(sweep_id: int) -> list[int]:
    with session_scope() as db:
        return [j.id for j in sweeps._trial_jobs(db, sweep_id) if j.state == "queued"]


def test_the_loop_asks_as_jobs_finish_and_the_cli_shows_trials_and_the_best(world, capsys):
    from studio.cli import main

    main(["sweep", "--model", "tiny", "--dataset", str(world["dataset"]), "--method", "lora", "--trials", "3",
          *[a for s in SPACE for a in ("--space", s)], "--metric", "train_loss", "--sampler", "random",
          "--set", "max_steps=2", "--json"])
    started = json.loads(capsys.readouterr().out)
    sweep_id = started["id"]
    assert started["state"] == "running" and started["direction"] == "minimize" and started["sampler"] == "random"
    assert len(started["trials"]) == 1 and started["trials"][0]["state"] == "queued"  # no worker alive: one at a time
    losses = iter([2.0, 1.0, 3.0])
    while ids := queued(sweep_id):
        finish(ids[0], next(losses))
        sweeps.after_job(ids[0], {"sweep_id": sweep_id})  # the worker's finishing path
    main(["sweep", "show", str(sweep_id), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "done" and [t["train_loss"] for t in out["trials"]] == [2.0, 1.0, 3.0]
    assert set(out["trials"][0]) >= {"number", "params", "state", "train_loss", "job_id", "version_id"}
    assert set(out["trials"][0]["params"]) == {"learning_rate", "r"}
    assert out["best"]["number"] == 1 and out["best"]["value"] == 1.0 and out["best"]["version_id"]
    with session_scope() as db:  # the trial's job carries its sweep in its config (trackers tag their runs with it)
        assert db.get(Job, out["best"]["job_id"]).config["sweep_id"] == sweep_id
    main(["sweep", "list", "--json"])
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["sweeps"]] == [sweep_id]

    # the Sweeps tab: summary, table, curves, parallel coordinates, importances; Promote best tags the version
    from studio.tabs import sweeps as tab

    summary, table, _plot, parallel, _weights = tab.show(sweep_id)
    assert "Best: trial 1" in summary and len(table) == 3 and list(table.columns)[:4] == ["trial", "state",
                                                                                           "learning_rate", "r"]
    assert parallel.count("<polyline") == 3
    assert tab.sweep_choices().value == sweep_id
    assert "version #" in tab.promote(sweep_id, "best")
    with session_scope() as db:
        assert "best" in db.get(ModelVersion, out["best"]["version_id"]).tags


def test_a_cancelled_sweep_asks_no_more_and_cancels_its_queued_trial(world):
    sweep_id = sweeps.create(model=world["model"], dataset_id=world["dataset"], method="lora", space=SPACE, trials=4,
                             metric="train_loss", settings={"max_steps": "2"}, seed_from_advisor=False)
    (job_id,) = queued(sweep_id)
    assert sweeps.cancel(sweep_id) == "cancelled"
    out = sweeps.sweep_json(sweep_id)
    assert out["state"] == "cancelled" and [t["state"] for t in out["trials"]] == ["cancelled"]
    assert queued(sweep_id) == []
    with pytest.raises(sweeps.SweepError, match="no finished trial"):
        sweeps.promote_best(sweep_id)


def test_a_trial_line_shows_the_error_of_a_failed_or_cancelled_trial_only():
    from studio.cli.sweep import _trial_line

    trial = {"number": 0, "params": {"r": 8}, "value": None, "job_id": 3, "version_id": None, "error": "boom"}
    assert _trial_line({**trial, "state": "failed"}, "eval_loss").endswith("[job 3] (boom)")
    assert _trial_line({**trial, "state": "cancelled"}, "eval_loss").endswith("(boom)")
    assert "boom" not in _trial_line({**trial, "state": "succeeded"}, "eval_loss")
