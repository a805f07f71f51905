"""Settings from the environment (and a `.env`), all prefixed ``STUDIO_``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


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
    worker_queues: str = "gpu"

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
