"""The experiment trackers' settings, checked without their libraries (torch-free, network only with a short
timeout): is ``STUDIO_MLFLOW_TRACKING_URI`` a URI MLflow can use, and can its store or server be reached; can
Weights & Biases be reached (unless ``WANDB_MODE`` keeps it offline). worker/tracking.py asks before training
and trains without a tracker that fails, saying why; the job page renders the links it notes (job_views)."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

# scheme -> the port a URI without one talks to (MLflow's remote stores; the SQL ones connect directly)
REMOTE_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
USE = "use sqlite:///ABSOLUTE/PATH/mlflow.db (a local store) or http(s)://HOST:PORT (an `mlflow server`)"
WANDB_OFFLINE = ("offline", "dryrun", "disabled")


def mlflow_problem(uri: str, timeout: float) -> str | None:
    """Why MLflow at ``uri`` cannot be used now (malformed, a folder that does not exist, a server that does not
    answer within ``timeout`` seconds), or None. Says which setting and what to do."""
    what = f"STUDIO_MLFLOW_TRACKING_URI={uri!r}"
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.split("+")[0].lower()  # postgresql+psycopg -> postgresql
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            return f"{what} is not a SQLite store path: {USE}"
        return _folder_problem(what, Path(uri[len("sqlite:///"):]).expanduser().parent)
    if scheme == "file":
        return _folder_problem(what, Path(parts.path).parent) if parts.path else f"{what} names no folder: {USE}"
    if scheme in REMOTE_PORTS:
        if not parts.hostname:
            return f"{what} names no host: {USE}"
        try:
            port = parts.port or REMOTE_PORTS[scheme]
        except ValueError:
            return f"{what} has a port that is not a number: {USE}"
        return _reach(what, parts.hostname, port, timeout)
    if scheme == "databricks":
        return None  # Databricks' own profile and client decide; a failure to open the run is reported then
    return f"{what} is not a tracking URI MLflow can use: {USE}"


def wandb_problem(timeout: float) -> str | None:
    """Why Weights & Biases cannot be reached now, or None (always None offline: runs stay on disk)."""
    if os.environ.get("WANDB_MODE", "").lower() in WANDB_OFFLINE:
        return None
    base = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    parts = urlsplit(base)
    if not parts.hostname:
        return f"WANDB_BASE_URL={base!r} names no host"
    problem = _reach(f"W&B at {base}", parts.hostname, parts.port or REMOTE_PORTS.get(parts.scheme, 443), timeout)
    return f"{problem}; WANDB_MODE=offline keeps runs on disk for `wandb sync`" if problem else None


def problems(settings) -> list[str]:
    """What is wrong with the trackers' settings as seen from here (this process's network), one line each, for a
    warning at submit: the job is queued anyway and trains without a tracker its worker cannot reach."""
    timeout = settings.tracker_timeout_seconds
    found = [settings.mlflow_tracking_uri and mlflow_problem(settings.mlflow_tracking_uri, timeout),
             settings.wandb_project and wandb_problem(timeout)]
    return [f"{p}; the job trains without it" for p in found if p]


def mlflow_run_url(uri: str, ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """Where a browser opens the run: the MLflow UI (``STUDIO_MLFLOW_UI_URL``, else an http(s) tracking URI, which
    an `mlflow server` serves the UI at); None for a local store nobody serves."""
    base = ui_url or (uri if urlsplit(uri).scheme in ("http", "https") else None)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def _folder_problem(what: str, folder: Path) -> str | None:
    """The store's folder (MLflow creates the database file or the store folder in it) must exist and be ours."""
    if not folder.is_dir():
        return f"{what}: the folder {folder} does not exist; create it or point at another path"
    if not os.access(folder, os.W_OK):
        return f"{what}: the folder {folder} is not writable by this worker"
    return None


def _reach(what: str, host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"{what} is unreachable ({host}:{port}: {reason} within {timeout:g} s)"
