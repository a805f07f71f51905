"""Registered dataset versions on each database backend: the stored split, mapping edits that make
new versions, the kept upload, lineage and the jobs and model versions that used a version."""
from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from models_db import BaseModel, Dataset, ModelVersion, get_engine, session_scope
from models_db import jobs as jobq
from models_db.migrate import alembic_config
from studio import operations
from studio.datasets import DatasetError, versions
from studio.datasets.split import Split

from tests.studio.test_datasets_helpers import jsonl, write

QA = [{"question": f"What is {i} + 1?", "answer": f"{i + 1}", "note": f"n{i}"} for i in range(20)]


def rows_of(backend, ds, name="rows.jsonl") -> list[dict]:
    path = backend.home_abs / ds.path
    return [json.loads(line) for line in path.with_name(name).read_text().splitlines()]


def users(rows) -> list[str]:
    return [r["messages"][0]["content"] for r in rows]


def test_ratio_split_is_fixed_by_seed_and_stored(backend, tmp_path):
    src = write(tmp_path, "qa.jsonl", jsonl(QA))
    ds, report, reused = operations.add_dataset(src, split=Split(ratio=0.25, seed=7))
    assert not reused and (ds.rows, ds.eval_rows) == (15, 5) and report.valid_rows == 20
    assert ds.split == {"kind": "ratio", "eval_ratio": 0.25, "seed": 7}
    train, evals = rows_of(backend, ds), rows_of(backend, ds, "eval.jsonl")
    assert sorted(users(train) + users(evals)) == sorted(f"What is {i} + 1?" for i in range(20))
    again, _, reused = operations.add_dataset(src, split=Split(ratio=0.25, seed=7))
    assert reused and again.id == ds.id
    other, _, _ = operations.add_dataset(src, split=Split(ratio=0.25, seed=8))
    assert other.id != ds.id and other.content_hash != ds.content_hash and other.parent_id == ds.id
    assert users(rows_of(backend, other, "eval.jsonl")) != users(evals)  # another seed, other rows
    plain, _, _ = operations.add_dataset(src)
    assert plain.split == {} and (plain.rows, plain.eval_rows) == (20, 0)
    assert not (backend.home_abs / plain.path).with_name("eval.jsonl").exists()


def test_separate_eval_file(backend, tmp_path):
    src = write(tmp_path, "train.jsonl", jsonl(QA[:15]))
    evf = write(tmp_path, "dev.jsonl", jsonl(QA[15:] + [{"question": "q", "answer": ""}]))
    with pytest.raises(DatasetError, match=r"dev.jsonl: 6 rows, 1 bad: 1 empty answer \(row 6\)"):
        operations.add_dataset(src, split=Split(eval_file=evf))
    ds, _, _ = operations.add_dataset(src, split=Split(eval_file=evf), drop_bad_rows=True)
    assert (ds.rows, ds.eval_rows, ds.dropped_rows) == (15, 5, 1)
    assert ds.split["kind"] == "file" and ds.split["eval_file"] == "dev.jsonl"
    assert users(rows_of(backend, ds, "eval.jsonl")) == [f"What is {i} + 1?" for i in range(15, 20)]
    odd = write(tmp_path, "odd.jsonl", jsonl([{"prompt": "p", "completion": "c"}]))
    with pytest.raises(DatasetError, match="odd.jsonl: the mapping names column"):
        operations.add_dataset(src, split=Split(eval_file=odd))
    with pytest.raises(DatasetError, match="not both"):
        Split(ratio=0.1, eval_file=evf)
    with pytest.raises(DatasetError, match="between 0 and 0.5"):
        Split(ratio=0.9)


def test_split_needs_two_rows(backend, tmp_path):
    src = write(tmp_path, "one.jsonl", jsonl(QA[:1]))
    with pytest.raises(DatasetError, match="one.jsonl: 1 usable row\\(s\\) cannot be split"):
        operations.add_dataset(src, split=Split(ratio=0.1))
    assert_nothing_registered(backend)


def test_editing_the_mapping_makes_a_child_version(backend, tmp_path):
    src = write(tmp_path, "qa.jsonl", jsonl(QA))
    first, _, _ = operations.add_dataset(src, split=Split(ratio=0.1, seed=1))
    assert first.mapping == {"instruction": "question", "output": "answer"} and first.parent_id is None
    assert (backend.home_abs / first.source_path).read_bytes() == src.read_bytes()  # the upload is kept
    src.unlink()  # the edit reads the kept upload, not the person's file
    child, report, reused = versions.edit_mapping(first.id, mapping={"instruction": "note", "output": "answer"})
    assert not reused and child.parent_id == first.id and child.content_hash != first.content_hash
    assert child.split == first.split and (child.rows, child.eval_rows) == (18, 2)
    assert users(rows_of(backend, child))[0].startswith("n") and report.mapping["instruction"] == "note"
    same, _, reused = versions.edit_mapping(first.id, mapping={"instruction": "note", "output": "answer"})
    assert reused and same.id == child.id
    with pytest.raises(DatasetError, match="'nope' that the file does not have"):
        versions.edit_mapping(first.id, mapping={"instruction": "nope", "output": "answer"})
    with pytest.raises(DatasetError, match="dataset 999 does not exist"):
        versions.edit_mapping(999, mapping={"instruction": "note", "output": "answer"})
    with session_scope() as db:
        info = versions.describe(db, db.get(Dataset, child.id))
        assert [a["id"] for a in info["ancestors"]] == [first.id]
        assert [c["id"] for c in versions.describe(db, db.get(Dataset, first.id))["children"]] == [child.id]


def test_the_same_upload_with_another_mapping_names_its_parent(backend, tmp_path):
    src = write(tmp_path, "qa.csv", "question,answer,note\n" + "".join(f"q{i},a{i},n{i}\n" for i in range(5)))
    first, _, _ = operations.add_dataset(src)
    second, _, _ = operations.add_dataset(src, format="text", mapping={"text": "note"})
    assert (second.format, second.parent_id) == ("text", first.id)


def test_describe_lists_the_jobs_and_model_versions_that_used_it(backend, tmp_path):
    ds, _, _ = operations.add_dataset(write(tmp_path, "qa.jsonl", jsonl(QA)))
    with session_scope() as db:
        base = BaseModel(name="tiny", path=str(tmp_path), source="test")
        db.add(base)
        db.flush()
        job, _ = jobq.create_job(db, kind="train", config={"method": "lora"}, dataset_id=ds.id, base_model_id=base.id)
        db.add(ModelVersion(name="tiny-lora", base_model_id=base.id, dataset_id=ds.id, job_id=job.id, method="lora",
                            metrics={"eval_loss": 1.5}))
    with session_scope() as db:
        info = versions.describe(db, db.get(Dataset, ds.id))
    assert [(j["id"], j["method"], j["state"]) for j in info["jobs"]] == [(job.id, "lora", "queued")]
    assert [(v["name"], v["eval_loss"], v["job_id"]) for v in info["versions"]] == [("tiny-lora", 1.5, job.id)]


def test_length_check_needs_a_model(backend, tmp_path):
    src = write(tmp_path, "qa.jsonl", jsonl(QA))
    with pytest.raises(DatasetError, match="max_seq_length needs a model"):
        operations.add_dataset(src, max_seq_length=8)
    with pytest.raises(DatasetError, match="model 'ghost' does not exist"):
        operations.add_dataset(src, model="ghost")


def test_migration_adds_the_columns_with_defaults_for_old_rows(backend, tmp_path):
    url = backend.db_url
    cfg = alembic_config(url)
    before = ScriptDirectory.from_config(cfg).get_revision("0003").down_revision
    command.downgrade(cfg, before)
    engine = get_engine(url)
    assert "parent_id" not in {c["name"] for c in sa_inspect(engine).get_columns("datasets")}
    with engine.begin() as c:
        c.execute(text("INSERT INTO datasets (name, content_hash, format, file_type, original_name, path, rows, "
                       "dropped_rows, mapping, stats, created_at) VALUES ('old', 'h', 'text', 'jsonl', 'o.jsonl', "
                       "'p', 3, 0, '{}', '{}', CURRENT_TIMESTAMP)"))
    command.upgrade(cfg, "head")
    engine.dispose()
    with session_scope() as db:
        old = db.query(Dataset).one()
        assert (old.split, old.eval_rows, old.source_digest, old.source_path, old.parent_id) == ({}, 0, "", "", None)
    with pytest.raises(DatasetError, match="without keeping its upload"):
        versions.edit_mapping(old.id, format="text")


def assert_nothing_registered(backend) -> None:
    with session_scope() as db:
        assert db.query(Dataset).count() == 0
    store = backend.home_abs / "datasets"
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
