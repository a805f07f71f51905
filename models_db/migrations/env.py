"""Alembic environment: runs migrations on the URL given by models_db.migrate."""
from alembic import context

from models_db.engine import get_engine
from models_db.schema import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """SQLite alters a table by copying it and dropping the old one; with foreign keys enforced, that drop
    deletes the rows that cascade from it (a version's lineage). SQLite's advice: turn enforcement off around
    the migration, outside any transaction, then check what it would have enforced."""
    raw = connection.connection.dbapi_connection
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def run() -> None:
    engine = get_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, False)
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,  # SQLite alters tables by copy
        )
        try:
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, True)


run()
