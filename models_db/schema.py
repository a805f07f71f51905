"""Typed schema. Every dataset, job, metric and model version, with its lineage."""
from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, MetaData, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names from the first migration on, so later migrations can alter them (Alembic).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict: JSON, list: JSON}


class _State(str, enum.Enum):
    """A state stored as its text: ``str()`` and f-strings give the text itself on every Python."""

    def __str__(self) -> str:
        return self.value


class JobState(_State):
    """Where a job is; models_db/jobs.py's TRANSITIONS says which moves are allowed."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"  # a sweep's trial its pruner stopped early (studio/sweeps/): finished, not failed

    @classmethod
    def finished(cls) -> set[str]:
        return {cls.succeeded.value, cls.failed.value, cls.cancelled.value, cls.pruned.value}


class GenerationState(_State):
    """Where a playground / side-by-side generation is (a row of its own, not a job)."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"

    @classmethod
    def finished(cls) -> set[str]:
        return {cls.done.value, cls.failed.value}


class BaseModel(Base):
    """A base model in the model store (safetensors + config + tokenizer)."""

    __tablename__ = "base_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(400))  # where it was imported from
    architecture: Mapped[str] = mapped_column(String(100), default="")
    params_total: Mapped[int] = mapped_column(default=0)
    config: Mapped[dict] = mapped_column(default=dict)
    trust_remote_code: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: the embedded single user
    shared: Mapped[bool] = mapped_column(default=True, server_default="1")  # visible to the owner's team


class Dataset(Base):
    """An immutable dataset version, identified by content hash (+ format, mapping and split)."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(32))
    file_type: Mapped[str] = mapped_column(String(16), default="")
    original_name: Mapped[str] = mapped_column(String(400), default="")
    path: Mapped[str] = mapped_column(Text)  # canonical JSONL of the training rows
    rows: Mapped[int] = mapped_column(default=0)  # training rows (in `path`)
    dropped_rows: Mapped[int] = mapped_column(default=0)
    mapping: Mapped[dict] = mapped_column(default=dict)
    stats: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the version this one was derived from (same upload, another mapping or split)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    source_digest: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)
    source_path: Mapped[str] = mapped_column(Text, default="", server_default="")  # the upload, kept for re-mapping
    # the stored train/eval split (studio.datasets.split): {} none, {"kind": "ratio"|"file", ...}
    split: Mapped[dict] = mapped_column(default=dict, server_default="{}")
    eval_rows: Mapped[int] = mapped_column(default=0, server_default="0")  # rows in eval.jsonl beside `path`
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shared: Mapped[bool] = mapped_column(default=False, server_default="0")

    parent: Mapped[Dataset | None] = relationship(remote_side=[id])


class Job(Base):
    """A unit of worker work (train, export). The database, not the broker, is the authority."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="train")
    state: Mapped[str] = mapped_column(String(16), default=JobState.queued.value, index=True)
    config: Mapped[dict] = mapped_column(default=dict)  # the full typed config (studio.jobspec)
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("base_models.id"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True)  # versions point back at jobs: break the cycle
    )
    # claiming and leases: a claim bumps `fence`; writes carrying an older fence are refused
    attempt: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    fence: Mapped[int] = mapped_column(default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # queue order: a job with a predecessor is claimed only once that job has finished
    after_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    # attempts: the step the current one resumed from, and one entry per attempt (see models_db.jobs)
    resume_step: Mapped[int] = mapped_column(default=0, server_default="0")
    history: Mapped[list] = mapped_column(default=list, server_default="[]")
    # progress, as the browser shows it
    step: Mapped[int] = mapped_column(default=0)
    max_steps: Mapped[int] = mapped_column(default=0)
    message: Mapped[str] = mapped_column(Text, default="")  # what it is doing now
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict] = mapped_column(default=dict)
    # routing: the broker queue its task goes to (re-sends use it too); None: the default queue
    queue: Mapped[str | None] = mapped_column(String(100))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shared: Mapped[bool] = mapped_column(default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()

    base_model: Mapped[BaseModel | None] = relationship()
    dataset: Mapped[Dataset | None] = relationship()


class Sweep(Base):
    """A hyper-parameter sweep (studio/sweeps/): each trial is a training job whose config carries ``sweep_id``;
    the search itself (trials, their params and values) is an Optuna study in Optuna's own tables beside these."""

    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    method: Mapped[str] = mapped_column(String(32))
    objective: Mapped[str | None] = mapped_column(String(32))
    space: Mapped[dict] = mapped_column(default=dict)  # key -> {"kind", "low", "high", "choices"}
    settings: Mapped[dict] = mapped_column(default=dict)  # the fixed --set values every trial gets
    metric: Mapped[str] = mapped_column(String(64), default="eval_loss")
    direction: Mapped[str] = mapped_column(String(8), default="minimize")
    sampler: Mapped[str] = mapped_column(String(16), default="tpe")
    pruner: Mapped[str] = mapped_column(String(16), default="median")
    trials: Mapped[int] = mapped_column(default=1)  # how many trials are wanted
    parallel: Mapped[int] = mapped_column(default=0)  # at most this many at once (0: as many as free workers)
    seed: Mapped[dict] = mapped_column(default=dict)  # the first trial's params and where they came from
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | done | cancelled
    message: Mapped[str] = mapped_column(Text, default="")
    # one process advances a sweep at a time: a short lease, taken with a conditional UPDATE
    lock_until: Mapped[datetime | None] = mapped_column()
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shared: Mapped[bool] = mapped_column(default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class Metric(Base):
    """One logged value of a job (loss, eval_loss, learning_rate, tokens_per_s, ...)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_id_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(default=1)
    step: Mapped[int] = mapped_column()
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column()
    time: Mapped[datetime] = mapped_column(default=utcnow)


class GrpoSample(Base):
    """A completion a GRPO job sampled at a logging step, with its reference answer and the reward each reward
    function gave it (worker/recipes/grpo.py writes a few per logging step; the Jobs tab shows them)."""

    __tablename__ = "grpo_samples"
    __table_args__ = (Index("ix_grpo_samples_job_id_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(default=1)
    step: Mapped[int] = mapped_column()
    prompt: Mapped[str] = mapped_column(Text)  # the last user turn
    completion: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text, default="")  # the row's final answer
    rewards: Mapped[dict] = mapped_column(default=dict)  # reward name -> its value for this completion
    reward: Mapped[float | None] = mapped_column()  # the weighted sum GRPO learns from
    time: Mapped[datetime] = mapped_column(default=utcnow)


class MemoryMeasurement(Base):
    """The memory estimator's estimate beside what a training job or a measured pre-flight really used
    (worker/memory_meter.py), per part where the process can tell them apart: ``measured_parts`` holds the
    runtime before the model loaded, the memory held once training was about to start (runtime + weights) and
    the peak of the steps; ``estimate_parts`` the estimator's parts in GiB (studio/advisor/memory.py)."""

    __tablename__ = "memory_measurements"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | preflight
    method: Mapped[str] = mapped_column(String(32))
    objective: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(8))  # cpu | cuda
    measured_kind: Mapped[str] = mapped_column(String(32))  # cpu_rss | cuda_allocated
    measured_gb: Mapped[float] = mapped_column()
    estimate_gb: Mapped[float | None] = mapped_column()  # comparable with measured_gb (total on CPU, live on CUDA)
    measured_parts: Mapped[dict] = mapped_column(default=dict)
    estimate_parts: Mapped[dict] = mapped_column(default=dict)
    settings: Mapped[dict] = mapped_column(default=dict)  # micro_batch, seq_len, grad_ckpt, optimizer, precision
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A trained model version with its lineage: base model, parent version, dataset, job."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    method: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict] = mapped_column(default=dict)
    metrics: Mapped[dict] = mapped_column(default=dict)
    artifacts: Mapped[dict] = mapped_column(default=dict)  # name -> path under the artifact root
    notes: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list] = mapped_column(default=list, server_default="[]")  # a person's labels: "best", "prod"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shared: Mapped[bool] = mapped_column(default=False, server_default="0")

    base_model: Mapped[BaseModel] = relationship()
    dataset: Mapped[Dataset | None] = relationship()
    # the lineage's one source of truth: VersionParent rows, first parent first (loaded with the version)
    parent_links: Mapped[list[VersionParent]] = relationship(
        foreign_keys="VersionParent.version_id", order_by="(VersionParent.position, VersionParent.parent_id)",
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)

    @property
    def parent_id(self) -> int | None:
        """The version it was trained from (a combined version: its first parent); None for one trained from
        its base."""
        return self.parent_links[0].parent_id if self.parent_links else None

    @parent_id.setter
    def parent_id(self, parent_id: int | None) -> None:
        """Record a single parent (a continued version); :attr:`parents` takes several with weights."""
        self.parents = [(parent_id, 1.0)] if parent_id is not None else []

    @property
    def parents(self) -> list[tuple[int, float]]:
        """Every parent with its weight, first parent first."""
        return [(link.parent_id, link.weight) for link in self.parent_links]

    @parents.setter
    def parents(self, parents) -> None:
        self.parent_links = [VersionParent(parent_id=int(p), weight=float(w), position=i)
                             for i, (p, w) in enumerate(parents)]

    @property
    def parent(self) -> ModelVersion | None:
        """The first parent's row (needs the version's session)."""
        from sqlalchemy.orm import object_session

        session = object_session(self)
        return session.get(ModelVersion, self.parent_id) if session and self.parent_id is not None else None


class Worker(Base):
    """A registered worker process and its GPUs; `last_heartbeat` tells whether it is alive."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    gpus: Mapped[list] = mapped_column(default=list)  # [{"index","name","memory_gb"}]
    queues: Mapped[str] = mapped_column(String(200), default="gpu")
    # the machine's RAM in bytes (psutil): total at registration, available at each heartbeat; the studio
    # checks a merged export against the workers that can take it (studio/exports.py)
    ram_total: Mapped[int | None] = mapped_column(BigInteger)
    ram_available: Mapped[int | None] = mapped_column(BigInteger)
    current_job_id: Mapped[int | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class User(Base):
    """An account (production mode). Embedded mode on 127.0.0.1 runs without accounts."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16), default="member")  # admin | member
    team: Mapped[str] = mapped_column(String(100), default="", server_default="")
    disabled: Mapped[bool] = mapped_column(default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginSession(Base):
    """A login to the web studio (accounts mode), behind Gradio's token mapping (studio/login_sessions.py):
    the sha256 of the session cookie's token, never the token, so a database dump logs nobody in. It
    outlives a restart of `studio serve` until it expires or its owner logs out."""

    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class VersionParent(Base):
    """Every parent of a version with its weight: one row for a continued version, several for a
    combined one (peft's weighted adapter combination). The lineage lives here and only here;
    ``ModelVersion.parent_id`` reads the first (``position`` 0)."""

    __tablename__ = "version_parents"
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True, index=True)
    weight: Mapped[float] = mapped_column(default=1.0)
    position: Mapped[int] = mapped_column(default=0, server_default="0")  # 0: the first parent


class Evaluation(Base):
    """A version (or a base model: ``version_id`` None, ``base_model_id`` set) evaluated on a dataset version's
    eval split (or its training rows when it has none). One row per model x data set."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("version_id", "dataset_id", name="uq_evaluations_version_dataset"),
                      UniqueConstraint("base_model_id", "dataset_id", name="uq_evaluations_base_dataset"))
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    # set only for a base model's own evaluation (a version's row leaves it None: versions are unique above)
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))  # the evaluate job that produced it
    split: Mapped[str] = mapped_column(String(16), default="eval")  # eval | train (no eval split)
    rows: Mapped[int] = mapped_column(default=0)
    # eval_loss, perplexity | accuracy, f1 | a benchmark's acc, acc_norm or exact_match with their *_stderr
    metrics: Mapped[dict] = mapped_column(default=dict)
    # a benchmark's per-question results: [{"row", "question", "target", "answer", "correct"}] (studio.benchmarks)
    examples: Mapped[list] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BenchmarkPin(Base):
    """A data set pinned as a benchmark for a base model: every new version of that base is evaluated on it,
    with its parent and its base, so forgetting shows (studio/benchmarks.py)."""

    __tablename__ = "benchmark_pins"
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Generation(Base):
    """One prompt run through a version (or the base model: ``version_id`` None) with given settings.

    The playground and the side-by-side compare both go through here: ``cache_key`` (a hash of model,
    prompt and settings) makes the same request reuse its output, and ``output`` grows while the
    interactive worker streams tokens into it."""

    __tablename__ = "generations"
    id: Mapped[int] = mapped_column(primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(Text)  # the user turn, or a JSON list of chat messages
    settings: Mapped[dict] = mapped_column(default=dict)  # max_new_tokens, temperature, top_p, seed, ...
    state: Mapped[str] = mapped_column(String(16), default=GenerationState.queued.value)
    output: Mapped[str] = mapped_column(Text, default="")
    new_tokens: Mapped[int] = mapped_column(default=0)
    ms_per_token: Mapped[float | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PreferenceVote(Base):
    """A person's judgement of two answers to the same prompt (studio/votes.py): A is the answer shown first
    (left, or first in a blind pair's random order), B the other. ``winner`` is ``a`` or ``b`` (a pair for
    DPO: chosen and rejected), ``tie`` or ``bad`` (both bad): counted, no pair. The prompt, the answers and the
    models' labels are copied in, so a vote outlives the generations and versions it judged. Private to
    whoever cast it, like the generations (models_db.access.PRIVATE)."""

    __tablename__ = "preference_votes"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)  # as the generations store it: text, or a JSON conversation
    mode: Mapped[str] = mapped_column(String(16), default="chat")  # chat | messages | raw (studio.generations)
    generation_a_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"))
    generation_b_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"))
    # None: the base model answered (base_*_id), or the version was deleted since (label_* still names it)
    version_a_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"), index=True)
    version_b_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"), index=True)
    base_a_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    base_b_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    label_a: Mapped[str] = mapped_column(String(300), default="")
    label_b: Mapped[str] = mapped_column(String(300), default="")
    answer_a: Mapped[str] = mapped_column(Text)
    answer_b: Mapped[str] = mapped_column(Text)
    winner: Mapped[str] = mapped_column(String(8))  # a | b | tie | bad
    blind: Mapped[bool] = mapped_column(default=False)  # the versions were hidden until the vote was cast
    source: Mapped[str] = mapped_column(String(16), default="side_by_side")  # side_by_side | playground | cli
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Failed web logins of one account name or one client address (studio/login_throttle.py): how many,
    when the next attempt may come (exponential back-off) and until when it is locked. In the database so
    every studio process agrees and a restart forgets nothing; ``version`` makes each update a
    compare-and-set, so parallel attempts cannot all slip through one check."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # account:NAME | address:IP
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=0)


class AuditEvent(Base):
    """Who did what, for admins (studio/audit.py): logins (ok, failed, refused, locked) and every
    account, trust, share and delete action. Append-only; ``actor`` is an account name, or ``(local: USER)``
    for the embedded user and the CLI without STUDIO_USER."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)  # login.ok, user.add, share, version.delete…
    target: Mapped[str] = mapped_column(String(200), default="")  # user bob, version 7, …
    address: Mapped[str | None] = mapped_column(String(64))  # the client address (web requests)
    detail: Mapped[str] = mapped_column(Text, default="")
