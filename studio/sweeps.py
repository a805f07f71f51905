"""Hyper-parameter sweeps: Optuna searches, the queue trains.

A sweep is a row in ``sweeps`` (what to search, on which model and data, for which metric) plus an Optuna study
stored in the studio's own database (Optuna's RDB storage on the same SQLAlchemy URL, in Optuna's own tables), so
it survives a restart of the studio and its workers. Each trial is a normal training job submitted through
``operations.submit_train`` (routing, resume, cancel, lineage and the Jobs tab all apply); its config carries
``sweep_id`` and ``trial_number``.

Ask and tell: :func:`advance` tells Optuna the result of every trial whose job has finished, then asks for as many
new trials as there are free slots (the sweep's ``parallel``, capped by the alive training workers, at least one)
until the wanted number has been asked. It is idempotent and takes a short lease on the sweep row, so the worker's
finishing path and its housekeeping may both call it (worker/job_process.py, worker/consumer.py): a crash anywhere
only delays the next step. A trial job's evaluations feed Optuna's pruner (:class:`TrialReport`, called from the
worker's callback); a pruned trial's job ends ``pruned``.

Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import typing
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import or_, update

from models_db import Dataset, Job, JobState, Sweep, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from models_db.access import acting_as, hidden_reason, viewer_from_user
from models_db.schema import User, utcnow
from studio import methods, objectives
from studio.jobspec import STUDIO, TRAINING, SpecError, build_train_spec

log = logging.getLogger("studio.sweeps")

KINDS = ("loguniform", "uniform", "int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("minimize", "maximize")
MAX_TRIALS = 500
LOCK_SECONDS = 120  # one process advances a sweep at a time; a crashed one's lease runs out
PRUNE_AFTER_TRIALS = 2  # the median pruner compares with at least this many finished trials
RUNNING, DONE, CANCELLED = "running", "done", "cancelled"


class SweepError(SpecError):
    """A sweep's setting is wrong; the message says which and what to change (nothing was queued)."""


class Pruned(Exception):
    """Raised in a trial's training process when Optuna's pruner stops it; its job ends ``pruned``."""


# --- the search space ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dim:
    """One searched setting: ``loguniform``/``uniform``/``int`` between ``low`` and ``high``, or ``choice``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def to_json(self) -> dict:
        return {"kind": self.kind, "low": self.low, "high": self.high, "choices": list(self.choices)}

    @classmethod
    def from_json(cls, key: str, d: dict) -> Dim:
        return cls(key, d["kind"], d.get("low"), d.get("high"), tuple(d.get("choices") or ()))

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def holds(self, value) -> bool:
        """Whether ``value`` (an advised setting) lies in this dimension."""
        if self.kind == "choice":
            return value in self.choices
        try:
            return self.low <= float(value) <= self.high and (self.kind != "int" or float(value).is_integer())
        except (TypeError, ValueError):
            return False

    def grid(self) -> list | None:
        """Its values for a grid search (None: a continuous range has no grid)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return None

    def text(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(str(c) for c in self.choices)}"
        return f"{self.key}={self.kind}:{self.low:g}:{self.high:g}"


def _number(key: str, raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SweepError(f"--space {key}: its {what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SweepError(f"--space {key}: its {what} must be a finite number (got {raw!r})")
    return value


def parse_dim(text: str) -> Dim:
    """``learning_rate=loguniform:1e-5:1e-3``, ``r=choice:4,16``, ``warmup_ratio=uniform:0:0.1``, ``r=int:4:32``."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    kind, _, args = rest.partition(":")
    kind = kind.strip().lower()
    example = "e.g. --space learning_rate=loguniform:1e-5:1e-3 or --space r=choice:4,16"
    if not sep or not key or not kind:
        raise SweepError(f"--space {text!r}: expected KEY=KIND:ARGS, {example}")
    if kind not in KINDS:
        raise SweepError(f"--space {key}: unknown kind {kind!r}; use one of {', '.join(KINDS)} ({example})")
    if kind == "choice":
        choices = tuple(dict.fromkeys(c.strip() for c in args.split(",") if c.strip()))
        if not choices:
            raise SweepError(f"--space {key}: choice needs at least one value, e.g. {key}=choice:4,16")
        return Dim(key, kind, choices=choices)
    parts = args.split(":")
    if len(parts) != 2:
        raise SweepError(f"--space {key}: {kind} needs LOW:HIGH, e.g. {key}={kind}:{'1e-5:1e-3' if kind == 'loguniform' else '4:32' if kind == 'int' else '0:0.1'}")
    low, high = _number(key, parts[0], "low bound"), _number(key, parts[1], "high bound")
    if low >= high:
        raise SweepError(f"--space {key}: the bounds are reversed or equal ({low:g} >= {high:g}); give LOW:HIGH "
                         f"with LOW below HIGH, e.g. {key}={kind}:{min(low, high):g}:{max(low, high):g}")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"--space {key}: loguniform needs a positive low bound (got {low:g}); use uniform for a "
                         "range that starts at 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise SweepError(f"--space {key}: int needs whole-number bounds (got {low:g}:{high:g})")
    return Dim(key, kind, low, high)


def field_type(method: str, objective: str | None, key: str) -> type | None:
    """The scalar type of a training setting, a method parameter or an objective parameter (None: unknown key)."""
    from studio.methods.params import _base_type

    if key in TRAINING:
        return TRAINING[key].type
    if key in STUDIO:
        return STUDIO[key].type
    for params in (methods.get(method).params, objectives.get(objective).params if objective else None):
        if params is not None and key in {f.name for f in dataclasses.fields(params)}:
            return _base_type(typing.get_type_hints(params)[key])[0]
    return None


def check_dim(dim: Dim, *, model_id: int, dataset_id: int, method: str, objective: str | None,
              settings: dict) -> Dim:
    """A dimension checked against the setting it searches, with the same checks as ``--set`` (the key exists,
    the bounds and every choice lie within the field's limits); choices converted to the field's type."""
    try:
        build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings={**settings, dim.key: (
            dim.choices[0] if dim.kind == "choice" else dim.low)}, objective=objective)
    except SpecError as e:
        raise SweepError(f"--space {dim.key}: {e}") from None
    scalar = field_type(method, objective, dim.key)
    if dim.kind in ("uniform", "loguniform") and scalar is not float:
        raise SweepError(f"--space {dim.key}: it is {'a whole number' if scalar is int else f'a {scalar.__name__}'}; "
                         f"search it with int:LOW:HIGH or choice:A,B")
    if dim.kind == "int" and scalar not in (int, float):
        raise SweepError(f"--space {dim.key}: it is a {scalar.__name__}; search it with choice:A,B")
    values = dim.choices if dim.kind == "choice" else (dim.low, dim.high)
    typed = []
    for value in values:
        try:
            spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method,
                                    settings={**settings, dim.key: value}, objective=objective)
        except SpecError as e:
            raise SweepError(f"--space {dim.key}: {value}: {e}") from None
        typed.append(_value_of(spec, dim.key))
    if dim.kind == "choice":
        return replace(dim, choices=tuple(typed))
    return dim


def _value_of(spec, key: str):
    """A key's value in a built spec (training, studio, method or objective part)."""
    for part in (spec.training, spec.method_params, spec.objective_params):
        if key in part:
            return part[key]
    return getattr(spec, key)


# --- the metric -------------------------------------------------------------------------------------------------

def recorded_metrics(objective: str | None, evaluates: bool) -> list[str]:
    """The final figures a training job with this objective records (in its result's ``metrics``)."""
    out = ["train_loss"]
    if evaluates:
        spec = objectives.get(objective) if objective else None
        out += ["eval_loss", "perplexity"] if spec is None or spec.task == "causal_lm" else ["eval_loss"]
        if spec is not None and spec.task == "seq_cls":
            out += ["eval_accuracy", "eval_f1"]
        out += [f"eval_{c}" for c in (spec.curves if spec else ())]
    return list(dict.fromkeys(out))


def default_direction(metric: str) -> str:
    """Losses, perplexity and KL go down; accuracies, F1, rewards and margins go up."""
    return "maximize" if any(w in metric for w in ("accuracy", "f1", "margin", "reward")) else "minimize"


def _evaluates(ds: Dataset, spec) -> bool:
    """Whether the job holds out eval rows (worker/data.py): a stored split, or eval_split of 4 rows or more."""
    return bool(ds.eval_rows) or (spec.eval_split > 0 and ds.rows >= 4)


# --- storage ------------------------------------------------------------------------------------------------------

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


# --- creating a sweep ---------------------------------------------------------------------------------------------

def advised_start(model_id: int, dataset_id: int, method: str, dims: dict[str, Dim]) -> dict:
    """The first trial: the advisor's suggested settings where they lie inside the space (the method's own
    defaults when the advisor recommends another method). Returns {"from", "params"}."""
    advised, source = {}, "advisor"
    try:
        from studio.advisor import advise
        from studio.advisor.sources import studio_inputs

        inputs, _ = studio_inputs(model=str(model_id), dataset=dataset_id)
        advice = advise(inputs)
        if advice.method == method:
            advised = dict(advice.hyperparameters)
        else:
            source = f"{method}'s defaults (the advisor recommends {advice.method})"
    except Exception as e:  # noqa: BLE001 - advice is a seed, never a reason to refuse a sweep
        log.info("no advice to seed the sweep: %s", e)
        source = f"{method}'s defaults"
    spec = methods.get(method)
    fallback = {**{k: knob.default for k, knob in TRAINING.items()}, **dict(spec.default_training),
                **{f.name: f.default for f in dataclasses.fields(spec.params)}}
    params = {}
    for key, dim in dims.items():
        value = advised.get(key, fallback.get(key))
        if value is not None and dim.holds(value):
            params[key] = int(value) if dim.kind == "int" else float(value) if dim.kind != "choice" else value
    return {"from": source, "params": params}


def create(*, model: str | int, dataset_id: int, method: str, space: list[str] | dict[str, Dim], trials: int,
           metric: str = "eval_loss", direction: str | None = None, sampler: str = "tpe", pruner: str = "median",
           parallel: int = 0, settings: dict | None = None, objective: str | None = None,
           seed_from_advisor: bool = True) -> int:
    """Check everything, record the sweep and its study, seed it with the advised settings and queue its first
    trials. Bad input raises SweepError before anything is stored or queued. Returns the sweep's id."""
    settings = dict(settings or {})
    if not isinstance(trials, int) or trials < 1:
        raise SweepError(f"--trials {trials}: a sweep needs at least 1 trial")
    if trials > MAX_TRIALS:
        raise SweepError(f"--trials {trials}: at most {MAX_TRIALS} trials per sweep")
    if sampler not in SAMPLERS:
        raise SweepError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise SweepError(f"--pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    if parallel < 0:
        raise SweepError(f"--parallel {parallel}: give 0 (as many as free workers) or a positive number")
    dims = space if isinstance(space, dict) else {}
    if not isinstance(space, dict):
        for text in space:
            dim = parse_dim(text)
            if dim.key in dims:
                raise SweepError(f"--space {dim.key} is given twice; give each setting once")
            dims[dim.key] = dim
    if not dims:
        raise SweepError("a sweep needs a search space: add --space KEY=KIND:ARGS, e.g. "
                         "--space learning_rate=loguniform:1e-5:1e-3")
    both = sorted(set(dims) & set(settings))
    if both:
        raise SweepError(f"{both[0]} is both searched (--space) and fixed (--set); keep one")
    with session_scope() as db:
        base = q.model_by_ref(db, model)
        if base is None:
            raise SweepError(f"model {model!r} does not exist (studio models list)")
        ds = db.get(Dataset, dataset_id)
        if ds is None:
            raise SweepError(hidden_reason(db, Dataset, dataset_id) or
                             f"dataset {dataset_id} does not exist (studio dataset list)")
        model_id, rows = base.id, ds.rows
        db.expunge(ds)
    fixed = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings=settings,
                             objective=objective)  # the --set values alone (SpecError says what is wrong)
    objective = fixed.objective
    dims = {k: check_dim(d, model_id=model_id, dataset_id=dataset_id, method=method, objective=objective,
                         settings=settings) for k, d in dims.items()}
    recorded = recorded_metrics(objective, _evaluates(ds, fixed))
    if metric not in recorded:
        why = ""
        if metric.startswith("eval_") or metric == "perplexity":
            if not _evaluates(ds, fixed):
                why = (f" Dataset {dataset_id} holds out no eval rows ({rows} rows, eval_split {fixed.eval_split:g}): "
                       "add --set eval_split=0.2, or store a split with the data set.")
        raise SweepError(f"--metric {metric}: a {method} job on dataset {dataset_id} does not record it; it "
                         f"records {', '.join(recorded)}.{why}")
    direction = direction or default_direction(metric)
    if direction not in DIRECTIONS:
        raise SweepError(f"--direction {direction!r}: use minimize or maximize")
    if sampler == "grid":
        continuous = [d.key for d in dims.values() if d.grid() is None]
        if continuous:
            raise SweepError(f"--sampler grid: {continuous[0]} is a continuous range; give it as choice:A,B,C "
                             "(or int:LOW:HIGH) to search a grid")
        points = math.prod(len(d.grid()) for d in dims.values())
        if trials > points:
            raise SweepError(f"--trials {trials}: the grid has only {points} points; ask for at most {points}")
    seed = advised_start(model_id, dataset_id, method, dims) if seed_from_advisor else {"from": "", "params": {}}
    with session_scope() as db:
        row = Sweep(study_name=f"studio-sweep-{uuid.uuid4().hex[:12]}", base_model_id=model_id, dataset_id=dataset_id,
                    method=method, objective=objective, space={k: d.to_json() for k, d in dims.items()},
                    settings=settings, metric=metric, direction=direction, sampler=sampler, pruner=pruner,
                    trials=trials, parallel=parallel, seed=seed, state=RUNNING, message="starting")
        db.add(row)
        db.flush()
        sweep_id = row.id
        db.expunge(row)
    s = study(row)  # after the commit: on SQLite, Optuna's own connection waits for no open transaction of ours
    s.set_user_attr("sweep_id", sweep_id)
    if seed["params"]:
        s.enqueue_trial(seed["params"], user_attrs={"seeded_from": seed["from"]}, skip_if_exists=True)
    advance(sweep_id)
    return sweep_id


# --- advancing ----------------------------------------------------------------------------------------------------

def _lock(sweep_id: int) -> bool:
    now = utcnow()
    with session_scope() as db:
        res = db.execute(update(Sweep).where(Sweep.id == sweep_id, or_(Sweep.lock_until.is_(None),
                                                                       Sweep.lock_until < now))
                         .values(lock_until=now + timedelta(seconds=LOCK_SECONDS)))
        return res.rowcount == 1


def _unlock(sweep_id: int) -> None:
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep_id).values(lock_until=None))


def _owner(db, sweep: Sweep):
    """Who the sweep's trials are submitted as: its owner (a worker acts for nobody), or everyone."""
    user = db.get(User, sweep.owner_id) if sweep.owner_id else None
    return viewer_from_user(user) if user is not None else None


def free_slots(db, sweep: Sweep, in_flight: int) -> int:
    """How many more trials may run now: ``parallel`` (0: as many as alive training workers), capped by the
    alive training workers, at least one (a trial waits in the queue for the first worker to come)."""
    from studio import fleet

    workers = max(len(fleet.alive_job_workers(db)), 1)
    room = min(sweep.parallel, workers) if sweep.parallel else workers
    return max(room - in_flight, 0)


def final_value(job: Job, metric: str) -> float | None:
    """The trial's value: the metric among the job's final figures, else its last recorded point."""
    value = ((job.result or {}).get("metrics") or {}).get(metric)
    if value is None:
        value = (job.result or {}).get(metric)
    if value is None:
        with session_scope() as db:
            _, latest = jobq.latest_metrics(db, job.id)
        value = latest.get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def advance(sweep_id: int) -> bool:
    """One idempotent step of the ask-and-tell loop (see the module docstring). Returns False when another
    process holds the sweep's lease (it does the same work)."""
    if not _lock(sweep_id):
        return False
    try:
        _advance(sweep_id)
    finally:
        _unlock(sweep_id)
    return True


def _advance(sweep_id: int) -> None:
    from optuna.trial import TrialState

    with session_scope() as db:
        sweep = db.get(Sweep, sweep_id)
        if sweep is None:
            return
        db.expunge(sweep)
    trials = study(sweep).get_trials(deepcopy=False)
    s = study(sweep, len(trials))
    in_flight = 0
    for t in trials:
        if t.state not in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if t.state == TrialState.WAITING:
            continue  # an enqueued (advised) trial: asked below
        job_id = t.user_attrs.get("job_id")
        if job_id is None:  # asked, then a crash before its job was recorded: submit it now (idempotent key)
            job_id = _submit(sweep, s, t)
            if job_id is None:
                continue
        with session_scope() as db:
            job = db.get(Job, job_id)
            if job is not None:
                db.expunge(job)
        if job is not None and job.state not in JobState.finished():
            in_flight += 1
            continue
        _tell(s, sweep, t, job)
    if sweep.state == RUNNING:
        asked = len([t for t in trials if t.state != TrialState.WAITING])
        with session_scope() as db:
            slots = min(free_slots(db, sweep, in_flight), sweep.trials - asked)
        for _ in range(max(slots, 0)):
            t = s.ask({k: d.distribution() for k, d in _dims(sweep).items()})
            if _submit(sweep, s, t) is not None:
                in_flight += 1
            asked += 1
        if asked >= sweep.trials and in_flight == 0:
            _close(sweep, DONE)
        else:
            _note(sweep, f"{asked} of {sweep.trials} trials asked, {in_flight} running or queued")
    elif in_flight == 0 and sweep.finished_at is None:
        _close(sweep, sweep.state)


def _submit(sweep: Sweep, s, t) -> int | None:
    """Queue trial ``t`` as a training job (its params over the sweep's fixed settings); returns the job id, or
    None when the combination is refused (the trial is told failed, with the reason)."""
    from optuna.trial import Trial, TrialState

    trial = t if isinstance(t, Trial) else Trial(s, _trial_id(sweep, t.number))
    params = dict(t.params)
    with session_scope() as db:
        viewer = _owner(db, sweep)
    try:
        with acting_as(viewer):
            from studio import operations

            spec = build_train_spec(model_id=sweep.base_model_id, dataset_id=sweep.dataset_id, method=sweep.method,
                                    settings={**sweep.settings, **params}, objective=sweep.objective)
            spec = replace(spec, sweep_id=sweep.id, trial_number=t.number)
            job, _ = operations.submit_train(spec, idempotency_key=f"sweep-{sweep.id}-trial-{t.number}")
            if sweep.shared and not job.shared:
                with session_scope() as db:
                    db.execute(update(Job).where(Job.id == job.id).values(shared=True))
    except SpecError as e:
        trial.set_user_attr("error", str(e))
        s.tell(t.number, state=TrialState.FAIL)
        return None
    trial.set_user_attr("job_id", job.id)
    return job.id


def _tell(s, sweep: Sweep, t, job: Job | None) -> None:
    """Tell Optuna how a finished trial's job ended."""
    from optuna.trial import TrialState

    if job is None:
        s.tell(t.number, state=TrialState.FAIL)
        return
    if job.state == JobState.pruned:
        s.tell(t.number, state=TrialState.PRUNED)
        return
    value = final_value(job, sweep.metric) if job.state == JobState.succeeded else None
    if value is None:
        if job.state == JobState.succeeded:
            storage().set_trial_user_attr(_trial_id(sweep, t.number), "error", f"the job recorded no {sweep.metric}")
        s.tell(t.number, state=TrialState.FAIL)
        return
    s.tell(t.number, value)


def _note(sweep: Sweep, message: str) -> None:
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep.id).values(message=message))


def _close(sweep: Sweep, state: str) -> None:
    best = best_trial(sweep.id)
    text = (f"best: trial {best['number']} with {sweep.metric} {best['value']:.4g}" if best else
            f"no trial recorded {sweep.metric}")
    with session_scope() as db:
        db.execute(update(Sweep).where(Sweep.id == sweep.id).values(state=state, finished_at=utcnow(), message=text))


def advance_open() -> list[int]:
    """Advance every running sweep, and settle cancelled ones (a worker's housekeeping round calls this, so
    a sweep goes on after any crash or restart). Returns the ids advanced."""
    with session_scope() as db:
        ids = [i for (i,) in db.query(Sweep.id).filter(Sweep.finished_at.is_(None)).all()]
    done = []
    for sweep_id in ids:
        try:
            if advance(sweep_id):
                done.append(sweep_id)
        except Exception:  # one sweep's trouble must not stop the others, nor the worker
            log.exception("sweep %s: could not advance", sweep_id)
    return done


def after_job(job_id: int, config: dict | None) -> None:
    """A job finished: when it was a sweep's trial, advance its sweep (the worker's finishing path)."""
    sweep_id = (config or {}).get("sweep_id")
    if not sweep_id:
        return
    try:
        advance(int(sweep_id))
    except Exception:  # the job has ended; the housekeeping round advances the sweep later
        log.exception("sweep %s: could not advance after job %s", sweep_id, job_id)


def cancel(sweep_id: int) -> str:
    """Stop a sweep: no new trials, its queued and running trial jobs cancelled. Returns its state."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        sweep.state = CANCELLED if sweep.state == RUNNING else sweep.state
        state = sweep.state
        jobs = [j.id for j in _trial_jobs(db, sweep_id) if j.state not in JobState.finished()]
    for job_id in jobs:
        with session_scope() as db:
            jobq.request_cancel(db, job_id)
    advance(sweep_id)
    return state


# --- the worker's side: pruning -----------------------------------------------------------------------------------

class TrialReport:
    """A sweep trial's evaluations, reported to its study from the training process (worker/callbacks.py):
    each is an intermediate value; when the pruner says so, :class:`Pruned` ends the job as ``pruned``."""

    def __init__(self, sweep: Sweep, number: int):
        self.sweep, self.number = sweep, number
        self._trial = None

    @classmethod
    def for_config(cls, config: dict | None) -> TrialReport | None:
        """The reporter of a sweep's trial job (None for any other job, or a sweep without an eval metric)."""
        config = config or {}
        if config.get("sweep_id") is None or config.get("trial_number") is None:
            return None
        with session_scope() as db:
            sweep = db.get(Sweep, int(config["sweep_id"]))
            if sweep is None:
                return None
            db.expunge(sweep)
        if not sweep.metric.startswith("eval_") or sweep.pruner == "none":
            return None
        return cls(sweep, int(config["trial_number"]))

    def trial(self):
        if self._trial is None:
            from optuna.trial import Trial

            self._trial = Trial(study(self.sweep), _trial_id(self.sweep, self.number))
        return self._trial

    def evaluated(self, step: int, metrics: dict) -> None:
        """Report the sweep's metric at ``step``; raise :class:`Pruned` when the pruner stops the trial."""
        value = metrics.get(self.sweep.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        try:
            trial = self.trial()
            trial.report(float(value), step)
            prune = trial.should_prune()
        except Exception as e:  # noqa: BLE001 - the study's trouble never fails the training
            log.warning("sweep %s trial %s: could not report step %s: %s", self.sweep.id, self.number, step, e)
            return
        if prune:
            raise Pruned(f"pruned at step {step}: {self.sweep.metric} {value:.4g} is worse than the median of the "
                         f"earlier trials of sweep {self.sweep.id} at this step")


# --- reading ------------------------------------------------------------------------------------------------------

def _get(db, sweep_id: int) -> Sweep:
    sweep = db.get(Sweep, sweep_id)
    if sweep is None:
        raise SweepError(hidden_reason(db, Sweep, sweep_id) or f"sweep {sweep_id} does not exist (studio sweep list)")
    return sweep


def _trial_jobs(db, sweep_id: int) -> list[Job]:
    """The sweep's trial jobs the viewer may see, by their idempotency keys (``sweep-ID-trial-N``)."""
    return list(db.query(Job).filter(Job.idempotency_key.like(f"sweep-{sweep_id}-trial-%")).order_by(Job.id))


def trials_json(sweep: Sweep) -> list[dict]:
    """Each trial: number, params, state (its job's, or Optuna's before it has one), the metric, job and version."""
    from optuna.trial import TrialState

    with session_scope() as db:
        jobs = {j.id: j for j in _trial_jobs(db, sweep.id)}
        for j in jobs.values():
            db.expunge(j)
    out = []
    for t in study(sweep).get_trials(deepcopy=False):
        job = jobs.get(t.user_attrs.get("job_id"))
        if t.user_attrs.get("job_id") is not None and job is None:
            continue  # a job the viewer may not see
        state = job.state if job is not None else {TrialState.WAITING: "waiting", TrialState.FAIL: "failed",
                                                   TrialState.RUNNING: "asking"}.get(t.state, t.state.name.lower())
        value = t.value if t.state == TrialState.COMPLETE else None
        out.append({"number": t.number, "params": dict(t.params), "state": str(state), sweep.metric: value,
                    "value": value, "job_id": job.id if job else None,
                    "version_id": (job.result or {}).get("version_id") if job else None,
                    "step": job.step if job else 0, "max_steps": job.max_steps if job else 0,
                    "error": t.user_attrs.get("error") or (job.error if job else None),
                    "seeded_from": t.user_attrs.get("seeded_from")})
    return out


def _best(sweep: Sweep, trials: list[dict]) -> dict | None:
    done = [t for t in trials if t["value"] is not None]
    if not done:
        return None
    pick = min if sweep.direction == "minimize" else max
    return pick(done, key=lambda t: t["value"])


def best_trial(sweep_id: int) -> dict | None:
    """The finished trial with the best metric (lowest when minimizing), or None."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
    return _best(sweep, trials_json(sweep))


def sweep_json(sweep_id: int) -> dict:
    """The sweep as ``studio sweep show --json`` prints it: settings, ``trials`` and ``best``."""
    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
        base = q.model_by_ref(db, sweep.base_model_id)
        ds = db.get(Dataset, sweep.dataset_id)
        names = (base.name if base else None, ds.name if ds else None)
    trials = trials_json(sweep)
    return {"id": sweep.id, "state": sweep.state, "message": sweep.message, "study": sweep.study_name,
            "model_id": sweep.base_model_id, "model": names[0], "dataset_id": sweep.dataset_id, "dataset": names[1],
            "method": sweep.method, "objective": sweep.objective, "metric": sweep.metric,
            "direction": sweep.direction, "sampler": sweep.sampler, "pruner": sweep.pruner,
            "trials_wanted": sweep.trials, "parallel": sweep.parallel,
            "space": {k: Dim.from_json(k, d).text() for k, d in sweep.space.items()}, "settings": sweep.settings,
            "seed": sweep.seed, "created_at": sweep.created_at.isoformat() if sweep.created_at else None,
            "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
            "trials": trials, "best": _best(sweep, trials)}


def list_sweeps() -> list[dict]:
    """Every sweep the viewer may see, newest first (no trials: ``sweep_json`` has them)."""
    with session_scope() as db:
        rows = db.query(Sweep).order_by(Sweep.id.desc()).limit(200).all()
        return [{"id": r.id, "state": r.state, "method": r.method, "metric": r.metric, "direction": r.direction,
                 "sampler": r.sampler, "trials_wanted": r.trials, "model_id": r.base_model_id,
                 "dataset_id": r.dataset_id, "message": r.message,
                 "space": {k: Dim.from_json(k, d).text() for k, d in r.space.items()}} for r in rows]


def importances(sweep_id: int) -> dict[str, float]:
    """How much each searched setting explains the metric, by Optuna's PED-ANOVA (no scikit-learn needed);
    {} until at least two trials have finished with a value."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    with session_scope() as db:
        sweep = _get(db, sweep_id)
        db.expunge(sweep)
    s = study(sweep)
    complete = [t for t in s.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(s, evaluator=PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        log.info("sweep %s: no importances yet: %s", sweep_id, e)
        return {}


def promote_best(sweep_id: int, tag: str = "best") -> dict:
    """Tag the best trial's version (studio/versions.py tags), keeping its other tags. Returns the best trial."""
    from studio import versions

    best = best_trial(sweep_id)
    if best is None or best.get("version_id") is None:
        raise SweepError(f"sweep {sweep_id} has no finished trial with a version yet: wait for one to succeed")
    tags = versions.parse_tags(tag)
    with session_scope() as db:
        v = versions.get(db, best["version_id"])
        current = list(v.tags or [])
    versions.update(best["version_id"], tags=list(dict.fromkeys([*current, *tags, f"sweep-{sweep_id}"])))
    return best
