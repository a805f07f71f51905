"""The live chart's rows: the eval curve has a place in the legend before its first point arrives."""
import math

from studio.tabs.jobs import curve_frame


def pt(step, name, value, attempt=1):
    return {"step": step, "name": name, "value": value, "attempt": attempt}


def test_an_expected_eval_curve_is_in_the_first_frame_as_a_blank_row():
    frame = curve_frame([pt(1, "loss", 2.0), pt(2, "loss", 1.5)], ("loss", "eval_loss"))
    assert set(frame["series"]) == {"loss", "eval_loss"}
    blank = frame[frame["series"] == "eval_loss"]
    assert len(blank) == 1 and math.isnan(blank["value"].iloc[0])
    # once real eval points exist the blank row is gone
    frame = curve_frame([pt(1, "loss", 2.0), pt(5, "eval_loss", 1.8)], ("loss", "eval_loss"))
    assert not frame["value"].isna().any()


def test_no_points_give_an_empty_frame_and_a_retry_point_wins():
    assert curve_frame([], ("loss", "eval_loss")).empty
    frame = curve_frame([pt(3, "loss", 9.0, attempt=1), pt(3, "loss", 1.0, attempt=2)])
    assert frame["value"].tolist() == [1.0]


# --- every kind of job, each with the page that fits it -----------------------------------------------
def _job(kind: str, config: dict, *, state: str = "queued", result: dict | None = None, dataset_id=None) -> int:
    from datetime import timedelta

    from sqlalchemy import update

    from models_db import Job, session_scope
    from models_db import jobs as jobq
    from models_db.schema import utcnow

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind=kind, config=config, dataset_id=dataset_id)
        if state != "queued":
            now = utcnow()
            db.execute(update(Job).where(Job.id == job.id).values(
                state=state, result=result, attempt=1, started_at=now - timedelta(seconds=75),
                finished_at=now if state != "running" else None))
        return job.id


def _kinds(backend):
    from studio.settings import get_settings

    ids = {
        "train": _job("train", {"method": "lora"}),
        "export": _job("export", {"version_id": 4, "format": "merged", "merged": True}, state="succeeded",
                       result={"zip": "exports/version-4-merged.zip", "version_id": 4, "format": "merged",
                               "merged": True, "ms_per_token": 12.5}),
        "evaluate": _job("evaluate", {"version_id": 4, "dataset_id": 2}, state="succeeded",
                         result={"evaluations": [{"version_id": 4, "dataset_id": 2, "split": "eval", "rows": 8,
                                                  "metrics": {"eval_loss": 1.23456, "perplexity": 3.437}}]}),
        "combine": _job("combine", {"parents": [4, 5], "weights": [0.7, 0.3], "combination": "ties"},
                        state="running"),
    }
    log = get_settings().home_abs / "jobs" / str(ids["export"]) / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("merging the adapter into the base\nzipping\n")
    return ids


def test_the_picker_lists_every_kind_of_job_with_its_kind(backend):
    from studio.tabs import jobs

    ids = _kinds(backend)
    labels = {v: k for k, v in jobs.job_choices()}
    assert labels[ids["train"]].startswith(f"#{ids['train']} train · lora · ")
    assert labels[ids["export"]].startswith(f"#{ids['export']} export · version #4 as merged · ")
    assert labels[ids["evaluate"]].startswith(f"#{ids['evaluate']} evaluate · version #4 on data set #2 · ")
    assert labels[ids["combine"]].startswith(f"#{ids['combine']} combine · ties of #4 × 0.7 + #5 × 0.3 · ")
    assert jobs.default_job(None) == ids["combine"]  # the running one, though it does not train
    queue = {row[1]: row[2] for row in jobs.queue_rows()}
    assert queue == {ids["combine"]: "combine · ties of #4 × 0.7 + #5 × 0.3", ids["train"]: "train · lora"}


def test_an_export_shows_its_log_and_result_and_no_loss_chart(backend):
    import pandas as pd

    from studio.tabs import jobs

    ids = _kinds(backend)
    status, plot, system, log, *_ = jobs.poll(ids["export"], None)
    assert f"Job #{ids['export']} · export: version #4 as merged" in status
    assert ("The merged export of version #4 is ready to download on the Versions tab: "
            "<code>exports/version-4-merged.zip</code> · 12.5 ms/token") in status
    assert "train loss" not in status and "learning rate" not in status and "ETA" not in status
    assert ">took<" in status and "1m 15s" in status
    assert not isinstance(plot, pd.DataFrame) and not isinstance(system, pd.DataFrame)
    assert log == "lines 1–2 of log.txt\n1 │ merging the adapter into the base\n2 │ zipping"
    loss_chart, system_chart = jobs.layout(ids["export"])
    assert (loss_chart.visible, system_chart.visible) == (False, False)
    loss_chart, system_chart = jobs.layout(ids["train"])
    assert (loss_chart.visible, system_chart.visible) == (False, False)  # no points yet: no blank boxes
    assert "train loss" in jobs.poll(ids["train"], None)[0]  # a training job keeps its training cards


def test_an_evaluation_and_a_combination_show_what_they_measured(backend):
    from studio.tabs import jobs

    ids = _kinds(backend)
    status = jobs.poll(ids["evaluate"], None)[0]
    assert "data set #2 (eval, 8 rows): eval_loss 1.235 · perplexity 3.437" in status
    status = jobs.poll(ids["combine"], None)[0]
    assert "combine: ties of #4 × 0.7 + #5 × 0.3" in status and ">running for<" in status
    assert "job-done" not in status  # no result while it runs
    assert jobs.poll(ids["combine"], None)[3] == "(no log yet: the job has not started)"


def test_a_training_jobs_charts_appear_with_their_first_points(backend):
    """A chart without points is a large blank box: the job page shows each chart once it has points,
    on selection when they exist, else right after the tick that draws the first ones."""
    import gradio as gr

    from models_db import Metric, session_scope
    from models_db import jobs as jobq
    from studio.tabs import jobs

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={"method": "lora", "eval_split": 0.0})
        job_id = job.id
    assert [c.visible for c in jobs.layout(job_id)] == [False, False]
    *_, cache = jobs.poll(job_id, None)
    loss, system, cache = jobs.reveal(job_id, cache)
    assert loss is gr.skip() or not isinstance(loss, gr.LinePlot)  # still nothing to show
    assert not isinstance(system, gr.LinePlot)

    with session_scope() as db:
        db.add_all([Metric(job_id=job_id, step=1, name="loss", value=2.0),
                    Metric(job_id=job_id, step=2, name="loss", value=1.5)])
    *_, cache = jobs.poll(job_id, cache)
    loss, system, cache = jobs.reveal(job_id, cache)
    assert isinstance(loss, gr.LinePlot) and loss.visible and not isinstance(system, gr.LinePlot)
    loss, _, cache = jobs.reveal(job_id, cache)
    assert not isinstance(loss, gr.LinePlot)  # shown once, not re-sent on every tick

    with session_scope() as db:
        db.add(Metric(job_id=job_id, step=2, name="sys_cpu_pct", value=40.0))
    *_, cache = jobs.poll(job_id, cache)
    _, system, cache = jobs.reveal(job_id, cache)
    assert isinstance(system, gr.LinePlot) and system.visible
    assert [c.visible for c in jobs.layout(job_id)] == [True, True]  # selected again later: shown at once


def test_cancel_is_offered_only_for_queued_or_running_jobs(backend):
    from models_db import Job, session_scope
    from studio.tabs import jobs as tab

    with session_scope() as db:
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            db.add(Job(kind="train", state=state, config={}))
    assert [tab.cancel_button(i).interactive for i in range(1, 6)] == [True, True, False, False, False]
    assert tab.cancel_button(None).interactive is False and tab.cancel_button(99).interactive is False


def test_tokens_per_s_is_the_runs_average_once_finished_as_its_version_records_it(backend):
    from models_db import Job
    from studio.tabs.job_views import status_html

    running = Job(id=1, kind="train", state="running", config={"method": "lora"}, step=5, max_steps=10)
    assert "tokens/s</div><div class=\"v\">1,234" in status_html(running, {"tokens_per_s": 1234.0})
    done = Job(id=2, kind="train", state="succeeded", config={"method": "lora"}, step=10, max_steps=10,
               result={"metrics": {"train_tokens_per_s": 1500.0, "tokens_per_s": 900.0}})
    html = status_html(done, {"tokens_per_s": 1234.0})
    assert "tokens/s (run average)</div><div class=\"v\">1,500" in html


def test_the_log_tail_is_numbered_as_log_txt_in_one_right_aligned_column(backend, monkeypatch):
    """The code box's gutter counted the tail from 1: "line 1042" of log.txt could not be found. Each shown
    line carries its number in the file, in a column of one width (99 and 100 line up)."""
    from studio.settings import get_settings
    from studio.tabs import jobs

    log = get_settings().home_abs / "jobs" / "7" / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {n}\n" for n in range(1, 131)))
    head, *shown = jobs.log_tail(7, lines=40).split("\n")
    assert head == "lines 91–130 of log.txt"  # the code box strips leading spaces: the text never starts with one
    assert shown[0] == " 91 │ line 91" and shown[9] == "100 │ line 100" and shown[-1] == "130 │ line 130"
    assert len({row.index("│") for row in shown}) == 1  # one column: the numbers line up

    # a long log: only its end is read, counted once, then only what was appended since
    monkeypatch.setattr(jobs, "TAIL_BYTES", 64)
    counted: dict = {}
    with open(log, "a") as f:
        f.write("".join(f"line {n}\n" for n in range(131, 1043)) + "10%\r55%\r100% done\r\n")
    assert jobs.log_tail(7, lines=3, counted=counted).split("\n")[1:] == [
        "1041 │ line 1041", "1042 │ line 1042", "1043 │ 100% done"]  # a progress bar shows its last state
    at = counted["at"]
    with open(log, "a") as f:
        f.write("still going")  # a line being written: shown, with its number
    assert jobs.log_tail(7, lines=2, counted=counted).split("\n")[1:] == ["1043 │ 100% done", "1044 │ still going"]
    assert counted["at"] > at
    log.write_text("a fresh log\n")  # replaced (shorter): counted afresh, never negative or stale
    assert jobs.log_tail(7, counted=counted) == "lines 1–1 of log.txt\n1 │ a fresh log"


def test_a_preference_job_charts_its_objective_figures_and_an_sft_job_has_no_such_chart(backend):
    """DPO's own figures (rewards, margins, reward accuracy, and their held-out twins) get a chart of their own
    beside the loss; an SFT job, an export, or a preference job before its first point shows none."""
    import gradio as gr

    from models_db import Metric, session_scope
    from models_db import jobs as jobq
    from studio.tabs import jobs

    with session_scope() as db:
        dpo, _ = jobq.create_job(db, kind="train", config={"method": "lora", "objective": "dpo", "eval_split": 0.2})
        sft, _ = jobq.create_job(db, kind="train", config={"method": "lora", "objective": "sft", "eval_split": 0.0})
        old, _ = jobq.create_job(db, kind="train", config={"method": "lora", "task": "causal_lm"})
        ids = dpo.id, sft.id, old.id
    chart, cache = jobs.objective_poll(ids[0], None)
    assert chart.visible is False  # no points yet: no blank box
    assert cache["names"][:4] == ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    assert "eval_rewards/accuracies" in cache["names"]
    with session_scope() as db:
        db.add_all([Metric(job_id=ids[0], step=s, name=n, value=v) for s, n, v in
                    ((1, "loss", 0.69), (1, "rewards/margins", 0.01), (1, "rewards/accuracies", 0.5),
                     (2, "rewards/margins", 0.3), (2, "eval_rewards/accuracies", 0.75))])
    chart, cache = jobs.objective_poll(ids[0], cache)
    assert isinstance(chart, gr.LinePlot) and chart.visible
    drawn = {row[-1] for row in chart.value["data"]}
    assert {"rewards/margins", "rewards/accuracies", "eval_rewards/accuracies"} <= drawn and "loss" not in drawn
    assert chart.color_map["rewards/margins"] != chart.color_map["rewards/accuracies"]
    assert jobs.objective_poll(ids[0], cache)[0] == gr.skip()  # nothing new: nothing re-sent
    for job_id in ids[1:]:  # SFT, and a job stored before objectives existed: no objective chart
        chart, cache = jobs.objective_poll(job_id, None)
        assert chart.visible is False and cache["names"] == ()
