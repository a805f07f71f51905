"""The export memory check at submit reads the RAM of the workers that can take the export (the fleet
registry), not the studio machine's; this machine's figure stands in when no worker elsewhere reported
RAM (embedded mode); the worker's own re-check stays on its own RAM. And the worker's registration and
heartbeat record that RAM, with only the training worker (not the interactive one) running the reaper."""
from __future__ import annotations

import json
import socket
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from safetensors.numpy import save_file

from models_db import BaseModel, ModelVersion, Worker, session_scope
from models_db.schema import utcnow
from studio import exports, routing
from studio.jobspec import SpecError

GB = 2**30


@pytest.fixture
def version(backend, tmp_path, monkeypatch):
    """A LoRA version of a 1M-parameter base: a merged export needs ~0.51 GB (mostly the runtime);
    this machine shows 0.1 GB free."""
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": np.zeros((1024, 1024), np.float32)}, str(base_dir / "model.safetensors"))
    with session_scope() as db:
        base = BaseModel(name="base", path=str(base_dir), source="test")
        db.add(base)
        db.flush()
        v = ModelVersion(name="v", base_model_id=base.id, method="lora", config={}, artifacts={})
        db.add(v)
        db.flush()
        vid = v.id
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=8 * GB, available=int(0.1 * GB)))
    return vid


def add_worker(wid: str, host: str, available_gb: float | None, queues: str | None = None, age_s: float = 0) -> None:
    with session_scope() as db:
        db.add(Worker(id=wid, host=host, gpus=[], queues=queues or routing.default_queue(),
                      ram_total=64 * GB, ram_available=None if available_gb is None else int(available_gb * GB),
                      last_heartbeat=utcnow() - timedelta(seconds=age_s)))


def check(version_id: int):
    with session_scope() as db:
        return exports.check_export(db, version_id, "merged"), exports.preview(db, version_id, "merged")


def test_submit_checks_the_ram_of_the_workers_that_take_exports(version):
    # embedded: no worker elsewhere, so this machine's figure
    with pytest.raises(SpecError, match=r"this machine has 0\.10 GB available \(free RAM\)"):
        check(version)
    # workers that cannot take it do not count: dead, interactive-only, or without a RAM figure (older worker)
    add_worker("dead", "box-dead", 64, age_s=3600)
    add_worker("chat", "box-chat", 64, queues="interactive")
    add_worker("old", "box-old", None)
    with pytest.raises(SpecError, match=r"this machine has 0\.10 GB"):
        check(version)
    # a worker elsewhere with too little RAM: refused, naming it
    add_worker("small", "box-small", 0.3)
    with pytest.raises(SpecError, match=r"the largest worker that takes exports, small on box-small, has 0\.30 GB "
                                        r"available \(free RAM at its last heartbeat\); export the adapter"):
        check(version)
    # one with enough: accepted, though this machine could not do it
    add_worker("big", "box-big", 48)
    fmt, preview = check(version)
    assert fmt.name == "merged" and "big on box-big, has 48.00 GB available" in preview
    # the worker's own re-check (no fleet figure) still reads its own machine's RAM
    with pytest.raises(exports.ExportError, match=r"this machine has 0\.10 GB"):
        exports.check_memory(version, fmt, version_base(version), [])


def test_a_worker_beside_the_studio_counts_with_this_machines_figure(version):
    add_worker("here", socket.gethostname(), 48)  # its registered figure is older than psutil's now
    with pytest.raises(SpecError, match=r"this machine has 0\.10 GB available \(free RAM\)"):
        check(version)
    add_worker("far", "box-far", 0.05)  # one elsewhere with less than this machine: this machine's figure wins
    with pytest.raises(SpecError, match=r"this machine \(a worker runs here too\) has 0\.10 GB"):
        check(version)


def version_base(version_id: int):
    from pathlib import Path

    with session_scope() as db:
        return Path(db.get(ModelVersion, version_id).base_model.path)


def test_registration_and_heartbeat_record_ram_and_only_the_training_worker_reaps(backend, monkeypatch):
    from worker import consumer

    reaped = []
    monkeypatch.setattr(consumer, "reap_once", lambda: reaped.append(1) or [])
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=32 * GB, available=20 * GB))
    consumer.register([], "interactive")
    with session_scope() as db:
        row = db.get(Worker, consumer.WORKER_ID)
        assert (row.ram_total, row.ram_available) == (32 * GB, 20 * GB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=32 * GB, available=7 * GB))
    consumer.heartbeat(reap=False)
    with session_scope() as db:
        assert db.get(Worker, consumer.WORKER_ID).ram_available == 7 * GB
    assert reaped == []
    consumer.heartbeat(reap=True)
    assert reaped == [1]

    # which kind reaps: `studio serve` starts the training worker (default queues) and one on "interactive"
    assert consumer.runs_reaper(None) and consumer.runs_reaper(routing.default_queue())
    assert consumer.runs_reaper(f"{routing.default_queue()},interactive")
    assert not consumer.runs_reaper("interactive")
    started = []

    class Thread:  # the housekeeping thread _on_ready starts, recorded instead of run
        def __init__(self, target, args=(), **_):
            started.append(args)

        def start(self):
            pass

    monkeypatch.setattr(consumer.threading, "Thread", Thread)
    for queues in ("interactive", None):
        monkeypatch.setitem(consumer._started, "gpus", [])
        monkeypatch.setitem(consumer._started, "queues", queues)
        consumer._on_ready()
    assert started == [(False,), (True,)]


def test_a_forged_safetensors_header_is_refused_not_read(tmp_path):
    """A header length past the file (a broken or forged file) is an ExportError, never a read of that size."""
    from studio.exports import ExportError, safetensors_params

    (tmp_path / "adapter_model.safetensors").write_bytes(b"x" * 100)  # "xxxxxxxx" reads as an exabyte header
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        safetensors_params(tmp_path)
