"""Failed web logins slow down, then lock: per account name and per client address, kept in the database.

Every login attempt is counted *before* its password is checked, and un-counted when the password proves
right, so parallel attempts cannot all slip through one check. For each key (``account:NAME``,
``address:IP``), after ``n`` counted failures:

- up to ``free`` failures (typos) the next attempt may come at once;
- then it must wait ``FIRST_WAIT * 2**(n - free - 1)`` seconds, at most ``MAX_WAIT`` (exponential back-off);
  an attempt that comes earlier is refused without checking its password, and counts;
- at ``lock_after`` failures the key is locked for ``STUDIO_LOGIN_LOCK_MINUTES``: every attempt is refused
  without checking its password (the right one too) and does not count, so the lock ends when it says.

An account's count starts over after a successful login, an ended lock, or ``FORGET`` without failures; an
address's count only decays (a login with one valid account must not clear an address that guesses at
others). Unknown account names are throttled exactly like real ones (no probing for names). The rows are
updated with a compare-and-set on ``version`` (like job claims), so several studio processes agree; the
studio's clock is the database rows' UTC time of the process (keep the servers' clocks in sync).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from models_db import session_scope
from models_db.schema import LoginThrottle, utcnow
from studio.settings import get_settings

FREE_ACCOUNT, FREE_ADDRESS = 3, 10  # failures before the first wait
FIRST_WAIT, MAX_WAIT = 1.0, 60.0  # seconds
ADDRESS_FACTOR = 5  # an address (several people behind one NAT) locks after 5x the account's failures
FORGET = timedelta(hours=1)  # a count with no failure for this long starts over
CAS_TRIES = 50

clock = utcnow  # the time (naive UTC); tests move it


@dataclass(frozen=True)
class Policy:
    """How one kind of key is throttled."""
    kind: str  # account | address
    free: int
    lock_after: int

    def wait(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` counted failures."""
        if failures <= self.free:
            return 0.0
        return min(FIRST_WAIT * 2 ** (failures - self.free - 1), MAX_WAIT)


def policies() -> tuple[Policy, Policy]:
    """(account, address), from the settings."""
    lock_after = max(1, get_settings().login_lock_after)
    return (Policy("account", min(FREE_ACCOUNT, lock_after - 1), lock_after),
            Policy("address", min(FREE_ADDRESS, ADDRESS_FACTOR * lock_after - 1), ADDRESS_FACTOR * lock_after))


def lock_time() -> timedelta:
    return timedelta(minutes=get_settings().login_lock_minutes)


@dataclass(frozen=True)
class Verdict:
    """Whether an attempt may check its password; when not, the message that says why and until when."""
    allowed: bool
    message: str = ""
    retry_at: datetime | None = None
    failures: int = 0  # the account's count, this attempt included
    locks: bool = False  # this attempt's failure locks the account (or address)


def _key(kind: str, value: str) -> str:
    return f"{kind}:{value}"[:200]


def _when(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _who(policy: Policy, value: str) -> str:
    return f"account {value!r}" if policy.kind == "account" else f"address {value}"


def _lock_message(policy: Policy, value: str, until: datetime) -> str:
    minutes = get_settings().login_lock_minutes
    unlock = (f" or ask an admin (`studio users unlock {value}`)" if policy.kind == "account"
              else f" or ask an admin (`studio users unlock --address {value}`)")
    return (f"Too many failed logins for {_who(policy, value)}: locked until {_when(until)} "
            f"({minutes:g} min after the {policy.lock_after}th failure). Try again after that{unlock}.")


def _count(policy: Policy, value: str, now: datetime) -> Verdict:
    """Count one attempt against ``value`` (compare-and-set); say whether its password may be checked."""
    key = _key(policy.kind, value)
    for _ in range(CAS_TRIES):
        with session_scope() as db:
            row = db.get(LoginThrottle, key, populate_existing=True)
            if row is None:
                try:
                    db.add(LoginThrottle(key=key, failures=1, last_failure_at=now, version=0,
                                         next_attempt_at=now + timedelta(seconds=policy.wait(1)),
                                         locked_until=now + lock_time() if policy.lock_after <= 1 else None))
                    db.flush()
                except IntegrityError:  # another attempt made the row first: count against it
                    db.rollback()
                    continue
                return Verdict(True, failures=1, locks=policy.lock_after <= 1)
            if row.locked_until and now < row.locked_until:
                return Verdict(False, _lock_message(policy, value, row.locked_until), row.locked_until, row.failures)
            fresh = (row.locked_until is not None) or now - row.last_failure_at >= FORGET
            failures = 1 if fresh else row.failures + 1
            early = not fresh and row.next_attempt_at is not None and now < row.next_attempt_at
            locks = failures >= policy.lock_after
            values = {"failures": failures, "last_failure_at": now, "version": row.version + 1,
                      "next_attempt_at": now + timedelta(seconds=policy.wait(failures)),
                      "locked_until": now + lock_time() if locks else None}
            done = db.execute(update(LoginThrottle).where(LoginThrottle.key == key, LoginThrottle.version == row.version)
                              .values(**values)).rowcount
            if not done:  # another attempt changed it meanwhile: read it again
                db.rollback()
                continue
            if not early:
                return Verdict(True, failures=failures, locks=locks)
            if locks:
                return Verdict(False, _lock_message(policy, value, values["locked_until"]), values["locked_until"],
                               failures, locks=True)
            wait = (row.next_attempt_at - now).total_seconds()
            return Verdict(False, f"Too many failed logins for {_who(policy, value)}: wait {wait:.0f} s (until "
                                  f"{_when(row.next_attempt_at)}) before trying again; after {policy.lock_after} "
                                  f"failures it is locked for {get_settings().login_lock_minutes:g} min.",
                           row.next_attempt_at, failures)
    raise RuntimeError(f"login throttle: {key} kept changing under {CAS_TRIES} attempts")


def admit(username: str, address: str) -> Verdict:
    """Count a login attempt for ``username`` from ``address``; refuse it (without its password being
    checked) while either is locked or in its back-off."""
    account, by_address = policies()
    now = clock()
    verdict = _count(account, username, now)
    if not verdict.allowed:
        return verdict
    other = _count(by_address, address, now)
    if not other.allowed:
        return other
    return Verdict(True, failures=verdict.failures, locks=verdict.locks or other.locks)


def succeeded(username: str, address: str) -> None:
    """The password was right: the account starts over, and the address's count of this attempt is undone."""
    _, by_address = policies()
    with session_scope() as db:
        db.execute(delete(LoginThrottle).where(LoginThrottle.key == _key("account", username)))
        # an address locked by this very attempt (its lock_after-th) is unlocked again: the attempt was good
        db.execute(update(LoginThrottle)
                   .where(LoginThrottle.key == _key("address", address), LoginThrottle.failures > 0)
                   .values(failures=LoginThrottle.failures - 1, version=LoginThrottle.version + 1))
        db.execute(update(LoginThrottle)
                   .where(LoginThrottle.key == _key("address", address),
                          LoginThrottle.failures < by_address.lock_after)
                   .values(locked_until=None))
        # keep the table small: counts nobody added to for a day are gone
        db.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < clock() - timedelta(days=1)))


def unlock(*, account: str | None = None, address: str | None = None) -> int:
    """End a lock and its count (an admin's `studio users unlock`); returns how many keys were cleared."""
    keys = [_key("account", account)] if account else []
    keys += [_key("address", address)] if address else []
    with session_scope() as db:
        return db.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(keys))).rowcount


def state(*, account: str | None = None, address: str | None = None) -> dict | None:
    """The stored count of one key (None: no failures), for the CLI and tests."""
    key = _key("account", account) if account else _key("address", address or "")
    with session_scope() as db:
        row = db.scalar(select(LoginThrottle).where(LoginThrottle.key == key))
        if row is None:
            return None
        return {"failures": row.failures, "next_attempt_at": row.next_attempt_at, "locked_until": row.locked_until}
