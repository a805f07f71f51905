"""Every version carries its comparison (torch-free, from evaluation rows): vs_parent and vs_base with deltas and
whether each is beyond noise, the forgetting badge in the Versions table, the base as a column of compare, and a
benchmark's questions listed with the failed-only filter."""
import pytest

from models_db import Dataset, session_scope
from studio import benchmarks, evaluations, evidence, versions
from studio.tabs import version_jobs
from studio.tabs import versions as tab
from tests.studio.test_versions import run_cli, studio  # noqa: F401 - the fixture


def _eval(db, dataset_id, metrics, *, version_id=None, base_model_id=None, examples=None):
    evaluations.record(db, version_id, None, {"dataset_id": dataset_id, "split": "train", "rows": 100,
                                              "metrics": metrics, "base_model_id": base_model_id}, examples)


@pytest.fixture
def family(studio):  # noqa: F811
    g1 = studio("g1")
    g2 = studio("g2", parent=g1)
    with session_scope() as db:
        base_id = versions.get(db, g1).base_model_id
        versions.get(db, g1).base_model.architecture = "LlamaForCausalLM"
        mc = Dataset(name="facts-mc", content_hash="mc1", format="multiple_choice", path="datasets/mc/rows.jsonl")
        db.add(mc)
        db.flush()
        assert benchmarks.pin(db, base_id, mc.id)
        arith = versions.get(db, g1).dataset_id
        _eval(db, mc.id, {"acc": 0.5, "acc_stderr": 0.1, "eval_loss": 2.0}, base_model_id=base_id)
        _eval(db, mc.id, {"acc": 0.9, "acc_stderr": 0.05, "eval_loss": 1.0}, version_id=g1)
        _eval(db, mc.id, {"acc": 0.6, "acc_stderr": 0.1, "eval_loss": 1.5}, version_id=g2,
              examples=[{"row": 1, "question": "q1", "target": "A. x", "answer": "A. x", "correct": True},
                        {"row": 2, "question": "q2", "target": "B. y", "answer": "A. x", "correct": False}])
        _eval(db, arith, {"eval_loss": 0.8, "perplexity": 2.2}, version_id=g1)
        _eval(db, arith, {"eval_loss": 0.7, "perplexity": 2.0}, version_id=g2)
    return {"g1": g1, "g2": g2, "base": base_id, "mc": mc.id, "arith": arith}


def test_vs_parent_and_vs_base_with_deltas_and_noise(family):
    out = evidence.comparison(family["g2"])
    parent = out["vs_parent"]
    assert parent["version_id"] == family["g1"] and parent["worse_on_pinned"] == [family["mc"]]
    mc = next(d for d in parent["datasets"] if d["dataset_id"] == family["mc"])
    acc = next(m for m in mc["measures"] if m["key"] == "acc")
    assert acc["delta"] == pytest.approx(-0.3) and acc["stderr"] == pytest.approx((0.05 ** 2 + 0.1 ** 2) ** 0.5)
    assert acc["beyond_noise"] is True and acc["better"] is False and mc["pinned"] is True
    arith = next(d for d in parent["datasets"] if d["dataset_id"] == family["arith"])
    loss = next(m for m in arith["measures"] if m["key"] == "eval_loss")
    assert loss["delta"] == pytest.approx(-0.1) and loss["better"] is True and loss["beyond_noise"] is None
    base = out["vs_base"]  # 0.6 vs 0.5: within noise (0.1 < 2 x 0.141); its own data set not measured on the base
    base_acc = next(m for d in base["datasets"] for m in d["measures"] if m["key"] == "acc")
    assert base_acc["beyond_noise"] is False and base["pending"] == [family["arith"]]
    assert evidence.comparison(family["g1"])["vs_parent"] is None
    assert evidence.forgetting([family["g1"], family["g2"]]) == {family["g2"]: [family["mc"]]}


def test_the_versions_table_badge_compare_with_the_base_and_the_questions(family, capsys):
    df = tab.versions_frame()
    badges = dict(zip(df["id"], df["vs parent"]))
    assert badges[family["g2"]] == f"▼ worse on #{family['mc']}" and not isinstance(badges[family["g1"]], str)
    compared = versions.compare([family["g1"], family["g2"]])
    assert compared["evaluations_base"] == "tiny"
    mc_row = next(r for r in compared["evaluations"] if r["dataset_id"] == family["mc"])
    assert [c["metrics"]["acc"] for c in mc_row["cells"]] == [0.9, 0.6, 0.5]  # g1, g2, the base
    assert "base tiny" in version_jobs.evaluations_html(compared) and "0.6000 ± 0.1000" in \
        version_jobs.evaluations_html(compared)
    assert "vs its parent" in version_jobs.evidence_md(family["g2"]) and "✗ worse" in version_jobs.evidence_md(family["g2"])
    assert len(version_jobs.examples_frame(family["g2"], family["mc"], False)) == 2
    failed = version_jobs.examples_frame(family["g2"], family["mc"], True)
    assert failed.values.tolist() == [[2, "q2", "B. y", "A. x", "✗"]]
    # pinning from the tab: the base's own figures exist already, so nothing is queued
    said = version_jobs.pin_for_base(family["g2"], family["mc"])
    assert said.startswith(f"Data set #{family['mc']} was already pinned") and "job" not in said
    shown = run_cli(capsys, "versions", "show", family["g2"])
    assert shown["vs_parent"]["worse_on_pinned"] == [family["mc"]] and "vs_base" in shown
