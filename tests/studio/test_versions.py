"""Model versions without torch: lineage both ways (and its picture), comparison (metrics with
differences, config diff, curves by step and by tokens), delete rules with their artifacts, and
rename / tag / notes, through the service, the Versions tab's handlers and the CLI in-process."""
import json

import gradio as gr
import pytest

from models_db import BaseModel, Dataset, Job, Metric, ModelVersion, session_scope
from studio import cli, operations, versions
from studio.settings import get_settings
from studio.tabs import version_jobs
from studio.tabs import versions as tab

TRAINING = {"learning_rate": 2e-4, "max_steps": 20, "seed": 42, "per_device_train_batch_size": 4}


@pytest.fixture
def studio(backend):
    """A base model and a data set; yields a maker of versions with a finished job, curves and files."""
    with session_scope() as db:
        base = BaseModel(name="tiny", path="models/tiny", source="test")
        data = Dataset(name="arith", content_hash="h1", format="instruction", path="datasets/h1/rows.jsonl")
        db.add_all([base, data])
        db.flush()
        ids = {"base": base.id, "dataset": data.id}

    def make(name, *, parent=None, method="lora", r=8, training=None, metrics=None, steps=10, adapter_bytes=1000):
        training = {**TRAINING, **(training or {})}
        with session_scope() as db:
            job = Job(kind="train", state="succeeded", base_model_id=ids["base"], dataset_id=ids["dataset"],
                      parent_version_id=parent, config={})
            db.add(job)
            db.flush()
            for s in range(1, steps + 1):  # loss falls, 100 tokens a step, an eval every 5 steps
                db.add(Metric(job_id=job.id, step=s, name="loss", value=2.0 / s))
                db.add(Metric(job_id=job.id, step=s, name="tokens_seen", value=100.0 * s))
                if s % 5 == 0:
                    db.add(Metric(job_id=job.id, step=s, name="eval_loss", value=3.0 / s))
            rel = f"versions/job-{job.id}/adapter"
            folder = backend.home_abs / rel
            folder.mkdir(parents=True)
            (folder / "adapter_model.safetensors").write_bytes(b"x" * adapter_bytes)
            ckpt = backend.home_abs / "jobs" / str(job.id) / "checkpoints" / "checkpoint-5"
            ckpt.mkdir(parents=True)
            (ckpt / "STUDIO_COMPLETE").write_text("5")
            v = ModelVersion(name=name, base_model_id=ids["base"], parent_id=parent, dataset_id=ids["dataset"],
                             job_id=job.id, method=method, artifacts={"adapter": rel},
                             config={"model_id": ids["base"], "dataset_id": ids["dataset"], "method": method,
                                     "method_params": {"r": r, "lora_alpha": 16}, "training": training,
                                     "max_seq_length": 512, "base_model": "tiny", "dataset": "arith",
                                     "estimate": {"total_gb": 1.0 + r}},
                             metrics={"train_loss": 0.5, "eval_loss": 0.6, "perplexity": 1.8, "trainable_ratio": 0.01,
                                      "peak_memory_gb": 2.0, "train_seconds": 100.0, "tokens_per_s": 1000.0,
                                      "peak_memory_kind": "cpu_rss", **(metrics or {})})
            db.add(v)
            db.flush()
            job.result = {"version_id": v.id}
            return v.id

    yield make


def run_cli(capsys, *args) -> dict:
    capsys.readouterr()  # only what this command prints
    cli.main([*map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


def test_lineage_three_generations_both_ways(studio, capsys):
    g1 = studio("g1")
    g2 = studio("g2", parent=g1)
    g3 = studio("g3", parent=g2)
    other = studio("g2-sibling", parent=g1)

    with session_scope() as db:
        mid = versions.lineage(db, g2)
        top = versions.lineage(db, g1)
        low = versions.lineage(db, g3)
    assert [a["id"] for a in mid["ancestors"]] == [g1] and [d["id"] for d in mid["descendants"]] == [g3]
    assert [d["id"] for d in top["descendants"]] == [g2, other, g3]  # breadth first: parents before children
    assert top["ancestors"] == [] and low["descendants"] == []
    assert [a["id"] for a in low["ancestors"]] == [g2, g1]

    shown = run_cli(capsys, "versions", "show", g2)
    assert [a["id"] for a in shown["ancestors"]] == [g1]
    assert [(d["id"], d["parent_id"]) for d in shown["descendants"]] == [(g3, g2)]

    text = versions.lineage_mermaid(g2)
    assert text.startswith("```mermaid\nflowchart LR\n") and text.endswith("\n```")
    edges = {line.strip() for line in text.splitlines() if "->" in line}
    assert edges == {f'B1 -- "sft" --> V{g1}', f'V{g1} -- "sft" --> V{g2}', f'V{g2} -- "sft" --> V{g3}', f"D1 -.-> V{g1}",
                     f"D1 -.-> V{g2}", f"D1 -.-> V{g3}"}
    assert f'V{g2}["#{g2} · g2 · lora"]' in text and f"class V{g2} focus" in text
    assert f"V{other}" not in text  # a sibling is neither ancestor nor descendant
    assert "base #1 · tiny" in text and "data set #1 · arith" in text
    assert "Lineage" in tab.version_details(g2) and f"#{g1} → **#{g2}**" in tab.version_details(g2)


def test_compare_metrics_differences_config_diff_and_curves(studio, capsys):
    a = studio("lora-r8", steps=1000)
    b = studio("dora-r16", method="dora", r=16, training={"learning_rate": 1e-4},
               metrics={"eval_loss": 0.45, "peak_memory_gb": 1.5, "tokens_per_s": 1250.0, "trainable_ratio": 0.02},
               adapter_bytes=3 * 2**20)
    with session_scope() as db:  # a resumed attempt logs step 3 again: the later value wins
        db.add(Metric(job_id=db.get(ModelVersion, b).job_id, step=3, attempt=2, name="loss", value=0.123))

    out = versions.compare([a, b])
    assert [v["id"] for v in out["versions"]] == [a, b]
    m = {row["key"]: row for row in out["metrics"]}
    assert m["eval_loss"]["values"] == [0.6, 0.45]
    assert m["eval_loss"]["diff"][1] == pytest.approx(-0.15) and m["eval_loss"]["pct"][1] == pytest.approx(-25)
    assert m["peak_memory_gb"]["diff"][1] == pytest.approx(-0.5)  # memory saved
    assert m["tokens_per_s"]["pct"][1] == pytest.approx(25)  # speed gained
    assert m["trainable_pct"]["values"] == [pytest.approx(1.0), pytest.approx(2.0)]
    assert m["size_mb"]["values"][1] == pytest.approx(3.0, rel=1e-3)
    assert "eval_accuracy" not in m  # measured by neither

    diff = {row["key"]: row["values"] for row in out["config_diff"]}
    assert diff == {"method": ["lora", "dora"], "method_params.r": [8, 16], "training.learning_rate": [2e-4, 1e-4]}

    ca, cb = out["curves"][str(a)], out["curves"][str(b)]
    assert len(ca["loss"]) == versions.MAX_POINTS  # 1000 logged points thinned for display
    assert ca["loss"][0][0] == 1 and ca["loss"][-1][0] == 1000  # ... keeping the first and the last
    assert cb["loss"][2] == [3, 300.0, 0.123]
    assert cb["eval_loss"] == [[5, 500.0, 0.6], [10, 1000.0, 0.3]]  # tokens seen at each eval step

    assert run_cli(capsys, "versions", "compare", a, b)["config_diff"] == out["config_diff"]
    with pytest.raises(versions.VersionError, match="2 to 4"):
        versions.compare([a])
    with pytest.raises(versions.VersionError, match="does not exist"):
        versions.compare([a, 999])

    # the tab: both curves on one chart (by step, then by tokens), differences coloured, only differing keys
    note, metrics_html, config_html, chart = tab.compare_view([a, b], "tokens seen")
    plot = tab.curve_plot(chart)
    assert note == "" and plot.x == "tokens"
    series = {row[-1] for row in plot.value["data"]}
    assert series == {f"#{a} train", f"#{a} eval", f"#{b} train", f"#{b} eval"} == set(plot.color_map)
    assert '<span class="delta good">▼ -0.1500, -25.0%' in metrics_html  # lower eval loss is better
    assert '<span class="delta good">▲ +250, +25.0%' in metrics_html  # more tokens/s is better
    assert "training.learning_rate" in config_html and "training.seed" not in config_html
    assert tab.compare_view([a], "step")[-1] is None and tab.curve_plot(None) is None


def test_delete_refused_with_a_child_or_a_running_job_and_cascade_removes_artifacts(studio, backend, capsys):
    parent = studio("parent")
    child = studio("child", parent=parent)
    keep = studio("unrelated")
    home = backend.home_abs
    with session_scope() as db:
        folders = {v.id: home / v.artifacts["adapter"] for v in db.query(ModelVersion)}
        ckpts = {v.id: home / "jobs" / str(v.job_id) / "checkpoints" for v in db.query(ModelVersion)}
        export = Job(kind="export", state="running", config={"version_id": child, "merged": True})
        db.add(export)
        db.flush()
        export_id = export.id
        db.add(Job(kind="train", state="failed", parent_version_id=parent, config={"parent_version_id": parent}))
    zip_path = home / "exports" / f"version-{child}-merged.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(b"zip")

    with pytest.raises(versions.VersionError, match=rf"descendant version\(s\) \(#{child}\).*--cascade"):
        versions.delete(parent)
    with pytest.raises(gr.Error, match="also delete its descendants"):  # the tab says the same
        tab.ask_delete(parent, False)
    with pytest.raises(versions.VersionError, match=f"in use by job {export_id} \\(export, running\\)"):
        versions.delete(parent, cascade=True)
    assert all(f.exists() for f in folders.values()) and zip_path.exists()  # a refusal removes nothing

    with session_scope() as db:
        db.get(Job, export_id).state = "succeeded"
    msg, box, pending = tab.ask_delete(parent, True)
    assert f"#{parent}" in msg and f"#{child}" in msg and box.visible and pending == {"id": parent, "cascade": True}
    table, picker, compared, box, pending = tab.confirm_delete(pending, [child, keep])
    assert list(table["id"]) == [keep] and picker.value == keep and compared.value == [keep]

    with session_scope() as db:
        assert {v.id for v in db.query(ModelVersion)} == {keep}
        assert db.query(Job).filter(Job.parent_version_id.is_not(None)).count() == 0  # history kept, unlinked
    for vid in (parent, child):
        assert not folders[vid].exists() and not folders[vid].parent.exists() and not ckpts[vid].exists()
    assert not zip_path.exists()
    assert folders[keep].exists() and ckpts[keep].exists()

    gone = run_cli(capsys, "versions", "delete", keep)
    assert gone["deleted"] == [keep] and not folders[keep].exists()
    with pytest.raises(SystemExit):
        cli.main(["versions", "delete", str(keep)])
    assert "does not exist" in capsys.readouterr().err


def test_rename_tag_and_notes(studio, capsys):
    v = studio("first")
    studio("second", metrics={"eval_accuracy": None})
    versions.update(v, name="  baseline ", tags="best, prod,best", notes="Trained on the\nfirst split.")
    with session_scope() as db:
        row = db.get(ModelVersion, v)
        assert (row.name, row.tags, row.notes) == ("baseline", ["best", "prod"], "Trained on the\nfirst split.")
        assert operations.version_json(row)["tags"] == ["best", "prod"]

    for bad, why in (("has space", "no spaces"), (",".join(f"t{i}" for i in range(11)), "at most 10")):
        with pytest.raises(versions.VersionError, match=why):
            versions.update(v, tags=bad)
    with pytest.raises(versions.VersionError, match="1 to 200"):
        versions.update(v, name="   ")

    df = tab.versions_frame()
    assert list(df["name"]) == ["second", "baseline"] and df.loc[df["id"] == v, "tags"].item() == "best, prod"
    assert df["eval loss"].dtype.kind == "f" and "accuracy" not in df.columns  # numeric, empty measures dropped

    table, picker = tab.save_version(v, "renamed", "", "")
    assert table.loc[table["id"] == v, "name"].item() == "renamed" and picker.value == v
    assert run_cli(capsys, "versions", "edit", v, "--tags", "a,b")["tags"] == ["a", "b"]
    with pytest.raises(gr.Error, match="no spaces"):
        tab.save_version(v, "renamed", "not ok", "")


def test_a_zip_built_before_is_offered_at_once_when_the_version_is_reopened(backend):
    zips = backend.home_abs / "exports"
    zips.mkdir(parents=True, exist_ok=True)
    (zips / "v1-merged.zip").write_bytes(b"PK")
    with session_scope() as db:
        db.add(Job(kind="export", state="succeeded", config={"version_id": 1, "format": "merged", "merged": True},
                   result={"zip": "exports/v1-merged.zip"}))
        db.add(Job(kind="export", state="failed", config={"version_id": 1, "format": "onnx", "merged": True}))
    job_id, _msg, _download = tab.known_export(1, "merged")
    assert job_id == 1
    message, download = tab.export_status(job_id)
    assert message.startswith("Ready: `v1-merged.zip`") and download.visible
    assert tab.known_export(1, "onnx")[0] is None and tab.known_export(2, "merged")[0] is None
    (zips / "v1-merged.zip").unlink()  # deleted since: nothing to offer
    assert tab.known_export(1, "merged")[0] is None
    # another version opened shows nothing of the previous one's zip: an empty line, the button hidden
    job_id, message, download = tab.known_export(2, "merged")
    assert (job_id, message, download.visible) == (None, "", False)
    with session_scope() as db:  # one still building is shown where it is, not forgotten on reopening
        db.add(Job(kind="export", state="queued", config={"version_id": 2, "format": "merged", "merged": True}))
    assert tab.known_export(2, "merged")[0] == 3


def test_opening_another_version_looks_up_its_own_zip():
    # The lookup ran only when the format changed: from one mergeable version to the next the format stays
    # "merged", so the previous version's "Ready" line and Download button stayed under the new version.
    from studio.tab_state import Shell

    with gr.Blocks() as demo:
        with gr.Tabs() as tabs, gr.Tab("Versions"):
            tab.render(Shell(tabs=tabs, job_id=gr.State(None)))
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "version-picker")
    fns = list(demo.fns.values())

    def after_picking(fn) -> bool:  # triggered by the picker's change, directly or through .then
        while fn.trigger_after is not None:
            fn = demo.fns[fn.trigger_after]
        return (picker._id, "change") in fn.targets

    lookups = [f for f in fns if f.fn is tab.known_export]
    assert any(after_picking(f) for f in lookups)
    download = next(f for f in lookups if after_picking(f)).outputs
    assert {getattr(o, "elem_id", None) for o in download} >= {"export-status", "download-zip"}


def test_a_queued_export_says_what_it_waits_behind_and_when_that_ends(backend):
    from datetime import timedelta

    from models_db.schema import utcnow

    with session_scope() as db:
        db.add(Job(kind="train", state="running", queue="gpu", config={"method": "lora"}, step=10, max_steps=40,
                   started_at=utcnow() - timedelta(seconds=100)))
        db.add(Job(kind="export", state="queued", queue="gpu", config={"version_id": 1, "format": "merged"}))
        db.add(Job(kind="evaluate", state="queued", queue="other", config={}))
    why = operations.waiting_for(2)
    assert why.startswith("waiting behind job #1 (training lora, about 5 min left)"), why
    assert operations.waiting_for(3) == "waiting for a worker to take it"
    assert operations.waiting_for(1) == ""  # running: nothing to wait for
    message, _ = tab.export_status(2)
    assert message.startswith("Queued: waiting behind job #1 (training lora")
    with session_scope() as db:  # an evaluation on the Versions tab says the same
        db.get(Job, 3).queue = "gpu"
    message, _ = version_jobs.job_status(3, 1)
    assert message.startswith("Queued: waiting behind job #1 (training lora") and "1 queued job before it" in message


def test_the_cli_waiting_on_a_queued_job_says_what_it_waits_behind(backend, capsys, monkeypatch):
    # `studio versions evaluate --wait` drew "queued: " and nothing else until the training job ahead ended
    from datetime import timedelta

    from models_db.schema import utcnow
    from studio.cli import common

    with session_scope() as db:
        db.add(Job(kind="train", state="running", queue="gpu", config={"method": "lora"}, step=10, max_steps=40,
                   started_at=utcnow() - timedelta(seconds=100)))
        db.add(Job(kind="evaluate", state="queued", queue="gpu", config={}))

    def the_training_ends(_seconds):
        with session_scope() as db:
            db.get(Job, 1).state, db.get(Job, 2).state = "succeeded", "succeeded"
    monkeypatch.setattr(common.time, "sleep", the_training_ends)
    assert common.wait_for(2).state == "succeeded"
    assert "queued: waiting behind job #1 (training lora, about 5 min left)" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)  # the side lane is embedded mode's
def test_embedded_side_jobs_run_beside_a_busy_training_worker(backend):
    from models_db import Worker
    from studio import routing

    with session_scope() as db:
        db.add(Worker(id="h-1", host="h", queues=routing.default_queue(), current_job_id=7))
        db.add(Worker(id="h-2", host="h", queues=get_settings().interactive_queue))
    with session_scope() as db:
        queue, where = routing.side_queue(db, fits_beside=True)
        assert queue == get_settings().interactive_queue and where == (
            "runs on the interactive worker, beside training job #7")
        assert routing.side_queue(db, fits_beside=False)[0] == routing.default_queue()  # not enough memory
    with session_scope() as db:
        db.get(Worker, "h-1").current_job_id = None  # the training worker is free: the usual queue
    with session_scope() as db:
        assert routing.side_queue(db, fits_beside=True) == (routing.default_queue(), "")


def test_a_versions_tokens_per_s_is_the_figure_the_jobs_tab_shows_once_finished(studio):
    # the version showed the whole run's tokens/s (evaluation and checkpoints included) under a bare "tokens/s",
    # while the finished job showed its training steps' average: two numbers for one run
    v = studio("a", metrics={"train_tokens_per_s": 1500.0, "tokens_per_s": 900.0})
    with session_scope() as db:
        record = versions.get(db, v)
        assert versions.stats(record)["tokens_per_s"] == 1500.0
        assert "tokens/s (run average) **1500**" in tab._key_metrics(record)
    old = studio("b")  # recorded before the training-steps figure existed: its whole-run figure stays
    with session_scope() as db:
        assert versions.stats(versions.get(db, old))["tokens_per_s"] == 1000.0
