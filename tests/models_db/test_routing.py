"""Routing by GPU memory (studio/routing.py), on SQLite and Postgres: the queue a job goes to for its
estimate against a registered fleet, the worker that refuses a job too big for its GPUs (the job stays
queued with a message saying what it waits for), and every send and re-send going to the job's queue."""
import json
from datetime import timedelta

import pytest
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy import update

from models_db import BaseModel, Job, ModelVersion, Worker, session_scope
from models_db import jobs as jobq
from models_db.schema import utcnow
from studio import cli, operations, routing
from studio.jobspec import build_train_spec
from tests.studio import test_advise_cli as cli_tests

studio = cli_tests.studio  # a studio with the tiny Llama, config-only models and a 40-row data set
H100, L4, RTX4090 = 79.2, 22.0, 23.6  # GiB as torch reports these cards
LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}


def cuda(total_gb: float) -> dict:
    return {"device": "cuda", "total_gb": total_gb}


def gpus(*sizes: float) -> list[dict]:
    return [{"index": i, "name": "GPU", "memory_gb": g} for i, g in enumerate(sizes)]


def add_worker(worker_id: str, *sizes: float, seen_ago: float = 0.0, queues: str | None = None) -> None:
    with session_scope() as db:
        db.add(Worker(id=worker_id, host=f"host-{worker_id}", gpus=gpus(*sizes), queues=queues or "gpu",
                      last_heartbeat=utcnow() - timedelta(seconds=seen_ago)))


@pytest.fixture
def sent(monkeypatch):
    """Every task message sent, as (kind, job id, queue), instead of reaching the broker."""
    import studio.celery_app
    import worker.consumer

    out = []

    def record(kind, job_id, queue=None):
        out.append((kind, job_id, queue))
    monkeypatch.setattr(studio.celery_app, "enqueue", record)
    monkeypatch.setattr(worker.consumer, "enqueue", record)
    return out


# --- the naming scheme, no database ------------------------------------------------------------------
def test_a_job_goes_to_the_smallest_tier_that_holds_its_estimate():
    assert routing.queue_for("gpu", None) == "gpu"
    assert routing.queue_for("gpu", {"device": "cpu", "total_gb": 3.0}) == "gpu"  # a CPU-only fleet
    assert routing.queue_for("gpu", {"error": "no estimate"}) == "gpu"
    assert routing.queue_for("gpu", cuda(6.0)) == "gpu.mem7.5"  # 6 / 0.97 = 6.2 <= 7.5
    assert routing.queue_for("gpu", cuda(20.0)) == "gpu.mem21.9"  # needs 20.6 GiB: an L4 (22.0) holds it
    assert routing.queue_for("gpu", cuda(22.0)) == "gpu.mem23.5"  # needs 22.7 GiB: a 4090 (23.6), not an L4
    assert routing.queue_for("gpu", cuda(70.0)) == "gpu.mem79"
    assert routing.queue_for("gpu", cuda(70.0), gpus=4) == "gpu.mem79x4"
    assert routing.queue_for("gpu", cuda(900.0)) == "gpu.mem255"  # none holds it: the largest, where it waits


def test_a_sharded_multi_gpu_job_needs_its_share_on_each_gpu():
    """FSDP (or "auto", which takes it when a replica does not fit one GPU) splits weights and optimizer
    state between the GPUs; DDP keeps a whole replica on each (studio/advisor/parallel.py)."""
    est = {**cuda(125.0), "parts": {"weights": 30.0, "trainable_state": 90.0, "activations": 4.0, "overhead": 1.0}}
    assert routing.queue_for("gpu", est) == "gpu.mem139"  # one GPU: the whole 125 GB
    assert routing.queue_for("gpu", est, gpus=2, distributed="ddp") == "gpu.mem139x2"
    assert routing.queue_for("gpu", est, gpus=2) == "gpu.mem79x2"  # 15 + 45 + 4 + 1 = 65 GB each
    assert routing.queue_for("gpu", est, gpus=4, distributed="fsdp") == "gpu.mem39x4"  # 35 GB each
    two_h100 = gpus(H100, H100)
    assert routing.refusal({"estimate": est, "gpus": 2}, two_h100, []) is None
    assert "on each of 2 GPUs" in routing.refusal({"estimate": est, "gpus": 2, "distributed": "ddp"}, two_h100, [])


def test_a_worker_consumes_the_default_queue_and_every_tier_its_gpus_reach():
    assert routing.worker_queues("gpu", []) == ["gpu"]  # CPU only: the default queue alone
    assert routing.worker_queues("gpu", gpus(RTX4090)) == ["gpu", "gpu.mem3.5", "gpu.mem5.5", "gpu.mem7.5", "gpu.mem9.5",
                                                           "gpu.mem10.5", "gpu.mem11.5", "gpu.mem14.5", "gpu.mem15.5",
                                                           "gpu.mem19.5", "gpu.mem21.9", "gpu.mem23.5"]
    assert "gpu.mem23.5" not in routing.worker_queues("gpu", gpus(L4))  # both sold as 24 GB; the L4 reports 22.0
    two = routing.worker_queues("gpu", gpus(H100, H100))
    assert {"gpu", "gpu.mem79", "gpu.mem7.5x2", "gpu.mem79x2"} <= set(two)
    assert "gpu.mem93" not in two and "gpu.mem79x3" not in two
    # a mixed machine offers what its smallest card holds
    assert "gpu.mem79x2" not in routing.worker_queues("gpu", gpus(H100, L4))


@pytest.mark.parametrize("count", [1, 2])
def test_every_worker_that_consumes_a_jobs_queue_can_hold_the_job(count):
    """The property routing rests on, over a sweep of estimates and of cards as torch reports them."""
    cards = [7.8, 11.8, 14.6, 15.8, L4, RTX4090, 31.7, 39.4, 44.4, 47.5, H100, 93.6, 139.8, 191.5]
    checked = 0
    for total in [x / 4 for x in range(1, 800)]:
        need = total / 0.97
        queue = routing.queue_for("gpu", cuda(total), gpus=count)
        for size in cards:
            for n in (1, 2, 3):
                fleet_gpus = gpus(*[size] * n)
                if queue in routing.worker_queues("gpu", fleet_gpus):
                    if need <= routing.TIERS[-1][1]:
                        assert routing.can_hold(fleet_gpus, need, count), (total, size, n, queue)
                    else:  # beyond every tier: it waits on the largest, whose workers refuse what they cannot hold
                        config = {"estimate": cuda(total), "gpus": count}
                        assert routing.can_hold(fleet_gpus, need, count) or routing.refusal(config, fleet_gpus, [])
                    checked += 1
    assert checked > 1000


CARDS = [7.8, 11.8, 14.6, 15.8, L4, RTX4090, 31.7, 39.4, 44.4, 47.5, H100, 93.6, 139.8, 191.5]


@pytest.mark.parametrize("count", [1, 2])
def test_a_job_is_offered_to_every_alive_worker_that_holds_it_and_to_no_other(count):
    """Placed against a fleet of real card sizes (as torch reports them), a job's queue is consumed by
    every worker whose GPUs hold its need and by none too small for it: a 23.2 GiB job reaches a 4090
    (23.6) beside an L4 (22.0), which a tier per sold size (both "24 GB") could not do."""
    import itertools

    checked = 0
    for sizes in itertools.combinations(CARDS, 3):
        fleet = [gpus(*[s] * n) for s, n in zip(sizes, (1, 2, 3))]  # 1, 2 and 3 GPUs
        for total in [x / 2 for x in range(1, 400)]:
            need = total / 0.97
            placed = routing.place({"estimate": cuda(total), "gpus": count}, fleet, base="gpu")
            holders = 0
            for w in fleet:
                offered = placed.queue in routing.worker_queues("gpu", w)
                holds = len(w) >= count and w[0]["memory_gb"] >= need
                assert offered == holds, (sizes, total, count, placed.queue, w[0]["memory_gb"], len(w))
                holders += holds
                checked += 1
            assert bool(placed.waiting) == (holders == 0)
    assert checked > 50000
    # the case that tiers per sold size got wrong, spelled out
    fleet = [gpus(L4), gpus(RTX4090)]
    placed = routing.place({"estimate": cuda(22.5)}, fleet, base="gpu")  # needs 23.2 GiB
    assert placed == routing.Placement("gpu.mem23.5", "")
    assert placed.queue in routing.worker_queues("gpu", gpus(RTX4090))
    assert placed.queue not in routing.worker_queues("gpu", gpus(L4))
    # 23.0 GB needs 23.7 GiB by the headroom rule (3% of what the card reports): no 24 GB card holds it
    assert routing.refusal({"estimate": cuda(23.0)}, gpus(RTX4090), fleet).startswith("waits for a worker with >= 23.7 GB")


def test_sizes_the_thresholds_cannot_tell_apart_still_reach_every_holder():
    """An H100 (79.2) and an A100 80GB reporting 79.1 share a tier: a job needing 79.15 GiB is offered to
    both, and the smaller one refuses it when it arrives there."""
    fleet = [gpus(79.1), gpus(H100)]
    placed = routing.place({"estimate": cuda(79.15 * 0.97)}, fleet, base="gpu")
    assert placed.queue == "gpu.mem79" and not placed.waiting
    assert all(placed.queue in routing.worker_queues("gpu", w) for w in fleet)
    assert routing.refusal({"estimate": cuda(79.15 * 0.97)}, gpus(79.1), fleet)
    assert routing.refusal({"estimate": cuda(79.15 * 0.97)}, gpus(H100), fleet) is None


# --- against a registered fleet ----------------------------------------------------------------------
def test_placement_against_the_alive_fleet_names_the_largest_worker(backend):
    add_worker("small", RTX4090)
    add_worker("gone", H100, seen_ago=3600)  # dead: no heartbeat for an hour; it does not count
    with session_scope() as db:
        fleet = routing.alive_fleet(db)
    assert fleet == [gpus(RTX4090)]
    base = routing.default_queue()
    assert routing.place({"estimate": cuda(10.0)}, fleet) == routing.Placement(f"{base}.mem10.5", "")
    big = routing.place({"estimate": cuda(30.0)}, fleet)
    assert big.queue.endswith(".mem31")  # 30.9 GiB: nobody alive holds it; it waits on the next tier up
    # it asks for what it needs (a worker between that and the tier gets it re-routed by the sweep)
    assert big.waiting.startswith("waits for a worker with >= 30.9 GB of GPU memory; the largest registered has 23.6 GB")
    # 23.2 GiB: the 4090 (23.6) holds it, and is offered it
    between = routing.place({"estimate": cuda(22.5)}, fleet)
    assert between == routing.Placement(f"{base}.mem23.5", "") and between.queue in routing.worker_queues(base, fleet[0])
    two = routing.place({"estimate": cuda(10.0), "gpus": 2}, fleet)
    assert two.queue.endswith(".mem10.5x2") and "on each of 2 GPUs" in two.waiting
    assert routing.place({"estimate": {"device": "cpu", "total_gb": 99.0}}, fleet) == routing.Placement(base, "")
    # what a worker started with --queues consumes: the default queue's tiers only when it is among them
    assert routing.consumed_queues("interactive", gpus(H100)) == ["interactive"]
    both = routing.consumed_queues(f"{base},interactive", gpus(H100))
    assert both[:2] == [base, "interactive"] and f"{base}.mem79" in both and "interactive.mem79" not in both


def test_submit_stores_the_queue_and_says_when_no_worker_can_hold_the_job(studio, sent, tmp_path, capsys):
    base = routing.default_queue()
    spec = build_train_spec(model_id=studio["tiny-llama"], dataset_id=studio["dataset"], method="lora",
                            settings={"max_steps": 2})
    job, _ = operations.submit_train(spec)  # no worker registered: a CPU estimate, the default queue
    assert (job.queue, job.config["estimate"]["device"], job.message) == (base, "cpu", "")
    assert sent[-1] == ("train", job.id, base)

    add_worker("small", RTX4090)
    job, _ = operations.submit_train(spec)  # the tiny model fits the smallest tier
    assert job.config["estimate"]["device"] == "cuda"
    assert job.queue == f"{base}.mem3.5" and job.message == "" and sent[-1] == ("train", job.id, f"{base}.mem3.5")

    big_model = _add_llama_8b(tmp_path)
    spec = build_train_spec(model_id=big_model, dataset_id=studio["dataset"], method="full", settings={"max_steps": 2})
    job, _ = operations.submit_train(spec)  # a full fine-tune of 8B parameters: far beyond a 24 GB card
    need = routing.gpu_need_gb(job.config["estimate"])
    assert need > 24 and job.queue == routing.queue_for(base, job.config["estimate"]) != base
    assert job.state == "queued" and routing.is_waiting(job.message)
    assert f">= {need:.1f} GB" in job.message and "the largest registered has 23.6 GB" in job.message
    assert sent[-1] == ("train", job.id, job.queue)  # still queued and sent: a big worker may join later

    cli.main(["train", "--model", "llama-8b", "--dataset", str(studio["dataset"]), "--method", "full", "--json"])
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["queue"] == job.queue and shown["message"] == job.message
    assert f"note: job {shown['id']} waits for a worker with >= {need:.1f} GB" in err


def _add_llama_8b(tmp_path) -> int:
    """A base model row with Llama-3-8B's config only (the estimate needs no weights); returns its id."""
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    with session_scope() as db:
        row = BaseModel(name="llama-8b", path=str(folder), source="test")
        db.add(row)
        db.flush()
        return row.id


def _queued_job(config: dict, queue: str | None = None) -> int:
    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config=config, queue=queue)
        return job.id


def test_a_gpu_worker_refuses_a_job_its_gpus_cannot_hold_and_the_job_stays_queued(backend):
    from worker import fleet, supervisor

    add_worker("small", RTX4090)
    add_worker("cpu")  # a CPU worker trains what it is sent (slowly); it never refuses on memory
    job_id = _queued_job({"estimate": cuda(30.0)}, queue="q.mem40")
    assert supervisor.run_job(job_id, worker_id="small") == "refused"
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert (job.state, job.attempt, job.worker_id, job.history) == ("queued", 0, None, [])
        assert job.message == ("waits for a worker with >= 30.9 GB of GPU memory; the largest registered has 23.6 GB. "
                               "It stays queued until such a worker joins (studio workers list), or cancel it and "
                               "lower the batch size or sequence length.")
        assert fleet.refusal(db, job_id, "cpu") is None
        assert fleet.refusal(db, job_id, "unregistered") is None
    add_worker("big", H100)
    with session_scope() as db:
        assert fleet.refusal(db, job_id, "big") is None
        assert jobq.claim(db, job_id, "big", 60) is not None


def _log(job_id: int) -> str:
    from worker import supervisor

    path = supervisor.job_dir(job_id) / "log.txt"
    return path.read_text() if path.exists() else ""


def test_the_sweep_reroutes_a_job_submitted_to_a_cpu_only_fleet_once_gpu_workers_join(studio, sent, tmp_path):
    from worker import consumer, fleet

    base = routing.default_queue()
    spec = build_train_spec(model_id=studio["tiny-llama"], dataset_id=studio["dataset"], method="lora",
                            settings={"max_steps": 2})
    job, _ = operations.submit_train(spec)  # nobody registered: a CPU estimate, the default queue
    assert (job.queue, job.config["estimate"]["device"]) == (base, "cpu")
    big_model = _add_llama_8b(tmp_path)
    big, _ = operations.submit_train(build_train_spec(model_id=big_model, dataset_id=studio["dataset"], method="full",
                                                    settings={"max_steps": 2}))
    assert big.queue == base
    consumer.reap_once()
    assert sent == [("train", job.id, base), ("train", big.id, base)]  # the CPU-only fleet: nothing moves

    add_worker("gpu", RTX4090)
    add_worker("cpu")
    sent.clear()
    consumer.reap_once()
    with session_scope() as db:
        moved, stayed = db.get(Job, job.id), db.get(Job, big.id)
        assert moved.queue == f"{base}.mem3.5" and moved.config["estimate"]["device"] == "cuda"
        assert moved.message.startswith(f"re-routed from {base} to {base}.mem3.5 (needs ")
        assert "GPU workers joined since it was submitted to a CPU-only fleet" in moved.message
        # no alive GPU holds the 8B full fine-tune: it stays where the CPU worker takes it, with its CPU estimate
        assert (stayed.queue, stayed.config["estimate"]["device"], stayed.message) == (base, "cpu", "")
        # and the 4090, which consumes the default queue too, refuses it on its own GPU's estimate
        assert routing.is_waiting(fleet.refusal(db, big.id, "gpu"))
        assert fleet.refusal(db, big.id, "cpu") is None
    assert sent == [("train", job.id, f"{base}.mem3.5")]
    assert f"re-routed from {base} to {base}.mem3.5" in _log(job.id)

    sent.clear()
    consumer.reap_once()  # the fleet did not change: nothing moves, nothing is sent
    assert sent == []


def test_the_sweep_offers_a_waiting_job_to_a_worker_that_joins_and_holds_it(backend, sent):
    from worker import consumer

    base = routing.default_queue()
    add_worker("l4", L4)
    with session_scope() as db:
        placed = routing.place({"estimate": cuda(21.5)}, routing.alive_fleet(db))  # needs 22.2 GiB
    assert placed.queue == f"{base}.mem23.5" and routing.is_waiting(placed.waiting)
    job_id = _queued_job({"estimate": cuda(21.5)}, queue=placed.queue)
    with session_scope() as db:
        db.execute(update(Job).where(Job.id == job_id).values(message=placed.waiting))
    consumer.reap_once()
    assert sent == []  # nothing changed
    add_worker("a10g", 22.3)  # holds 22.2 GiB, but does not consume mem23.5
    consumer.reap_once()
    with session_scope() as db:
        job = db.get(Job, job_id)
        # no threshold between 22.0 and 22.3: both are offered it, and the L4 refuses it (guarantee 20)
        assert job.queue == f"{base}.mem21.9" and job.message.startswith(
            f"re-routed from {base}.mem23.5 to {base}.mem21.9 (needs 22.2 GB per GPU): the fleet changed")
    assert sent == [("train", job_id, f"{base}.mem21.9")]
    assert job.queue in routing.worker_queues(base, gpus(22.3))
    assert "re-routed" in _log(job_id)


def test_every_resend_goes_to_the_jobs_queue(backend, sent, monkeypatch):
    from worker import consumer, supervisor

    base = routing.default_queue()  # each job on the queue routing gives it, so the sweep does not move it
    lost = _queued_job({"estimate": cuda(30.0)}, queue=f"{base}.mem31")
    reaped = _queued_job({"estimate": cuda(70.0)}, queue=f"{base}.mem79")
    old = utcnow() - timedelta(hours=1)
    with session_scope() as db:
        db.execute(update(Job).where(Job.id == lost).values(updated_at=old))  # its message was lost long ago
        jobq.claim(db, reaped, "vanished", 60)
        db.execute(update(Job).where(Job.id == reaped).values(lease_expires_at=old))  # its worker vanished
    monkeypatch.setattr(supervisor, "_idle_since", 0.0)  # idle for ages: the sweep may re-send lost messages
    assert consumer.reap_once() == [(reaped, "queued")]
    assert sorted(sent) == [("train", lost, f"{base}.mem31"), ("train", reaped, f"{base}.mem79")]

    sent.clear()  # a training process that died: the runner's retry goes to the same queue
    with session_scope() as db:
        claim = jobq.claim(db, reaped, "w2", 60)
    assert supervisor._settle(claim, -9, "exited") == "requeued"
    assert sent == [("train", reaped, f"{base}.mem79")]


def test_an_export_uses_the_default_queue_and_survives_a_broker_outage(backend, monkeypatch):
    import studio.celery_app

    def down(*_a, **_k):
        raise BrokerUnreachable("Error 111 connecting to redis. Connection refused.")
    monkeypatch.setattr(studio.celery_app, "enqueue", down)
    with session_scope() as db:
        m = BaseModel(name="m", path="/nowhere", source="test")
        db.add(m)
        db.flush()
        v = ModelVersion(name="v", base_model_id=m.id, method="lora")
        db.add(v)
        db.flush()
        version_id = v.id
    job = operations.submit_export(version_id, merged=False)  # no exception: it waits for the sweep
    assert (job.state, job.queue) == ("queued", routing.default_queue())


def test_a_routed_message_lands_in_its_tier_queue_in_redis(tmp_path, monkeypatch):
    """Through the real broker: submit's send puts the message in the tier's Redis list, where only
    workers consuming that tier look, and none in the default queue."""
    import redis

    from tests.backends import backend_env, in_process

    with backend_env("services", tmp_path / "home") as env, in_process(monkeypatch, env) as settings:
        r = redis.Redis.from_url(settings.broker)
        base = routing.default_queue()
        try:
            assert operations.send("train", 41, f"{base}.mem40") and operations.send("export", 42, base)
            assert (r.llen(f"{base}.mem40"), r.llen(base)) == (1, 1)
            body = json.loads(r.lindex(f"{base}.mem40", 0))
            assert body["headers"]["task"] == "studio.train" and body["headers"]["argsrepr"] == "[41]"
        finally:
            r.delete(f"{base}.mem40", base)
