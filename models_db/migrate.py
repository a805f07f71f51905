"""Alembic migrations, configured in code so `studio db upgrade` works from any directory."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (default: the registered default URL) up to ``revision``."""
    from models_db.engine import default_url

    command.upgrade(alembic_config(url or default_url()), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from models_db.engine import get_engine

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
