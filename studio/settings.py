"""Settings from the environment (and a `.env`), all prefixed ``STUDIO_``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from models_db.engine import use_default_url


class Settings(BaseSettings):
    """Everything configurable about a studio install. See README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    home: Path = Path("studio_data")
    database_url: str | None = None  # default: SQLite under home
    broker_url: str | None = None  # default: kombu's SQLAlchemy transport on SQLite under home
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: int = 2048
    lease_seconds: int = 60  # a running job's lease; the reaper re-queues it once expired
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    poll_seconds: float = 1.5  # how often the browser refreshes a running job
    worker_queues: str = "gpu"  # the first is the default queue; GPU workers add memory tiers (studio/routing.py)
    # the queue of playground / side-by-side generations (worker/generate.py): its own worker, so a chat
    # never waits behind a training job; a generation untouched this long counts as lost
    interactive_queue: str = "interactive"
    generation_stale_seconds: float = 60
    resend_seconds: float = 120  # a queued job untouched this long (and a worker idle) counts its message lost
    # kombu's Redis transport options as JSON, e.g. {"visibility_timeout": 2} in the fault tests
    broker_transport_options: dict = {}
    # A worker without GPUs that stands in N CPU processes (gloo) for a job's GPUs: tests the multi-GPU
    # launch on a CPU machine (worker/launch_plan.py). 0: off, a worker offers the GPUs it has.
    cpu_processes: int = 0
    # how long a starting worker waits for the studio to migrate the database (models_db/schema_wait.py)
    schema_wait_seconds: float = 300
    # The shared artifact store (studio/store.py): an fsspec URL such as s3://bucket/prefix (keys from the
    # standard AWS_* variables) or file:///mnt/shared; unset, STUDIO_HOME itself is the store.
    store_url: str | None = None
    # The memory a merged export may use (GB); unset: the machine's available RAM (studio/exports.py).
    export_memory_gb: float | None = None
    # llama.cpp's source tree for GGUF exports (convert_hf_to_gguf.py, gguf-py, and build/bin/llama-quantize once
    # built): unset, the one `python -m worker llama-cpp` unpacks from llama-cpp-python's sdist (worker/gguf.py).
    llama_cpp_dir: Path | None = None
    # How long a login to the web studio lasts (hours); sessions are kept in the database across restarts.
    login_hours: float = 168
    # Failed web logins (studio/login_throttle.py): an account locks for this long after this many failures
    # in a row (an address after five times as many); before that, each failure past the third doubles the
    # wait before the next attempt (1 s, 2 s, 4 s … 60 s).
    login_lock_minutes: float = 15
    login_lock_after: int = 10
    # Served behind TLS (a reverse proxy that terminates HTTPS): the login cookie is marked Secure, so a
    # browser never sends it over plain HTTP.
    behind_tls: bool = False
    # Experiment trackers (worker/tracking.py, docs/tracking.md): each training job is also a run there. MLflow: a
    # tracking URI (sqlite:///ABSOLUTE/PATH.db, or http(s)://HOST:PORT of an `mlflow server`), its
    # experiment, and where people open its UI (for the job page's link when the URI is a local store).
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "finetune-studio"
    mlflow_ui_url: str | None = None
    # Weights & Biases: the project (and team); WANDB_MODE=offline keeps runs on disk for `wandb sync`.
    wandb_project: str | None = None
    wandb_entity: str | None = None
    # How long the up-front check waits for a remote tracker before the job trains without it (seconds).
    tracker_timeout_seconds: float = 3.0

    @property
    def home_abs(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_abs / 'studio.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home_abs / 'broker.db'}"

    def path(self, *parts: str) -> Path:
        """A folder under the artifact root, created on first use."""
        p = self.home_abs.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after changing env)."""
    s = Settings()
    s.home_abs.mkdir(parents=True, exist_ok=True)
    return s


def _database_url() -> str:
    return get_settings().db_url


# models_db imports nothing of ours; it asks this for its URL when a caller names none
use_default_url(_database_url)
