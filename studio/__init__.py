"""FineTune Studio: the UI process, the CLI, dataset intake and the method advisor (no torch here)."""

from studio import settings as _settings  # noqa: F401  registers the database URL with models_db
