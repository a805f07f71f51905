"""``python -m worker.health``: exit 0 when a worker on this host heartbeats, 1 otherwise (compose's
health check of a worker container; one worker per container, so "this host" is that worker).

A worker's housekeeping thread updates its row every ``STUDIO_HEARTBEAT_SECONDS``; a row older than a
lease means its process hangs or is gone."""
from __future__ import annotations

import socket
import sys
from datetime import timedelta

from sqlalchemy import func, select


def newest_heartbeat_age(host: str) -> float | None:
    """Seconds since a worker on ``host`` last heartbeat, or None when none ever registered."""
    from models_db import Worker, session_scope
    from models_db.schema import utcnow

    with session_scope() as db:
        last = db.scalar(select(func.max(Worker.last_heartbeat)).where(Worker.host == host))
        if last is None:
            return None
        return (utcnow() - last.replace(tzinfo=None)) / timedelta(seconds=1)  # both naive UTC


def main() -> int:
    from studio.settings import get_settings

    host, s = socket.gethostname(), get_settings()
    try:
        age = newest_heartbeat_age(host)
    except Exception as e:  # noqa: BLE001 - unhealthy, with the reason in the health log
        print(f"unhealthy: cannot read the workers table: {e}", file=sys.stderr)
        return 1
    limit = max(s.lease_seconds, 3 * s.heartbeat_seconds)
    if age is None:
        print(f"unhealthy: no worker on {host} has registered yet", file=sys.stderr)
        return 1
    if age > limit:
        print(f"unhealthy: the worker on {host} last heartbeat {age:.0f} s ago (limit {limit:.0f} s)", file=sys.stderr)
        return 1
    print(f"healthy: the worker on {host} heartbeat {age:.0f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
