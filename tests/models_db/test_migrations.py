"""The migrations build exactly the typed schema, on SQLite and on Postgres."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models_db import get_engine
from models_db.schema import Base


def test_migrations_match_the_schema(backend):
    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"the migrations and models_db/schema.py disagree: {diff}"
