"""Commands that need torch run in the worker layer's own process (``python -m worker``): the studio never
imports the worker (docs/architecture.md). Arguments go as an argv list, never through a shell."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from studio.cli.common import CliError

WORKER = [sys.executable, "-m", "worker"]


def become_worker(*args: str) -> None:
    """Replace this process with ``python -m worker ARGS`` (same pid: signals reach the worker itself)."""
    sys.stdout.flush(), sys.stderr.flush()
    os.execv(sys.executable, [*WORKER, *args])


def run_in_worker(*args: str) -> dict:
    """Run ``python -m worker ARGS`` and return the JSON object it prints; its progress on stderr shows as it
    happens. A message it wrote for the person becomes this command's error."""
    p = subprocess.run([*WORKER, *args], stdout=subprocess.PIPE, text=True, check=False)
    try:
        result = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict) and "error" in result:
        raise CliError(result["error"])
    if p.returncode or not isinstance(result, dict):
        raise CliError(f"`python -m worker {args[0]}` failed (exit status {p.returncode}); the lines above say why")
    return result
