"""`studio users`: accounts (add, list, disable, enable, role, unlock), `studio models trust` and
`studio audit list` (admin only).

Passwords never travel on the command line (where `ps` and shell history would show them): they are
read from a prompt, or from stdin with ``--password-stdin``."""
from __future__ import annotations

import getpass
import sys

from studio.cli.common import CliError, emit


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to prompt for the password: pipe it in with --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ; nothing was created")
    if not password:
        raise CliError("empty password: give one on the prompt or on stdin (--password-stdin)")
    return password


def _user_json(u) -> dict:
    return {"id": u.id, "name": u.name, "role": u.role, "team": u.team, "disabled": u.disabled,
            "created_at": u.created_at.isoformat() if u.created_at else None}


def _require_admin() -> None:
    """Account and trust changes are for the embedded user (no STUDIO_USER) or an admin account."""
    from studio.auth import cli_viewer

    viewer = cli_viewer()
    if viewer is not None and not viewer.is_admin:
        raise CliError(f"STUDIO_USER={viewer.name} is a member; only an admin may do this")


def cmd_users_add(args):
    from studio.auth import AuthError, add_user

    _require_admin()
    try:
        user = add_user(args.name, _read_password(args), role=args.role, team=args.team or "")
    except AuthError as e:
        raise CliError(str(e)) from None
    emit(args, {"user": _user_json(user)}, f"created {user.role} {user.name}" + (f" (team {user.team})" if user.team else ""))


def cmd_users_list(args):
    from studio.auth import list_users

    _require_admin()  # names, roles and teams of every account: an admin's view
    users = list_users()
    text = "\n".join(f"{u.id:>4}  {u.name:<20} {u.role:<7} {u.team or '-':<12}{' disabled' if u.disabled else ''}"
                     for u in users) or "no accounts: the studio runs in embedded single-user mode"
    emit(args, {"users": [_user_json(u) for u in users]}, text)


def _set_disabled(args, disabled: bool):
    from studio.auth import AuthError, set_disabled

    _require_admin()
    try:
        user = set_disabled(args.name, disabled)
    except AuthError as e:
        raise CliError(str(e)) from None
    emit(args, {"user": _user_json(user)}, f"{user.name} {'disabled' if disabled else 'enabled'}")


def cmd_users_disable(args):
    _set_disabled(args, True)


def cmd_users_enable(args):
    _set_disabled(args, False)


def cmd_users_role(args):
    from studio.auth import AuthError, set_role

    _require_admin()
    try:
        user = set_role(args.name, args.role)
    except AuthError as e:
        raise CliError(str(e)) from None
    emit(args, {"user": _user_json(user)}, f"{user.name} is now {user.role}")


def cmd_users_unlock(args):
    """End a login lock (too many failed logins) of an account or of a client address."""
    from studio.auth import AuthError, unlock_login

    _require_admin()
    try:
        cleared = unlock_login(args.name, args.address)
    except AuthError as e:
        raise CliError(str(e)) from None
    what = args.name or args.address
    emit(args, {"unlocked": what, "cleared": cleared}, f"{what}: " + ("unlocked" if cleared else "was not locked"))


def cmd_audit_list(args):
    """The audit log, newest first: logins and every account, trust, share and delete action (admin only)."""
    from studio import audit

    _require_admin()
    try:
        events = audit.recent(limit=args.limit, action=args.action or "")
    except audit.AuditAccessError as e:
        raise CliError(str(e)) from None
    text = "\n".join(f"{e['at']}  {e['actor']:<16} {e['action']:<14} {e['target']:<20} {e['address'] or '-':<15} "
                     f"{e['detail']}" for e in events) or "the audit log is empty"
    emit(args, {"events": events}, text)


def cmd_models_trust(args):
    """Allow (or forbid) a model's own Python code (``trust_remote_code``): an admin decision per model."""
    from models_db import queries as q
    from models_db import session_scope
    from studio import audit

    _require_admin()
    if args.on == args.off:
        raise CliError("give --on or --off")
    with session_scope() as db:
        model = q.model_by_ref(db, args.model)
        if model is None:
            raise CliError(f"model {args.model!r} does not exist (studio models list)")
        model.trust_remote_code = bool(args.on)
        out = {"id": model.id, "name": model.name, "trust_remote_code": model.trust_remote_code}
        audit.record("model.trust", f"model {model.id} ({model.name})", detail="on" if args.on else "off", db=db)
    warn = " (its own Python code will run on the workers)" if args.on else ""
    emit(args, {"model": out}, f"model {out['name']}: trust_remote_code {'on' if args.on else 'off'}{warn}")


def cmd_share(args):
    """Share a data set, version, job or model with your team, or make it private again (owner or admin)."""
    from studio.sharing import set_shared

    if args.on == args.off:
        raise CliError("give --on (share with your team) or --off (private)")
    out = set_shared(args.kind, args.id, args.on)
    emit(args, out, f"{args.kind} {out['id']}: {'shared with the team' if out['shared'] else 'private'}")


def register(sub, add, group) -> None:
    g = group("users", "accounts (needed to serve beyond 127.0.0.1)")
    sp = add(g, "add", cmd_users_add, "create an account (the password is prompted for, never an argument)")
    sp.add_argument("name")
    sp.add_argument("--role", choices=("admin", "member"), default="member")
    sp.add_argument("--team", help="members of one team see what its members share")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    add(g, "list", cmd_users_list, "list accounts")
    add(g, "disable", cmd_users_disable, "stop an account from logging in").add_argument("name")
    add(g, "enable", cmd_users_enable, "let a disabled account log in again").add_argument("name")
    sp = add(g, "role", cmd_users_role, "make an account an admin or a member")
    sp.add_argument("name"), sp.add_argument("role", choices=("admin", "member"))
    sp = add(g, "unlock", cmd_users_unlock, "end a login lock after too many failed logins")
    sp.add_argument("name", nargs="?"), sp.add_argument("--address", help="a client address instead of an account")
    a = group("audit", "the audit log: logins and admin actions (admin only)")
    sp = add(a, "list", cmd_audit_list, "the newest events first")
    sp.add_argument("--limit", type=int, default=200), sp.add_argument("--action", help="a prefix: login, user., share…")
    sp = add(sub, "share", cmd_share, "share a data set, version, job or model with your team (or stop)")
    sp.add_argument("kind", choices=("dataset", "version", "job", "model")), sp.add_argument("id", type=int)
    sp.add_argument("--on", action="store_true"), sp.add_argument("--off", action="store_true")
