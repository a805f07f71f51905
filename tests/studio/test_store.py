"""The shared artifact store: a no-op on STUDIO_HOME by default, an fsspec URL as an option. A worker whose
STUDIO_HOME is not the studio's trains from a data set it only gets through the store (a second local
folder behind a file:// URL), and its version's artifacts land back in the store."""
from pathlib import Path

import pytest

from tests.faults.conftest import studio_env


@pytest.fixture
def home(tmp_path, monkeypatch):
    from studio.settings import get_settings

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STUDIO_STORE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_without_a_store_url_the_home_is_the_store(home):
    from studio import store

    (home / "datasets" / "ab").mkdir(parents=True)
    (home / "datasets" / "ab" / "rows.jsonl").write_text("{}\n")
    store.put("datasets/ab")  # nothing to copy anywhere
    assert store.local_dataset("datasets/ab/rows.jsonl") == home / "datasets" / "ab" / "rows.jsonl"
    assert store.exists("datasets/ab") and not store.exists("datasets/cd")
    assert store.local_model("/somewhere/models/tiny") == "/somewhere/models/tiny"
    assert not (home / "cache").exists()


def test_a_file_url_store_publishes_and_fetches(home, tmp_path, monkeypatch):
    from studio import store
    from studio.settings import get_settings

    remote = tmp_path / "remote"
    monkeypatch.setenv("STUDIO_STORE_URL", f"file://{remote}")
    get_settings.cache_clear()
    (home / "versions" / "job-1" / "adapter").mkdir(parents=True)
    (home / "versions" / "job-1" / "adapter" / "a.safetensors").write_bytes(b"weights")
    (home / "versions" / "job-1" / "adapter" / "sub").mkdir()
    (home / "versions" / "job-1" / "adapter" / "sub" / "b.json").write_text("{}")
    store.put("versions/job-1/adapter")
    assert (remote / "versions" / "job-1" / "adapter" / "sub" / "b.json").read_text() == "{}"

    other = tmp_path / "other-home"  # another machine: same store, its own home
    monkeypatch.setenv("STUDIO_HOME", str(other))
    get_settings.cache_clear()
    got = store.local("versions/job-1/adapter")
    assert got == other / "cache" / "store" / "versions" / "job-1" / "adapter"
    assert (got / "a.safetensors").read_bytes() == b"weights" and (got / "sub" / "b.json").exists()
    assert store.local("versions/job-1/adapter") == got  # cached: fetched once
    with pytest.raises(store.StoreError, match="neither under .* nor in the store"):
        store.local("versions/job-2/adapter")
    with pytest.raises(store.StoreError, match="not a relative path inside the store"):
        store.put("../etc/passwd")


def test_a_worker_with_its_own_home_trains_from_the_store(tmp_path, monkeypatch, tiny_llama_dir):
    from studio import store

    remote = tmp_path / "remote"
    with studio_env("embedded", tmp_path, monkeypatch, tiny_llama_dir, STUDIO_STORE_URL=f"file://{remote}") as s:
        from models_db import Dataset, session_scope

        with session_scope() as db:
            rows = db.get(Dataset, s.dataset_id).path
        assert (remote / rows).is_file()  # registering the data set published it

        worker_home = tmp_path / "worker-home"  # a second machine: its own disk, the same database and broker
        s.start_worker(STUDIO_HOME=str(worker_home), STUDIO_DATABASE_URL=f"sqlite:///{s.home.resolve()}/studio.db",
                       STUDIO_BROKER_URL=f"sqla+sqlite:///{s.home.resolve()}/broker.db")
        job_id = s.submit(max_steps=4, save_steps=2)
        job = s.wait_state(job_id, "succeeded", "failed", timeout=240)
        log = (worker_home / "jobs" / str(job_id) / "log.txt").read_text()
        assert job.state == "succeeded", (job.error, log[-3000:])

        assert (worker_home / "cache" / "store" / rows).is_file()  # it had the data only through the store
        assert not (worker_home / rows).exists()
        adapter = f"versions/job-{job_id}/adapter"
        assert (remote / adapter / "adapter_model.safetensors").is_file()  # the version landed in the store
        assert not (s.home / adapter).exists()  # not on the studio's disk, which the worker never saw
        fetched = store.local(adapter)  # the studio (this process) gets it from the store
        assert fetched == Path(s.home).resolve() / "cache" / "store" / adapter
        assert (fetched / "adapter_model.safetensors").read_bytes() == \
            (worker_home / adapter / "adapter_model.safetensors").read_bytes()
