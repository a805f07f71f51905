"""Workers never migrate: the studio does, once, at startup (``studio serve``, or ``studio db upgrade``).

Several workers starting together (compose brings them up beside the studio; another machine may join
at any time) would otherwise race each other's ``ALTER TABLE``s. A worker instead waits until the
database is at the revision its code expects, saying so in its log, and gives up after a while with a
message that says what to start."""
from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("studio.worker")


def expected_revision() -> str:
    """The newest migration this code ships (alembic's head)."""
    from alembic.script import ScriptDirectory

    from models_db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def database_revision(url: str) -> str | None:
    """The database's revision; None when it was never migrated or cannot be reached."""
    from models_db.migrate import current_revision

    try:
        return current_revision(url)
    except SQLAlchemyError:
        return None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: say nothing of it
        return "(the configured database)"


def wait_for_schema(url: str, timeout: float, every: float = 2.0) -> str:
    """Return once the database at ``url`` is at the expected revision; raise SystemExit after ``timeout``
    seconds with what to do. Returns the revision."""
    want, said = expected_revision(), ""  # "": nothing said yet (None is an unmigrated database)
    deadline = time.monotonic() + timeout
    while True:
        have = database_revision(url)
        if have == want:
            return have
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"The database {_safe(url)} is at schema revision {have or '(none: never migrated)'} but this "
                f"worker needs {want}. Start the studio first (studio serve, which migrates it at startup) or run "
                "studio db upgrade with the same STUDIO_DATABASE_URL; workers never migrate the database.")
        if have != said:
            log.warning("waiting for the database schema: it is at %s, this worker needs %s; the studio migrates it "
                        "at startup (studio serve or studio db upgrade). Waiting up to %.0f s.",
                        have or "(none)", want, deadline - time.monotonic())
            said = have
        time.sleep(every)
