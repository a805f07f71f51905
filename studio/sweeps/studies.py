"""The Optuna side of a sweep: its RDB storage on the studio's own database (one per URL per process), the
sweep's study with its sampler and pruner, and the lookup of a trial's storage id.
"""
from __future__ import annotations

import threading

from models_db import Sweep
from studio.sweeps.space import Dim, SweepError

PRUNE_AFTER_TRIALS = 2  # the median pruner compares with at least this many finished trials

_storages: dict = {}
_storage_lock = threading.Lock()


def storage(url: str | None = None):
    """Optuna's RDB storage on the studio's database (one per URL per process). Optuna creates its own tables
    (studies, trials, ...) beside the studio's on first use; the studio's migrations own ``alembic_version``,
    so Optuna's alembic check is skipped and its schema version is checked here instead."""
    import optuna
    from optuna.storages._rdb import models as optuna_models

    from models_db.engine import _sqlite_tuning
    from studio.settings import get_settings

    url = url or get_settings().db_url
    with _storage_lock:
        if url in _storages:
            return _storages[url]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sqlite = url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 30, "check_same_thread": False}} if sqlite else {"pool_pre_ping": True}
        st = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)
        if sqlite:  # the studio's WAL, busy timeout and BEGIN IMMEDIATE (models_db/engine.py) for Optuna's writes
            _sqlite_tuning(st.engine)
            st.engine.dispose()
        with st.engine.connect() as conn:
            from sqlalchemy import text

            found = conn.execute(text("SELECT schema_version FROM version_info")).scalar()
        if found is not None and found != optuna_models.SCHEMA_VERSION:
            raise SweepError(f"the sweeps' Optuna tables have schema {found}, but this Optuna expects "
                             f"{optuna_models.SCHEMA_VERSION}: install the optuna version requirements.lock pins")
        _storages[url] = st
        return st


def optuna_tables() -> set[str]:
    """The names of Optuna's own tables (not the studio's migrations' business)."""
    from optuna.storages._rdb import models as optuna_models

    return set(optuna_models.BaseModel.metadata.tables)


def reset_storages() -> None:
    """Forget the cached storages (tests simulating a restart; a process after fork)."""
    with _storage_lock:
        for st in _storages.values():
            st.engine.dispose()
        _storages.clear()


def _sampler(sweep: Sweep, n_trials: int):
    import optuna

    seed = sweep.id * 1000 + n_trials  # a fresh sampler per step: its random draws must not repeat
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        space = {k: Dim.from_json(k, d).grid() for k, d in sweep.space.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    # few trials: TPE models the results after a quarter of them (at least 2) instead of its default 10
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, sweep.trials // 4)))


def _pruner(sweep: Sweep):
    import optuna

    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=0)


def study(sweep: Sweep, n_trials: int = 0):
    """The sweep's Optuna study (created on first use: idempotent)."""
    import optuna

    return optuna.create_study(study_name=sweep.study_name, storage=storage(), load_if_exists=True,
                               direction=sweep.direction, sampler=_sampler(sweep, n_trials), pruner=_pruner(sweep))


def _trial_id(sweep: Sweep, number: int) -> int:
    """Optuna's id of the sweep's trial ``number`` (its storage's key)."""
    st = storage()
    return st.get_trial_id_from_study_id_trial_number(st.get_study_id_from_name(sweep.study_name), number)


def _dims(sweep: Sweep) -> dict[str, Dim]:
    return {k: Dim.from_json(k, d) for k, d in sweep.space.items()}
