"""`studio users`, `studio share`, `studio models trust` and STUDIO_USER, through the CLI's main()."""
from __future__ import annotations

import io
import json
import sys

import pytest

from models_db import BaseModel, session_scope
from studio.cli import main


def run(monkeypatch, capsys, *argv, user: str | None = None, stdin: str = ""):
    """Run `studio ARGV --json` as ``user`` (STUDIO_USER); returns (exit code, JSON or None, stderr)."""
    if user:
        monkeypatch.setenv("STUDIO_USER", user)
    else:
        monkeypatch.delenv("STUDIO_USER", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = 0
    try:
        main([*argv, "--json"])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def add(monkeypatch, capsys, name, role="member", team="", user=None):
    return run(monkeypatch, capsys, "users", "add", name, "--role", role, "--password-stdin",
               *(["--team", team] if team else []), stdin=f"pw-of-{name}!\n", user=user)


def test_users_add_list_disable(backend, monkeypatch, capsys):
    code, out, _ = add(monkeypatch, capsys, "root", "admin")
    assert code == 0 and out["user"]["role"] == "admin"
    assert add(monkeypatch, capsys, "alice", team="red")[0] == 0
    code, out, _ = run(monkeypatch, capsys, "users", "list")
    assert [(u["name"], u["role"], u["team"]) for u in out["users"]] == [("root", "admin", ""), ("alice", "member", "red")]
    assert "password" not in json.dumps(out) and "scrypt" not in json.dumps(out)  # hashes are never shown
    code, _, err = add(monkeypatch, capsys, "eve", user="alice")  # a member cannot create accounts
    assert code == 2 and "only an admin" in err
    code, out, _ = run(monkeypatch, capsys, "users", "disable", "alice", user="root")
    assert code == 0 and out["user"]["disabled"] is True
    code, _, err = run(monkeypatch, capsys, "dataset", "list", user="alice")  # a disabled STUDIO_USER is refused
    assert code == 2 and "not an enabled account" in err
    # the password is never an argument; without a terminal the prompt is refused, not echoed
    with pytest.raises(SystemExit):
        main(["users", "add", "mallory", "--password", "secret123"])
    code, _, err = run(monkeypatch, capsys, "users", "add", "mallory")
    assert code == 2 and "--password-stdin" in err


def test_studio_user_owns_and_shares(backend, monkeypatch, capsys, tmp_path):
    add(monkeypatch, capsys, "root", "admin")
    add(monkeypatch, capsys, "alice", team="red")
    add(monkeypatch, capsys, "bob", team="blue")
    add(monkeypatch, capsys, "carol", team="red")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(5)))
    code, out, err = run(monkeypatch, capsys, "dataset", "add", str(data), user="alice")
    assert code == 0, err
    ds = out["dataset"]["id"]
    # bob uploading the very same file gets his own version, not alice's
    code, out, err = run(monkeypatch, capsys, "dataset", "add", str(data), user="bob")
    assert code == 0 and out["reused"] is False and out["dataset"]["id"] != ds, err
    def ids(who):
        return [d["id"] for d in run(monkeypatch, capsys, "dataset", "list", user=who)[1]["datasets"]]
    assert ids("alice") == [ds] and ds not in ids("bob") and ds not in ids("carol")
    assert ds in ids(None) and ds in ids("root")  # the embedded CLI and an admin see everything
    code, _, err = run(monkeypatch, capsys, "share", "dataset", str(ds), "--on", user="bob")
    assert code == 2 and "belongs to user alice" in err
    code, out, _ = run(monkeypatch, capsys, "share", "dataset", str(ds), "--on", user="alice")
    assert code == 0 and out["shared"] is True
    assert ds in ids("carol") and ds not in ids("bob")  # shared with alice's team only
    code, _, err = run(monkeypatch, capsys, "share", "dataset", str(ds), "--off", user="carol")
    assert code == 2 and "only the owner" in err


def test_models_trust_is_admin_only(backend, monkeypatch, capsys):
    add(monkeypatch, capsys, "root", "admin")
    add(monkeypatch, capsys, "alice")
    with session_scope() as db:
        db.add(BaseModel(name="custom", path="/x", source="/x"))
    code, _, err = run(monkeypatch, capsys, "models", "trust", "custom", "--on", user="alice")
    assert code == 2 and "only an admin" in err
    code, out, _ = run(monkeypatch, capsys, "models", "trust", "custom", "--on", user="root")
    assert code == 0 and out["model"]["trust_remote_code"] is True
    with session_scope() as db:
        assert db.query(BaseModel).filter_by(name="custom").one().trust_remote_code is True
    code, out, _ = run(monkeypatch, capsys, "models", "trust", "custom", "--off")  # the embedded user is admin
    assert code == 0 and out["model"]["trust_remote_code"] is False
