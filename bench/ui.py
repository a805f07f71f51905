"""UI speed at scale: the Versions table, the compare view and the job page with 1,000 versions and
1,000,000 metric points, timed through the tabs' own handlers (what each browser event runs).

    .venv/bin/python bench/ui.py [--versions 1000] [--points 1000000] [--long-share 0.4] [--home DIR] [--json]

The points: one long job holds ``--long-share`` of them (its run logged 10 metrics at each of
40,000 steps, system samples included); the rest are spread over the other jobs (a few hundred
each). Figures: the median of 5 calls, and for the job page also the first (cold) call, which reads
every point of the job once; later ticks read only new points."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perfkit

NAMES = ("loss", "learning_rate", "grad_norm", "tokens_seen", "tokens_per_s", "samples_per_s", "step_time_s",
         "peak_memory_gb", "sys_cpu_pct", "sys_ram_pct")


def build(versions: int, points: int, long_share: float) -> list[int]:
    """Jobs, versions and metric points, bulk-inserted; returns the job ids (the long one first)."""
    from sqlalchemy import insert

    from models_db import BaseModel, Dataset, Job, Metric, ModelVersion, session_scope
    from models_db.migrate import upgrade
    from models_db.schema import utcnow

    upgrade()
    t0 = utcnow()
    with session_scope() as db:
        base = BaseModel(name="bench-base", path="/nonexistent", source="bench", params_total=135_000_000)
        ds = Dataset(name="bench-data", content_hash="0" * 64, format="instruction", path="/nonexistent", rows=1000)
        db.add_all([base, ds])
        db.flush()
        jobs = [Job(kind="train", state="succeeded", config={"method": "lora", "eval_split": 0.1, "learning_rate": 1e-4 * (1 + i % 7)},
                    base_model_id=base.id, dataset_id=ds.id, attempt=1, step=1000, max_steps=1000)
                for i in range(versions)]
        db.add_all(jobs)
        db.flush()
        db.add_all(ModelVersion(name=f"v{i}", base_model_id=base.id, dataset_id=ds.id, job_id=j.id, method="lora",
                                config={"learning_rate": 1e-4 * (1 + i % 7), "method_params": {"r": 8 + i % 3}},
                                metrics={"train_loss": 1.0 + i / versions, "eval_loss": 1.1 + i / versions,
                                         "peak_memory_gb": 2.0, "tokens_per_s": 1000.0 + i, "train_seconds": 60.0},
                                artifacts={"adapter": f"versions/job-{j.id}/adapter"})
                   for i, j in enumerate(jobs))
        ids = [j.id for j in jobs]
    long_steps = int(points * long_share) // len(NAMES)
    per_other = (points - long_steps * len(NAMES)) // max(versions - 1, 1) // len(NAMES)

    def rows(job_id: int, steps: int):
        for s in range(1, steps + 1):
            when = t0 + timedelta(seconds=s)
            for k, name in enumerate(NAMES):
                yield {"job_id": job_id, "attempt": 1, "step": s, "name": name, "value": 1.0 / s + k, "time": when}

    batch: list[dict] = []
    total = 0
    for job_id, steps in [(ids[0], long_steps)] + [(i, per_other) for i in ids[1:]]:
        for r in rows(job_id, steps):
            batch.append(r)
            if len(batch) >= 50_000:
                with session_scope() as db:
                    db.execute(insert(Metric), batch)
                total += len(batch)
                batch = []
    if batch:
        with session_scope() as db:
            db.execute(insert(Metric), batch)
        total += len(batch)
    perfkit.say(f"{versions} versions, {total:,} metric points ({long_steps:,} steps in the long job)")
    return ids


def timed(fn, repeats: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--long-share", type=float, default=0.4)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-ui"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if (a.home / "studio.db").exists():
        raise SystemExit(f"{a.home} already holds a studio: pass a fresh --home")
    perfkit.use_home(a.home)
    started = time.perf_counter()
    ids = build(a.versions, a.points, a.long_share)
    build_s = time.perf_counter() - started

    from models_db import Metric, ModelVersion, session_scope
    from studio.tabs import jobs as jobs_tab
    from studio.tabs import versions as versions_tab

    with session_scope() as db:
        vid = {v.job_id: v.id for v in db.query(ModelVersion)}
    out = {"versions": a.versions, "points": a.points, "build_s": round(build_s, 1)}
    out["versions_table_s"], frame = timed(versions_tab.versions_frame)
    assert len(frame) == a.versions
    for label, job_id in (("long", ids[0]), ("typical", ids[1])):
        started = time.perf_counter()
        first = jobs_tab.poll(job_id, None)
        out[f"job_page_{label}_first_s"] = time.perf_counter() - started
        out[f"job_page_{label}_rows_drawn"] = len(first[1])
        cache = first[-1]
        with session_scope() as db:
            db.add(Metric(job_id=job_id, step=10**6, name="loss", value=0.5))
        out[f"job_page_{label}_tick_s"], _ = timed(lambda j=job_id, c=cache: jobs_tab.poll(j, c))
    compared = [vid[ids[0]], vid[ids[1]], vid[ids[2]], vid[ids[3]]]

    def compare():
        *_, chart = versions_tab.compare_view(compared, "step")
        return versions_tab.curve_plot(chart)
    out["compare_view_s"], plot = timed(compare)
    out["compare_rows_drawn"] = len(plot.value["data"]) if plot is not None else 0
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
    out["hardware"] = perfkit.hardware()
    if a.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
