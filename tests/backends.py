"""Where a test's studio keeps its state: embedded (SQLite + SQLAlchemy broker under a temp home) or
services (real Postgres and Redis from STUDIO_TEST_POSTGRES_URL / STUDIO_TEST_REDIS_URL, isolated by a
fresh schema and a fresh queue name). CI sets both URLs and fails when the services are unreachable."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

PG = os.environ.get("STUDIO_TEST_POSTGRES_URL")
REDIS = os.environ.get("STUDIO_TEST_REDIS_URL")
BACKENDS = ["embedded", "services"]


def _pg_url(schema: str) -> str:
    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def backend_env(kind: str, home: Path):
    """Yield the STUDIO_* environment for a backend; cleans the Postgres schema afterwards."""
    env = {"STUDIO_HOME": str(home), "STUDIO_WORKER_QUEUES": f"q{uuid.uuid4().hex[:8]}",
           "STUDIO_HEARTBEAT_SECONDS": "1", "STUDIO_LEASE_SECONDS": "20"}
    if kind == "embedded":
        yield env
        return
    if not (PG and REDIS):
        pytest.skip("set STUDIO_TEST_POSTGRES_URL and STUDIO_TEST_REDIS_URL to test against real services")
    from sqlalchemy import create_engine, text

    schema = f"t{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    env.update(STUDIO_DATABASE_URL=_pg_url(schema), STUDIO_BROKER_URL=REDIS)
    try:
        yield env
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def in_process(monkeypatch, env: dict):
    """Point this process's settings and engines at ``env`` (and back afterwards)."""
    from models_db import reset_engine
    from studio.settings import get_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    reset_engine()
    try:
        yield get_settings()
    finally:
        reset_engine()
        get_settings.cache_clear()
