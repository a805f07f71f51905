"""Lineage with several parents, on each backend, without torch: the VersionParent rows registration
writes, ancestors and descendants through a combined version, the graph with both parents and their
weights, delete rules for combined children and evaluations, submit-time refusals of combine and
evaluate, the compare view's version x data set table, and the CLI's --json."""
import json

import pytest
from sqlalchemy import select

from models_db import BaseModel, Dataset, Evaluation, Job, ModelVersion, VersionParent, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from studio import cli, combine, evaluations, versions
from studio.jobspec import SpecError


@pytest.fixture
def family(backend):
    """base -> a, b (LoRA r=8 on two data sets); c = combine(a x 0.7, b x 0.3) registered by its job;
    d continued from c, registered by its job; a classifier e. Returns their ids."""
    with session_scope() as db:
        base = BaseModel(name="tiny", path="models/tiny", source="test")
        sums = Dataset(name="sums", content_hash="h1", format="instruction", path="d/1.jsonl", rows=40)
        doubles = Dataset(name="doubles", content_hash="h2", format="chat", path="d/2.jsonl", rows=24)
        labels = Dataset(name="labels", content_hash="h3", format="classification", path="d/3.jsonl", rows=8,
                         stats={"labels": {"no": 4, "yes": 4}})
        db.add_all([base, sums, doubles, labels])
        db.flush()
        ids = {"base": base.id, "sums": sums.id, "doubles": doubles.id, "labels": labels.id}

    def version(name, method="lora", dataset=None, r=8, task="causal_lm", **extra):
        with session_scope() as db:
            v = ModelVersion(name=name, base_model_id=ids["base"], dataset_id=dataset, method=method,
                             config={"task": task, "method_params": {"r": r}, "labels": ["bad", "good"]}, **extra)
            db.add(v)
            db.flush()
            return v.id

    def registered(name, **version_fields):
        """A version registered the way a job's success registers one (models_db.jobs.succeed)."""
        with session_scope() as db:
            job, _ = jobq.create_job(db, kind="combine", config={})
        with session_scope() as db:
            claim = jobq.claim(db, job.id, "w", 60)
            return jobq.succeed(db, claim, result={}, version={
                "name": name, "base_model_id": ids["base"], "method": "lora", "config": {"task": "causal_lm"},
                **version_fields})

    ids["a"] = version("a", dataset=ids["sums"])
    ids["b"] = version("b", dataset=ids["doubles"])
    ids["c"] = registered("c", parent_id=ids["a"], dataset_id=None, parents=[[ids["a"], 0.7], [ids["b"], 0.3]])
    ids["d"] = registered("d", parent_id=ids["c"], dataset_id=ids["sums"])
    ids["e"] = version("e", dataset=ids["labels"], task="seq_cls")
    return ids


def test_registration_writes_every_parent(family):
    f = family
    with session_scope() as db:
        rows = db.scalars(select(VersionParent).order_by(VersionParent.version_id, VersionParent.parent_id)).all()
        assert [(r.version_id, r.parent_id, r.weight) for r in rows] == [
            (f["c"], f["a"], 0.7), (f["c"], f["b"], 0.3), (f["d"], f["c"], 1.0)]  # a continued one has its row too
        assert db.get(ModelVersion, f["c"]).parent_id == f["a"]  # the first parent stays in parent_id
        assert [(p.id, w) for p, w in q.parents(db, f["c"])] == [(f["a"], 0.7), (f["b"], 0.3)]
        assert [v.id for v in q.ancestors(db, f["d"])] == [f["c"], f["a"], f["b"]]
        assert [v.id for v in q.descendants(db, f["b"])] == [f["c"], f["d"]]  # a combined child counts


def test_the_graph_shows_both_parents_with_weights_and_the_data_sets(family):
    f = family
    graph = versions.lineage_mermaid(f["d"])
    assert f'V{f["a"]} -- "x 0.7" --> V{f["c"]}' in graph and f'V{f["b"]} -- "x 0.3" --> V{f["c"]}' in graph
    # a trained version's edge names its objective; a combination's edges their weights
    assert f'V{f["c"]} -- "sft" --> V{f["d"]}' in graph and f'B{f["base"]} -- "sft" --> V{f["a"]}' in graph
    assert f'D{f["sums"]} -.-> V{f["a"]}' in graph and f'D{f["doubles"]} -.-> V{f["b"]}' in graph
    assert f'D{f["sums"]} -.-> V{f["d"]}' in graph
    # seen from a, the combined child's other parent is drawn too
    assert f'V{f["b"]} -- "x 0.3" --> V{f["c"]}' in versions.lineage_mermaid(f["a"])


def test_show_json_lists_parents_with_weights(family, capsys):
    f = family
    cli.main(["versions", "show", str(f["c"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [(p["id"], p["weight"]) for p in out["parents"]] == [(f["a"], 0.7), (f["b"], 0.3)]
    assert [a["id"] for a in out["ancestors"]] == [f["a"], f["b"]]
    assert [d["id"] for d in out["descendants"]] == [f["d"]]


def test_delete_counts_combined_children_and_removes_evaluations(family):
    f = family
    with session_scope() as db:
        db.add_all([Evaluation(version_id=f["c"], dataset_id=f["sums"], rows=10, metrics={"eval_loss": 1.0}),
                    Evaluation(version_id=f["b"], dataset_id=f["doubles"], rows=24, split="train",
                               metrics={"eval_loss": 2.0})])
    with pytest.raises(versions.VersionError, match=rf"version {f['b']} has 2 descendant.*#{f['c']}, #{f['d']}"):
        versions.delete(f["b"])
    plan = versions.delete(f["b"], cascade=True)
    assert plan.ids == [f["d"], f["c"], f["b"]]
    with session_scope() as db:
        assert db.scalars(select(VersionParent)).all() == []
        assert [e.version_id for e in db.scalars(select(Evaluation))] == []
        assert db.get(ModelVersion, f["a"]) is not None


def test_a_job_using_a_parent_blocks_its_delete(family):
    f = family
    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="combine", config={"parents": [f["e"], f["b"]]})
    with pytest.raises(versions.VersionError, match=rf"in use by job {job.id} \(combine"):
        versions.delete(f["e"])


def test_compare_shows_a_version_by_dataset_table(family):
    f = family
    with session_scope() as db:
        db.add_all([Evaluation(version_id=f["a"], dataset_id=f["sums"], rows=10, metrics={"eval_loss": 1.5,
                                                                                          "perplexity": 4.48}),
                    Evaluation(version_id=f["c"], dataset_id=f["sums"], rows=10, metrics={"eval_loss": 1.2,
                                                                                          "perplexity": 3.32}),
                    Evaluation(version_id=f["c"], dataset_id=f["doubles"], rows=24, split="train",
                               metrics={"eval_loss": 2.0, "perplexity": 7.39})])
    compared = versions.compare([f["a"], f["b"], f["c"]])
    table = compared["evaluations"]
    assert [r["dataset_id"] for r in table] == [f["sums"], f["doubles"]]
    sums, doubles = table
    # a last cell for the shared base as it is (not evaluated here)
    assert compared["evaluations_base"] is not None
    assert [c and c["metrics"]["eval_loss"] for c in sums["cells"]] == [1.5, None, 1.2, None]
    assert doubles["cells"][:2] == [None, None] and doubles["cells"][2]["split"] == "train"
    md = evaluations.markdown(table, ["#a", "#b", "#c", "base"])
    assert "| #" in md and "1.2000" in md and "training rows: no eval split" in md


def test_refusals_at_submit(family):
    f = family
    with pytest.raises(SpecError, match="at least 2 different versions"):
        combine.submit_combine([f["a"]])
    with pytest.raises(SpecError, match=r"different tasks \(.*causal_lm.*seq_cls\)"):
        combine.submit_combine([f["a"], f["e"]])
    with pytest.raises(SpecError, match="different starting points"):
        combine.submit_combine([f["a"], f["d"]])  # d was trained on top of c
    with session_scope() as db:
        full = ModelVersion(name="full", base_model_id=f["base"], method="full", config={})
        wide = ModelVersion(name="wide", base_model_id=f["base"], method="lora",
                            config={"task": "causal_lm", "method_params": {"r": 16}})
        db.add_all([full, wide])
        db.flush()
        full_id, wide_id = full.id, wide.id
    with pytest.raises(SpecError, match=rf"version {full_id} was trained with full, which cannot be combined"):
        combine.submit_combine([f["a"], full_id])
    with pytest.raises(SpecError, match=r"ties needs adapters of equal rank, and these differ .*r=8.*r=16"):
        combine.submit_combine([f["a"], wide_id], how="ties")
    with pytest.raises(SpecError, match="2 weight\\(s\\) for 3 versions"):
        combine.submit_combine([f["a"], f["b"], wide_id], weights="1,1", how="cat")
    with pytest.raises(SpecError, match="is classification data, but version .* is a causal_lm model"):
        evaluations.submit_evaluate(f["a"], f["labels"])
    with pytest.raises(SpecError, match="classifies bad, good but dataset .* has the labels no, yes"):
        evaluations.submit_evaluate(f["e"], f["labels"])
    with session_scope() as db:
        assert db.scalars(select(Job).where(Job.kind.in_(("combine", "evaluate")), Job.state == "queued")).all() == []


def test_versions_tab_handlers(family):
    """The tab's module-level handlers: evaluate and combine queue jobs or say why not; the compare view's
    table; the watched job's status."""
    import gradio as gr

    from studio.tabs import version_jobs as tab

    f = family
    with pytest.raises(gr.Error, match="is classification data"):
        tab.start_evaluate(f["a"], f["labels"])
    with pytest.raises(gr.Error, match="Pick the data set"):
        tab.start_evaluate(f["a"], None)
    job_id, msg = tab.start_evaluate(f["a"], f["doubles"])
    assert f"job {job_id}" in msg
    with session_scope() as db:
        assert db.get(Job, job_id).config == {"version_id": f["a"], "dataset_id": f["doubles"]}
    assert tab.job_status(job_id, f["a"])[0].startswith("Queued")
    with pytest.raises(gr.Error, match="Pick 2 or more LoRA versions"):
        tab.start_combine([f["a"]], "", "linear", 0.5, "")
    job_id, msg = tab.start_combine([f["a"], f["b"]], "0.5, 0.5", "ties", 0.3, "mix")
    assert f"#{f['a']} x 0.5 + #{f['b']} x 0.5 with ties" in msg
    with session_scope() as db:
        cfg = db.get(Job, job_id).config
    assert (cfg["parents"], cfg["weights"], cfg["combination"], cfg["density"], cfg["name"]) == (
        [f["a"], f["b"]], [0.5, 0.5], "ties", 0.3, "mix")

    assert "not evaluated" in tab.evaluations_md(f["b"]).lower()
    with session_scope() as db:
        db.add(Evaluation(version_id=f["b"], dataset_id=f["doubles"], rows=24, split="train",
                          metrics={"eval_loss": 2.5, "perplexity": 12.18}))
    assert "12.1800" in tab.evaluations_md(f["b"])
    page = tab.evaluations_html(versions.compare([f["a"], f["b"]]))
    assert "compare-evaluations" in page and "2.5000" in page and "no eval split" in page
    assert "None of these versions was evaluated" in tab.evaluations_html({"versions": [], "evaluations": []})


def test_cli_evaluate_combine_and_compare(family, capsys):
    f = family
    with session_scope() as db:
        db.add(Evaluation(version_id=f["a"], dataset_id=f["sums"], rows=10, metrics={"eval_loss": 1.5,
                                                                                     "perplexity": 4.48}))
    cli.main(["versions", "compare", str(f["a"]), str(f["b"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["evaluations"][0]["dataset_id"] == f["sums"] and out["evaluations"][0]["cells"][1] is None
    cli.main(["versions", "compare", str(f["a"]), str(f["b"])])
    assert "| perplexity ↓ | 4.4800 | — |" in capsys.readouterr().out

    cli.main(["versions", "evaluate", str(f["b"]), "--dataset", str(f["sums"]), "--json"])
    job = json.loads(capsys.readouterr().out)
    assert job["kind"] == "evaluate" and job["state"] == "queued"
    assert job["config"] == {"version_id": f["b"], "dataset_id": f["sums"]}
    cli.main(["versions", "combine", str(f["a"]), str(f["b"]), "--weights", "0.7,0.3", "--how", "dare_linear",
              "--density", "0.4", "--name", "mix", "--json"])
    job = json.loads(capsys.readouterr().out)
    assert job["kind"] == "combine" and job["config"]["weights"] == [0.7, 0.3]
    assert job["config"]["combination"] == "dare_linear" and job["config"]["density"] == 0.4
    with pytest.raises(SystemExit) as exit_:
        cli.main(["versions", "combine", str(f["a"]), str(f["e"]), "--json"])
    assert exit_.value.code == 2
    err = capsys.readouterr()
    assert err.out == "" and "different tasks" in err.err and "Traceback" not in err.err


def test_a_combined_versions_start_is_read_from_its_parents_rows(backend):
    """What a combined version's adapter applies to comes from the lineage rows (its first parent's own start),
    not from a copy in its config: a stale ``start_version_id`` there changes nothing."""
    from worker import lineage

    with session_scope() as db:
        base = BaseModel(name="tiny", path="models/tiny", source="test")
        db.add(base)
        db.flush()
        base_id = base.id

    def registered(name, combination=None, **fields):
        with session_scope() as db:
            job, _ = jobq.create_job(db, kind="combine", config={})
        config = {"task": "causal_lm", **({"combination": combination} if combination is not None else {})}
        with session_scope() as db:
            claim = jobq.claim(db, job.id, "w", 60)
            return jobq.succeed(db, claim, result={}, version={"name": name, "base_model_id": base_id,
                                                               "method": "lora", "config": config, **fields})

    start = registered("s")
    a, b = registered("a", parent_id=start), registered("b", parent_id=start)
    c = registered("c", combination={"combination": "linear", "start_version_id": 9999},
                   parent_id=a, parents=[[a, 0.5], [b, 0.5]])
    d = registered("d", parent_id=c)
    on_base = registered("e", combination={"combination": "linear", "start_version_id": start},
                         parent_id=start, parents=[[start, 0.5], [a, 0.5]])  # rows say: s is on the base
    with session_scope() as db:
        assert combine.start_of(db.get(ModelVersion, c)) == start
        assert combine.start_of(db.get(ModelVersion, d)) == c and combine.start_of(db.get(ModelVersion, a)) == start
        assert [v.id for v in lineage.chain(db, d)] == [start, c, d]
        assert [v.id for v in lineage.chain(db, on_base)] == [on_base]
        assert combine.start_of(db.get(ModelVersion, on_base)) is None
