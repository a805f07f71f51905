"""Migrations run once, in the studio at startup: a worker never migrates; it waits for the schema (saying
so in its log) or gives up with a message that says to start the studio first."""
import os
import socket
import subprocess
import sys

import pytest

from models_db.schema_wait import database_revision, expected_revision
from tests.backends import backend_env
from tests.cli import stop_process, wait_until


@pytest.fixture(params=["embedded", "services"])
def fresh(request, tmp_path):
    """The STUDIO_* environment of a database nobody has migrated yet."""
    with backend_env(request.param, tmp_path / "home") as env:
        env = {**os.environ, **env}
        env.pop("STUDIO_CPU_PROCESSES", None)
        yield env


def db_url(env) -> str:
    return env.get("STUDIO_DATABASE_URL") or f"sqlite:///{os.path.realpath(env['STUDIO_HOME'])}/studio.db"


def start(env, *args, log):
    return subprocess.Popen([sys.executable, "-m", "studio.cli", *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def test_a_worker_waits_for_the_studio_to_migrate_and_never_migrates_itself(fresh, tmp_path):
    from models_db.migrate import upgrade

    url = db_url(fresh)
    with open(tmp_path / "worker.log", "wb") as log:
        worker = start({**fresh, "STUDIO_SCHEMA_WAIT_SECONDS": "120"}, "worker", log=log)
    try:
        wait_until(lambda: "waiting for the database schema" in (tmp_path / "worker.log").read_text(), timeout=60)
        assert worker.poll() is None and database_revision(url) is None  # it waits; it did not migrate
        upgrade(url)  # what `studio serve` does at startup
        wait_until(lambda: "ready with" in (tmp_path / "worker.log").read_text() or worker.poll() is not None,
                   timeout=60)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        stop_process(worker)


def test_a_worker_gives_up_saying_to_start_the_studio_first(fresh, tmp_path):
    p = subprocess.run([sys.executable, "-m", "studio.cli", "worker"], env={**fresh, "STUDIO_SCHEMA_WAIT_SECONDS": "1"}, check=False,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"this worker needs {expected_revision()}" in p.stderr and "Start the studio first" in p.stderr
    assert "Traceback" not in p.stderr
    assert database_revision(db_url(fresh)) is None


def test_serve_migrates_at_startup(fresh, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "serve.log", "wb") as log:
        studio = start(fresh, "serve", "--no-worker", "--port", str(port), log=log)
    try:
        wait_until(lambda: database_revision(db_url(fresh)) == expected_revision() or studio.poll() is not None,
                   timeout=120)
        assert database_revision(db_url(fresh)) == expected_revision(), (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        stop_process(studio)
