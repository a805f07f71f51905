"""`studio dataset` through the real CLI: mapping by hand, stored splits, editing the mapping, and
`dataset show` listing the jobs and model versions that used a version (with a real worker)."""
from __future__ import annotations

import json

import pytest

from tests.backends import backend_env
from tests.cli import Cli


@pytest.fixture
def cli(tmp_path):
    with backend_env("embedded", tmp_path / "home") as env:
        c = Cli(env)
        c.run("db", "upgrade")
        yield c


def write_qa(path, n: int) -> None:
    path.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"The answer is {i + 1}.",
                                        "hint": f"add one to {i}"}) + "\n" for i in range(n)))


def test_map_split_edit_and_show(cli, tmp_path):
    data = tmp_path / "qa.jsonl"
    write_qa(data, 20)
    out = cli.json("dataset", "add", str(data), "--format", "instruction", "--map", "instruction=hint",
                   "--map", "output=answer", "--eval-split", "0.2", "--seed", "5")
    ds = out["dataset"]
    assert ds["mapping"] == {"instruction": "hint", "output": "answer"} and out["report"]["format"] == "instruction"
    assert (ds["rows"], ds["eval_rows"], ds["split"]) == (16, 4, {"kind": "ratio", "eval_ratio": 0.2, "seed": 5})
    edited = cli.json("dataset", "edit", str(ds["id"]), "--map", "instruction=question", "--map", "output=answer")
    child = edited["dataset"]
    assert child["parent_id"] == ds["id"] and child["content_hash"] != ds["content_hash"]
    assert (child["rows"], child["eval_rows"], child["split"]) == (16, 4, ds["split"])  # the split is kept
    shown = cli.json("dataset", "show", str(ds["id"]))["dataset"]
    assert [c["id"] for c in shown["children"]] == [child["id"]] and shown["jobs"] == shown["versions"] == []
    assert cli.json("dataset", "show", str(child["id"]))["dataset"]["ancestors"][0]["id"] == ds["id"]

    dev = tmp_path / "dev.jsonl"
    write_qa(dev, 3)
    with_file = cli.json("dataset", "add", str(data), "--eval-file", str(dev))["dataset"]
    assert (with_file["rows"], with_file["eval_rows"], with_file["split"]["eval_file"]) == (20, 3, "dev.jsonl")


def test_bad_options_register_nothing(cli, tmp_path):
    data = tmp_path / "qa.jsonl"
    write_qa(data, 5)
    for args, needle in [
        (["--map", "instruction"], "--map 'instruction': expected FIELD=COLUMN"),
        (["--eval-split", "0.2", "--eval-file", str(data)], "not both"),
        (["--max-seq-length", "64"], "max_seq_length needs a model"),
    ]:
        p = cli.run("dataset", "add", str(data), *args, ok=False)
        assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert cli.json("dataset", "list")["datasets"] == []


def test_a_job_trains_on_the_stored_split_with_packing_and_is_listed(cli, tiny_llama_dir, tmp_path):
    cli.json("models", "import", str(tiny_llama_dir), "--name", "tiny")
    data = tmp_path / "qa.jsonl"
    write_qa(data, 24)
    ds = cli.json("dataset", "add", str(data), "--eval-split", "0.25", "--model", "tiny",
                  "--max-seq-length", "128")["dataset"]
    assert ds["stats"]["length_check"] == {"model": "tiny", "max_seq_length": 128}
    with cli.worker():
        job = cli.json("train", "--model", "tiny", "--dataset", str(ds["id"]), "--method", "lora",
                       "--set", "max_steps=4", "--set", "packing=true", "--set", "eval_split=0.5", "--wait")
    assert job["state"] == "succeeded", job["error"]
    shown = cli.json("dataset", "show", str(ds["id"]))["dataset"]
    # its training job, and the follow-up evaluation of the base on the same data (the version's comparison)
    assert [(j["id"], j["state"], j["version_id"]) for j in shown["jobs"] if j["kind"] == "train"] == [
        (job["id"], "succeeded", job["version_id"])]
    assert {j["kind"] for j in shown["jobs"]} <= {"train", "evaluate"}
    [version] = shown["versions"]
    assert version["id"] == job["version_id"] and version["eval_loss"] is not None
    rows = cli.json("versions", "show", str(job["version_id"]))["metrics"]["rows"]
    assert (rows["train_rows"], rows["eval_rows"], rows["eval_source"]) == (18, 6, "the data set's stored split")
