"""Alembic environment: runs migrations on the URL given by models_db.migrate."""
from alembic import context

from models_db.engine import get_engine
from models_db.schema import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run() -> None:
    engine = get_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
