"""The Fleet tab and `studio workers list` (workers, their GPUs, alive or dead, the job each runs, and
where each running job runs), and the Train tab's "Start after" (a job queued behind another, as
`studio train --after` does). Handlers are called directly, on SQLite and Postgres."""
import json
from datetime import timedelta

from models_db import Job, Worker, session_scope
from models_db import jobs as jobq
from models_db.schema import utcnow
from studio import cli, operations, routing
from studio.jobspec import build_train_spec
from studio.tabs import fleet as fleet_tab
from studio.tabs import train
from tests.studio import test_advise_cli as cli_tests

studio = cli_tests.studio  # a studio with models, a data set and no workers


def add_worker(worker_id: str, gpus: list[tuple[str, float]], seen_ago: float = 0.0) -> None:
    with session_scope() as db:
        db.add(Worker(id=worker_id, host=f"host-{worker_id}", queues=routing.default_queue(),
                      gpus=[{"index": i, "name": n, "memory_gb": m} for i, (n, m) in enumerate(gpus)],
                      last_heartbeat=utcnow() - timedelta(seconds=seen_ago)))


def running_job(worker_id: str) -> int:
    """A job claimed by ``worker_id``, which records it as its current job (as the runner does)."""
    from worker.fleet import mark_current

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={"method": "lora"})
        job_id = job.id
    with session_scope() as db:
        jobq.claim(db, job_id, worker_id, 60)
    mark_current(worker_id, job_id)
    return job_id


def test_fleet_table_shows_gpus_alive_or_dead_and_the_current_job(backend, capsys):
    assert "No worker has registered yet" in fleet_tab.refresh()[0]
    add_worker("busy", [("NVIDIA H100 80GB HBM3", 79.2), ("NVIDIA H100 80GB HBM3", 79.2)])
    add_worker("idle", [("NVIDIA L4", 22.0)])
    add_worker("cpu", [])
    add_worker("lost", [("NVIDIA A100-SXM4-40GB", 39.4)], seen_ago=3600)  # no heartbeat for an hour
    job_id = running_job("busy")

    line, rows, where = fleet_tab.refresh()
    by_id = {r[0]: r for r in rows}
    assert [r[0] for r in rows][-1] == "lost"  # alive workers first
    assert by_id["busy"][2] == "2 × NVIDIA H100 80GB HBM3 (79.2 GB)"
    assert by_id["busy"][3] == "alive" and by_id["busy"][5] == f"#{job_id} lora step 0/?"
    assert (by_id["idle"][2], by_id["idle"][3], by_id["idle"][5]) == ("NVIDIA L4 (22 GB)", "alive", "idle")
    assert (by_id["cpu"][2], by_id["cpu"][6]) == ("CPU only", routing.default_queue())
    assert (by_id["lost"][3], by_id["lost"][4]) == ("dead", "60 min ago")
    assert by_id["busy"][6].endswith(f"tiers up to {routing.default_queue()}.mem79x2")
    assert line == "**3** of 4 registered workers alive · **1** busy, 2 idle"
    assert where == [[job_id, "lora", "busy", "host-busy", "2 × NVIDIA H100 80GB HBM3 (79.2 GB)",
                      routing.default_queue(), "0 / ?", 1]]

    cli.main(["workers", "list", "--json"])  # the same facts from the CLI
    out = json.loads(capsys.readouterr().out)
    shown = {w["id"]: w for w in out["workers"]}
    assert shown["busy"]["current_job_id"] == job_id and shown["lost"]["alive"] is False
    assert shown["idle"]["gpus"] == [{"index": 0, "name": "NVIDIA L4", "memory_gb": 22.0}]
    assert out["running"][0]["worker"] == "busy"

    from worker.fleet import mark_current

    with session_scope() as db:  # the job ends: the worker clears its record and shows idle again
        jobq.finish(db, jobq.Claim(job_id, 1, 1), "succeeded")
    mark_current("busy", None)
    _, rows, where = fleet_tab.refresh()
    assert {r[0]: r[5] for r in rows}["busy"] == "idle" and where == []
    cli.main(["workers", "list", "--alive"])
    text = capsys.readouterr().out
    assert "lost" not in text and "busy  host-busy  2 × NVIDIA H100 80GB HBM3 (79.2 GB)  alive, idle" in text


def test_start_after_queues_the_job_behind_the_picked_one(studio):
    spec = build_train_spec(model_id=studio["tiny-llama"], dataset_id=studio["dataset"], method="lora",
                            settings={"max_steps": 2})
    first, _ = operations.submit_train(spec)  # no worker: it stays queued
    choices = train.after_choices()
    assert choices[0] == ("now", None)
    assert (f"after #{first.id} lora (queued)", first.id) in choices
    refreshed = train.refresh_choices(None, None, None, first.id)[3]
    assert refreshed.value == first.id  # the pick survives a refresh while the job is still active

    values = [knob.default for _, _, knob in train.SPECS]
    job_id, _, _ = train.start(studio["tiny-llama"], studio["dataset"], "lora", None, first.id, "nonce-1", *values)
    now_id, _, _ = train.start(studio["tiny-llama"], studio["dataset"], "lora", None, None, "nonce-2", *values)
    with session_scope() as db:
        assert db.get(Job, job_id).after_job_id == first.id  # exactly what `studio train --after` stores
        assert db.get(Job, now_id).after_job_id is None
        assert jobq.claim(db, job_id, "w1", 60) is None
        assert jobq.why_not_claimed(db, job_id) == f"it waits for job {first.id} (queued) to finish"

    operations.cancel_job(first.id)  # once it has finished, the pick is gone from the list
    assert first.id not in [v for _, v in train.after_choices()]
    assert train.refresh_choices(None, None, None, first.id)[3].value is None
