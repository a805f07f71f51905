"""The `studio` command. Every command with --json prints one JSON object on stdout; errors go to
stderr with a non-zero exit; progress bars go to stderr so --json stays clean.

One module per area; each has ``register(sub, add, group)`` that adds its subcommands."""
from __future__ import annotations

import argparse
import sys

from models_db.access import AccessError
from studio.auth import AuthError, cli_acting
from studio.cli import advise, datasets, jobs, sweep, system, users, versions, votes, workers
from studio.cli.common import CliError
from studio.datasets import DatasetError
from studio.jobspec import SpecError

AREAS = (system, advise, datasets, jobs, versions, users, workers, votes, sweep)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p = argparse.ArgumentParser(prog="studio", description="FineTune Studio", parents=[common])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(parent, name, fn, help_):
        sp = parent.add_parser(name, help=help_, parents=[common])
        sp.set_defaults(fn=fn)
        return sp

    def group(name, help_):
        return sub.add_parser(name, help=help_).add_subparsers(dest="sub", required=True)

    for area in AREAS:
        area.register(sub, add, group)
    return p


# commands that manage the schema themselves (serve migrates at start; a worker waits for it)
OWN_SCHEMA = ("db", "serve", "worker")


def ensure_schema() -> None:
    """Before the schema exists: the embedded SQLite database is created on first use (nothing to lose);
    a server database is never migrated behind its operator's back: one line names it and the command."""
    from models_db.migrate import current_revision, upgrade
    from studio.auth import redact_url
    from studio.settings import get_settings

    url = get_settings().db_url
    if current_revision(url) is not None:
        return
    if url.startswith("sqlite"):
        print(f"studio: first use: creating the database at {redact_url(url)}", file=sys.stderr)
        upgrade(url)
        return
    raise CliError(f"the database {redact_url(url)} has no studio tables yet: run `studio db upgrade` first")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd not in OWN_SCHEMA:
            ensure_schema()
        # a command acts as the embedded/admin user, or as the account STUDIO_USER names (models_db.access);
        # a worker acts for every owner, and `serve` for whoever logs in
        with cli_acting(args.cmd not in ("worker", "serve")):
            args.fn(args)
    except (CliError, SpecError, DatasetError, AuthError, AccessError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
