"""Display thinning of long curves (min/max buckets), retries replacing resumed points, and the Jobs
tab's incremental poll on a long run: only new points are read, at most ~2,000 rows per curve are drawn."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from studio.curves import LiveCurves, downsample


def rows(plot) -> pd.DataFrame:
    """The rows a chart update sends to the browser."""
    return pd.DataFrame(plot.value["data"], columns=plot.value["columns"])


def test_downsample_keeps_ends_and_spikes_and_stays_under_the_limit():
    y = np.sin(np.linspace(0, 20, 100_000))
    y[31_337] = 50.0  # a spike
    y[77_777] = -50.0
    keep = downsample(y, 2000)
    assert len(keep) <= 2000 and keep[0] == 0 and keep[-1] == len(y) - 1
    assert np.all(np.diff(keep) > 0)  # in order
    assert 31_337 in keep and 77_777 in keep
    assert np.array_equal(downsample([1.0, 2.0, 3.0], 2000), [0, 1, 2])


def test_live_curves_thin_as_they_grow_and_a_retry_replaces_its_resumed_steps():
    c = LiveCurves(max_points=100)
    for s in range(1, 1001):
        c.add("loss", s, 1.0 / s)
    assert len(c.series["loss"][0]) <= 200  # memory stays bounded
    frame = c.frame(["loss"])
    assert len(frame) <= 100 and frame["step"].iloc[-1] == 1000 and frame["value"].max() == 1.0
    r = LiveCurves()
    for s in range(1, 11):
        r.add("loss", s, 5.0)
    for s in range(7, 9):  # attempt 2 resumed from the checkpoint at step 6
        r.add("loss", s, 1.0, attempt=2)
    xs, ys, _ = r.series["loss"]
    assert xs == [1, 2, 3, 4, 5, 6, 7, 8] and ys[-2:] == [1.0, 1.0]


def test_job_page_poll_reads_only_new_points_and_draws_thinned_curves(backend):
    from sqlalchemy import insert

    from models_db import Metric, session_scope
    from models_db import jobs as jobq
    from studio.tabs import jobs as tab

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={"method": "lora", "eval_split": 0.0})
        job_id = job.id
        db.execute(insert(Metric), [{"job_id": job_id, "step": s, "name": "loss", "value": 10.0 / s}
                                    for s in range(1, 20_001)]
                   + [{"job_id": job_id, "step": s, "name": "sys_cpu_pct", "value": 50.0} for s in range(0, 20_000, 50)])
    status, plot, system, _log, _att, _queue, cache = tab.poll(job_id, None)
    plot, system = rows(plot), rows(system)
    assert len(plot) <= 2000 and plot["step"].max() == 20_000 and plot["value"].max() == 10.0
    assert set(system["series"]) == {"CPU"} and "train loss" in status
    first = cache["after"]
    with session_scope() as db:
        db.add(Metric(job_id=job_id, step=20_001, name="loss", value=0.25))
    calls = []
    real = tab.jobq.metric_rows_since

    def spy(db, jid, after):
        calls.append(after)
        return real(db, jid, after)

    tab.jobq.metric_rows_since = spy
    try:
        status, plot, *_, cache = tab.poll(job_id, cache)
    finally:
        tab.jobq.metric_rows_since = real
    assert calls == [first] and cache["after"] > first  # only the new point was read
    assert rows(plot)["step"].max() == 20_001 and "0.2500" in status
    *_, cache = tab.poll(job_id, cache)
    assert cache["after"] > first


def frame(n: int, first: float = 2.0, x: str = "step") -> pd.DataFrame:
    return pd.DataFrame({x: range(1, n + 1), "value": [first / s for s in range(1, n + 1)], "series": "loss"})


def test_a_step_axis_is_whole_numbers_wide_enough_not_to_repeat_them_and_one_point_is_readable():
    """Vega labelled a one-point chart "1.000000" and "0.000012", and a 2-step axis 1.00, 1.05 ... 2.00;
    whole-number labels on such an axis repeat ("1, 1, 2"): a short count axis is widened, a flat one opened."""
    from studio.tabs import jobs

    one = jobs.chart_limits(frame(1, 1.2345678e-5), "step")
    assert one["x_lim"] == [0.0, jobs.MIN_COUNT_SPAN] and one["y_lim"] == pytest.approx([1.111e-5, 1.358e-5], rel=1e-3)
    assert jobs.chart_limits(frame(2), "step") == {"x_lim": [0.0, 40.0], "y_lim": None}
    assert jobs.chart_limits(frame(30), "step")["x_lim"] == [0.0, 40.0]
    assert jobs.chart_limits(frame(41), "step") == {"x_lim": None, "y_lim": None}  # the chart's own fit
    late = pd.DataFrame({"step": [500], "value": [0.0], "series": ["loss"]})
    assert jobs.chart_limits(late, "step") == {"x_lim": [480.0, 520.0], "y_lim": [-1.0, 1.0]}
    assert jobs.loss_plot().x_axis_format == jobs.COUNT_FORMAT == ",d"
    update = jobs.loss_update(frame(1))
    assert (update.x_lim, update.y_lim) == ([0.0, 40.0], [1.8, 2.2]) and len(rows(update)) == 1
    assert jobs.loss_update(frame(100)).x_lim is None  # sent on every redraw: a grown curve clears the widening


def test_the_compared_curves_count_in_whole_numbers_too():
    from studio.tabs import versions as tab

    chart = {"axis": "step", "versions": [{"id": 1}], "curves": {"1": {"loss": [[1, 64, 2.5]], "eval_loss": []}}}
    plot = tab.curve_plot(chart)
    assert plot.x_axis_format == ",d" and plot.x_lim == [0.0, 40.0] and plot.y_lim == [2.25, 2.75]
    plot = tab.curve_plot({**chart, "axis": "tokens seen"})
    assert plot.x == "tokens" and plot.x_lim == [44.0, 84.0]
