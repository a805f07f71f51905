"""The migrations build exactly the typed schema, on SQLite and on Postgres."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models_db import get_engine
from models_db.schema import Base


def test_migrations_match_the_schema(backend):
    from studio import sweeps

    sweeps.storage()  # Optuna's own tables beside the studio's (a sweep creates them): Optuna's, not the migrations'
    theirs = sweeps.optuna_tables()
    try:
        with get_engine().connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parents: not (
                kind == "table" and name in theirs)})
            diff = compare_metadata(context, Base.metadata)
    finally:
        sweeps.reset_storages()
    assert diff == [], f"the migrations and models_db/schema.py disagree: {diff}"


def test_lineage_moves_into_version_parents(tmp_path):
    """0007 folds model_versions.parent_id into version_parents: a version continued before those rows
    existed gets its row, a combined version keeps its first parent first, and nothing else changes."""
    from sqlalchemy import create_engine, text

    from models_db import ModelVersion, session_scope
    from models_db import queries as q
    from models_db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0006")
    with create_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO base_models (id, name, path, source, architecture, config, params_total, "
                          "created_at, shared, trust_remote_code) VALUES (1, 'b', 'p', 's', 'a', '{}', 1, '2026-01-01', 0, 0)"))
        for vid, parent in ((1, None), (2, 1), (3, 1), (4, 2), (5, 4)):
            conn.execute(text("INSERT INTO model_versions (id, name, base_model_id, parent_id, method, config, "
                              "metrics, artifacts, notes, tags, created_at, shared) VALUES (:i, :n, 1, :p, 'lora', "
                              "'{}', '{}', '{}', '', '[]', '2026-01-01', 0)"), {"i": vid, "n": f"v{vid}", "p": parent})
        # 4 combined 3 (weight .3) and 2 (first parent, .7); 5 was continued from 4 with its row written
        conn.execute(text("INSERT INTO version_parents (version_id, parent_id, weight) VALUES "
                          "(4, 3, 0.3), (4, 2, 0.7), (5, 4, 1.0)"))
    upgrade(url, "head")
    with session_scope(url) as db:
        assert [(v.id, v.parent_id) for v in db.query(ModelVersion).order_by(ModelVersion.id)] == \
            [(1, None), (2, 1), (3, 1), (4, 2), (5, 4)]
        assert [(p.id, w) for p, w in q.parents(db, 4)] == [(2, 0.7), (3, 0.3)]
        assert [v.id for v in q.children(db, [1])] == [2, 3]
