"""Engine and session factory. SQLite runs in WAL mode with a busy timeout and BEGIN IMMEDIATE."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, Engine] = {}
_default_url: Callable[[], str] | None = None


def use_default_url(provider: Callable[[], str]) -> None:
    """Name where the database is when a caller gives no URL (the studio's settings register theirs).

    A callable, not a string: settings read the environment, which tests and the CLI change at run time.
    models_db imports nothing of the studio's; the layer above tells it its URL.
    """
    global _default_url
    _default_url = provider


def default_url() -> str:
    """The URL the registered provider gives; a clear error when no layer above registered one."""
    if _default_url is None:
        raise RuntimeError("models_db has no database URL: pass url=... or import studio.settings, which "
                           "registers the studio's (STUDIO_DB_URL or the embedded SQLite file)")
    return _default_url()


def _sqlite_tuning(engine: Engine) -> None:
    # The UI, the worker and the training child all write at once. WAL lets readers run beside the
    # writer; BEGIN IMMEDIATE takes the write lock up front, so a read transaction never has to be
    # upgraded mid-way (the upgrade is what fails with "database is locked" without waiting).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process (default: :func:`default_url`)."""
    url = url or default_url()
    if url not in _engines:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_tuning(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
    return _engines[url]


def reset_engine() -> None:
    """Dispose every engine (tests, and child processes after fork)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A short transaction: commit on success, roll back on error."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    with factory() as session:
        with session.begin():
            yield session
