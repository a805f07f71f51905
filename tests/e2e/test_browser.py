"""A person's path in a real browser: upload, train, watch the curve draw, get the version, download."""
import json
import re
import zipfile

from playwright.sync_api import expect

from tests.cli import wait_until, write_instruction_jsonl
from tests.e2e.conftest import SHOTS


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_upload_train_watch_download(studio, page, tmp_path):
    url, cli = studio
    page.goto(url)
    page.get_by_text("FineTune Studio").first.wait_for()

    # Datasets: upload, see the report and the preview, name it, register
    data = tmp_path / "arith.jsonl"
    write_instruction_jsonl(data, 40)
    page.locator("#dataset-upload input[type=file]").set_input_files(str(data))
    page.get_by_text("40 usable").wait_for(timeout=30_000)
    page.locator("#dataset-name input, #dataset-name textarea").first.fill("arith")
    page.locator("#dataset-drop-bad input").check()
    page.locator("#register-dataset").click()
    page.locator("#dataset-status").get_by_text("Registered data set").wait_for(timeout=30_000)
    shot(page, "1-datasets")

    # The next file starts from a clean form: no old name, no "drop the bad rows" tick, no old status line
    page.locator("#dataset-upload button[aria-label='Clear']").first.click()
    other = tmp_path / "other.jsonl"
    write_instruction_jsonl(other, 24)
    page.locator("#dataset-upload input[type=file]").set_input_files(str(other))
    page.get_by_text("24 usable").wait_for(timeout=30_000)
    expect(page.locator("#dataset-name input, #dataset-name textarea").first).to_have_value("")
    expect(page.locator("#dataset-drop-bad input")).not_to_be_checked()
    expect(page.locator("#dataset-status")).not_to_contain_text("Registered")
    shot(page, "1a-datasets-next-file")
    page.locator("#register-dataset").click()
    page.locator("#dataset-status").get_by_text("#2 other").wait_for(timeout=30_000)

    # Advisor: advice for data set #1 (not the newest); the tree is drawn with the path taken, every
    # method's memory is estimated, and its settings fill the Train form for that same data set
    open_tab(page, "Advisor")
    page.locator("#adv-dataset input").click()
    page.get_by_role("option", name=re.compile(r"^#1 arith")).click()
    expect(page.locator("#adv-dataset input")).to_have_value(re.compile(r"^#1 arith"))
    page.locator("#adv-run").click()
    expect(page.locator("#adv-summary h3").first).to_contain_text("Recommended", timeout=30_000)
    expect(page.locator("#adv-tree svg .chosen").first).to_be_attached(timeout=30_000)
    expect(page.locator("#adv-memory")).to_contain_text("lora", timeout=10_000)
    shot(page, "1b-advisor")
    page.locator("#adv-use").click()

    # Train: opened by the button, with the advice's model, data set #1 and method, and says so
    expect(page.locator("#train-filled")).to_contain_text("Filled from the advice for data set #1", timeout=30_000)
    expect(page.locator("#train-dataset input")).to_have_value(re.compile(r"^#1 arith"), timeout=15_000)
    expect(page.locator("#train-cost")).to_contain_text("parameters train", timeout=30_000)
    page.wait_for_timeout(1500)  # the tab's own refresh on opening has run: it must not have changed the pick
    expect(page.locator("#train-dataset input")).to_have_value(re.compile(r"^#1 arith"))
    shot(page, "1c-train-filled-from-advice")
    page.locator("#train-method input").click()
    page.get_by_role("option", name="lora", exact=True).click()
    expect(page.locator("#train-method input")).to_have_value("lora")
    # packed batches make a tiny step take milliseconds: enough steps that the page sees the job mid-run
    for key, value in {"max_steps": "400", "learning_rate": "0.002", "per_device_train_batch_size": "8",
                       "eval_split": "0.1", "eval_steps": "100", "max_seq_length": "64"}.items():
        field = page.locator(f"#t-{key} input").first
        field.fill(value)
        field.press("Tab")
    shot(page, "2-train")
    page.locator("#start-training").click()

    # Jobs: the tab opens on the new job; the curve draws while it runs; it succeeds
    page.locator("#job-status").get_by_text("Job #1").wait_for(timeout=30_000)
    page.locator("#job-status").get_by_text("running").wait_for(timeout=60_000)
    # live metrics reach the page while the job runs, and the chart's legend names both series
    expect(page.locator("#job-status")).to_contain_text(re.compile(r"step (?!400 )[1-9]\d{0,2} / 400"), timeout=90_000)
    expect(page.locator("#job-status")).to_contain_text(re.compile(r"train loss\s*\d+\.\d{4}", re.I), timeout=30_000)
    expect(page.locator("#loss-curve")).to_contain_text("eval_loss", timeout=30_000)
    shot(page, "3-job-running")
    # The person closes the page while the job trains (its charts would share the two cores with the job);
    # the job goes on without it, and reopening the studio loses nothing: the page opens on the Jobs tab
    # (this browser remembers it) and shows the finished job with its curves
    page.goto("about:blank")
    job = wait_until(lambda: (j := cli.json("jobs", "show", "1"))["state"] in ("succeeded", "failed") and j,
                     timeout=240, every=2)
    assert job["state"] == "succeeded" and job["version_id"] == 1
    page.goto(url)
    expect(page.get_by_role("tab", name="Jobs")).to_have_attribute("aria-selected", "true", timeout=30_000)
    # it opens on the newest job (the new version's own evaluation, queued when the training succeeded)
    page.locator("#job-status").get_by_text("succeeded").wait_for(timeout=30_000)
    page.locator("#job-picker input").click()
    page.get_by_role("option", name=re.compile(r"^#1 train")).click()
    page.locator("#job-status").get_by_text("Job #1").wait_for(timeout=30_000)
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=30_000)
    expect(page.locator("#loss-curve")).to_contain_text("eval_loss", timeout=30_000)
    page.wait_for_timeout(2000)  # one more poll so the last points are drawn
    shot(page, "4-job-done")

    # Versions: the version with its metrics; build and download the merged zip
    open_tab(page, "Versions")
    page.locator("#version-details").get_by_text("Lineage:").wait_for(timeout=30_000)
    page.locator("#export-build").click()  # the format picker defaults to merged for a mergeable method
    page.locator("#download-zip").wait_for(state="visible", timeout=180_000)
    shot(page, "5-models")
    with page.expect_download() as dl:
        page.locator("#download-zip").click()
    path = tmp_path / "merged.zip"
    dl.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(names)
    meta = json.loads(zipfile.ZipFile(path).read("studio_version.json"))
    assert meta["method"] == "lora" and meta["version_id"] == 1


def _two_versions(cli, tmp_path) -> list[int]:
    """Versions 1 and 2 of the tiny model (trained here unless an earlier test left them)."""
    have = [v["id"] for v in cli.json("versions", "list")["versions"]]
    if len(have) < 2:
        data = tmp_path / "pairs.jsonl"
        write_instruction_jsonl(data, 40)
        ds = cli.json("dataset", "add", str(data), "--eval-split", "0.1")["dataset"]["id"]
        for method in ("lora", "dora")[: 2 - len(have)]:
            cli.json("train", "--model", "tiny-llama", "--dataset", str(ds), "--method", method, "--set", "max_steps=4",
                     "--set", "per_device_train_batch_size=8", "--set", "max_seq_length=64", "--wait", timeout=600)
        have = [v["id"] for v in cli.json("versions", "list")["versions"]]
    return sorted(have)[:2]


def test_versions_compare_side_by_side_and_playground(studio, page, tmp_path):
    url, cli = studio
    a, b = _two_versions(cli, tmp_path)
    page.goto(url)
    page.get_by_text("FineTune Studio").first.wait_for()

    # Versions: the table, then two versions compared, then the same prompts through both
    open_tab(page, "Versions")
    expect(page.locator("#versions-table")).to_contain_text("lora", timeout=30_000)
    page.locator("#version-details").get_by_text("Lineage:").wait_for(timeout=30_000)
    expect(page.locator("#version-lineage svg").first).to_be_visible(timeout=30_000)  # the picture is drawn
    shot(page, "6-versions")
    picker = page.locator("#compare-picker input")
    for vid in (a, b):
        picker.click()
        page.get_by_role("option", name=re.compile(rf"^#{vid} ")).click()
    expect(page.locator("#compare-metrics table.cmp").first).to_contain_text(f"#{b}", timeout=30_000)
    page.locator("#sbs-n input").fill("2")
    page.locator("#sbs-sample").click()
    expect(page.locator("#sbs-note")).to_contain_text("eval split", timeout=30_000)
    page.locator("#sbs-max-new input").fill("12")
    page.locator("#sbs-base input").check()
    page.locator("#sbs-run").click()
    # the interactive worker streams every cell in: 2 prompts x (2 versions + base)
    expect(page.locator("#sbs-grid-box")).to_contain_text("6/6 outputs", timeout=180_000)
    expect(page.locator("#sbs-grid-box")).to_contain_text("ms/token")
    page.locator("#sbs-section").scroll_into_view_if_needed()
    shot(page, "7-compare-side-by-side")
    # the latency now reaches the comparison's metrics table
    picker.click()
    page.keyboard.press("Backspace")  # drop the second version, then pick it again: the view recomputes
    picker.click()
    page.get_by_role("option", name=re.compile(rf"^#{b} ")).click()
    expect(page.locator("#compare-metrics table.cmp").first).to_contain_text("latency (ms/token)", timeout=30_000)

    # Playground: one reply streamed from a version, with its latency
    open_tab(page, "Playground")
    model = page.locator("#playground-model input")
    model.click()
    page.get_by_role("option", name=re.compile(rf"^#{a} ")).click()
    page.locator("#playground-max-new input[type=number]").fill("24")
    page.locator("#playground-message textarea").fill("What is 3 plus 1?")
    page.locator("#playground-send").click()
    expect(page.locator("#playground-stats")).to_contain_text("ms/token", timeout=120_000)
    expect(page.locator("#playground-chat")).to_contain_text("What is 3 plus 1?")
    shot(page, "8-playground")
    rows = cli.json("versions", "generate", str(a), "--prompt", "What is 3 plus 1?", "--max-new-tokens", "4")
    assert rows["generations"][0]["state"] == "done" and rows["generations"][0]["ms_per_token"] > 0


def test_fleet_tab_shows_the_embedded_worker(studio, page):
    url, cli = studio
    workers = wait_until(lambda: [w for w in cli.json("workers", "list")["workers"] if w["alive"]], timeout=60)
    page.goto(url)
    page.get_by_text("FineTune Studio").first.wait_for()
    open_tab(page, "Fleet")
    expect(page.locator("#fleet-summary")).to_contain_text("registered workers alive", timeout=30_000)
    expect(page.locator("#fleet-workers")).to_contain_text("alive", timeout=10_000)
    expect(page.locator("#fleet-workers")).to_contain_text("CPU only")
    expect(page.locator("#fleet-workers")).to_contain_text(workers[0]["host"])
    shot(page, "9-fleet")


# --- short curves and the log, as the Jobs and Versions tabs draw them ----------------------------------
VISIBLE_LABELS = """(el, axis) => Array.from(el.querySelectorAll('.role-axis')).filter(a =>
    (a.getAttribute('aria-label') || '').startsWith(axis)).flatMap(a => Array.from(
    a.querySelectorAll('.role-axis-label text'))).filter(t => t.getAttribute('opacity') !== '0'
    && getComputedStyle(t).opacity !== '0').map(t => t.textContent)"""


def _curve(n: int, first: float = 2.0):
    import pandas as pd

    return pd.DataFrame({"step": range(1, n + 1), "value": [first / s for s in range(1, n + 1)], "series": "loss"})


def _digits(label: str) -> int:
    """Significant digits of a tick label ("0.0000115" has 3, "2.345679" has 7)."""
    return len(label.replace(",", "").replace(".", "").lstrip("-0").rstrip("0"))


def _charts_app(log_dir):
    """A page with the Jobs tab's loss chart for runs of 1, 2 and 30 steps (one of them a tiny loss), the
    Versions tab's comparison of one-point curves, and the Jobs tab's log box over a log crossing line 100."""
    import gradio as gr

    from studio.tabs import jobs, versions

    one_point = {"axis": "step", "versions": [{"id": 1}, {"id": 2}],
                 "curves": {"1": {"loss": [[1, 64, 2.3456789]]}, "2": {"loss": [[1, 64, 2.3456789]]}}}
    with gr.Blocks() as demo:
        for name, df in {"1": _curve(1, 1.2345678e-5), "2": _curve(2), "30": _curve(30)}.items():
            jobs.loss_plot(elem_id=f"steps-{name}", value=df, **jobs.chart_limits(df, "step"))
        versions.curve_plot(one_point)
        (log_dir / "jobs" / "5").mkdir(parents=True)
        (log_dir / "jobs" / "5" / "log.txt").write_text("".join(f"step {n}: loss 0.5\n" for n in range(1, 131)))
        jobs.log_box(value=jobs.log_tail(5, lines=40))
    return demo


def test_short_curves_count_whole_steps_and_the_log_shows_its_file_lines(page, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from studio.tabs import jobs
    from tests.e2e.conftest import _free_port

    monkeypatch.setattr(jobs, "get_settings", lambda: SimpleNamespace(home_abs=tmp_path))
    demo, port = _charts_app(tmp_path), _free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page.goto(f"http://127.0.0.1:{port}")
        for chart in ("#steps-1", "#steps-2", "#steps-30", "#compare-curves"):
            el = page.locator(chart)
            expect(el.locator(".role-axis-label text").first).to_be_attached(timeout=30_000)
            xs, ys = el.evaluate(VISIBLE_LABELS, "X-axis"), el.evaluate(VISIBLE_LABELS, "Y-axis")
            # whole steps, none repeated ("1, 1, 2, 2" came from whole-number labels on 1.2, 1.4 ...)
            assert xs and all(re.fullmatch(r"\d[\d,]*", x) for x in xs) and len(set(xs)) == len(xs), (chart, xs)
            # a scale of short numbers, not the one raw value of a one-point axis ("0.000012", "2.345679")
            assert len(set(ys)) == len(ys) >= 2 and all(_digits(y) <= 3 and "e" not in y for y in ys), (chart, ys)
        head, *rows = page.locator("#job-log .cm-line").all_text_contents()
        assert head == "lines 91–130 of log.txt"
        assert rows[0].startswith(" 91 │ step 91") and rows[9].startswith("100 │ step 100"), rows[:10]
        assert len({r.index("│") for r in rows}) == 1  # one column: 99 and 100 line up
        expect(page.locator("#job-log .cm-lineNumbers")).to_have_count(0)  # no gutter counting from 1
        shot(page, "10-short-curves-and-log")
    finally:
        demo.close()


def test_a_reload_keeps_the_train_forms_method_and_fields(studio, page):
    url, _ = studio
    page.goto(url)
    page.get_by_text("FineTune Studio").first.wait_for()
    open_tab(page, "Train")
    expect(page.locator("#train-model input")).to_have_value(re.compile("tiny-llama"), timeout=30_000)
    page.locator("#train-method input").click()
    page.get_by_role("option", name="dora", exact=True).click()
    for field, value in (("#p-dora-r", "8"), ("#t-max_steps", "7"), ("#t-learning_rate", "0.003")):
        page.locator(f"{field} input").first.fill(value)
        page.locator(f"{field} input").first.press("Tab")
    expect(page.locator("#train-cost")).to_contain_text("parameters train", timeout=30_000)
    page.wait_for_timeout(1500)  # the form is saved in this browser's localStorage after each change

    page.reload()
    expect(page.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true", timeout=30_000)
    expect(page.locator("#train-method input")).to_have_value("dora", timeout=30_000)
    expect(page.locator("#p-dora-r input").first).to_have_value("8")
    expect(page.locator("#t-max_steps input").first).to_have_value("7")
    expect(page.locator("#t-learning_rate input").first).to_have_value("0.003")
    expect(page.locator("#p-lora-r input").first).not_to_be_visible()  # the dora group shows, not lora's
    shot(page, "2b-train-after-reload")
