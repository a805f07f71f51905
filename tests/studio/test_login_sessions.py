"""Web logins kept in the database behind Gradio's token mapping: only hashes stored, an expiry, a
disabled account's sessions stop, Gradio's logout-everywhere walk works (both backends); and against the
running app, a login survives a restart of `studio serve` and ends with /logout."""
from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from models_db import session_scope
from models_db.schema import LoginSession, utcnow
from studio import auth
from studio.login_sessions import LoginSessions, StoredSession, cookie_id, token_hash
from tests.backends import backend_env
from tests.cli import Cli, stop_process
from tests.e2e.conftest import _free_port


def test_sessions_store_hashes_expire_and_end_with_the_account(backend):
    auth.add_user("alice", "alice-password")
    auth.add_user("bob", "bob-password")
    tokens = LoginSessions()
    tokens["tok-alice-1"], tokens["tok-alice-2"], tokens["tok-bob"] = "alice", "alice", "bob"
    assert tokens["tok-alice-1"] == "alice" and tokens.get("tok-bob") == "bob" and len(tokens) == 3
    assert tokens.get("not-a-token") is None and "" not in tokens
    with session_scope() as db:  # only hashes are stored
        stored = set(db.scalars(select(LoginSession.token_hash)))
    assert stored == {token_hash(t) for t in ("tok-alice-1", "tok-alice-2", "tok-bob")}
    assert LoginSessions()["tok-bob"] == "bob"  # another mapping (a restarted server) reads the same logins
    leaked = token_hash("tok-bob")  # a stored hash sent as a cookie is an unknown token, not a login
    assert leaked not in tokens and f"sha256:{leaked}" not in tokens and tokens.get(leaked) is None

    for token in list(tokens.keys()):  # Gradio's /logout: every session of the person, by iterating
        assert isinstance(token, StoredSession)
        if tokens[token] == "alice":
            del tokens[token]
    assert "tok-alice-1" not in tokens and "tok-alice-2" not in tokens and tokens["tok-bob"] == "bob"
    with pytest.raises(KeyError):
        del tokens["tok-alice-1"]

    with session_scope() as db:  # past its expiry a session is gone (and the next login clears it out)
        db.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert "tok-bob" not in tokens and len(tokens) == 0
    tokens["tok-bob-2"] = "bob"
    with session_scope() as db:
        assert list(db.scalars(select(LoginSession.token_hash))) == [token_hash("tok-bob-2")]
    auth.set_disabled("bob")  # a disabled account's sessions stop at once
    assert "tok-bob-2" not in tokens
    assert cookie_id() == cookie_id() and len(cookie_id()) == 32


def test_a_login_survives_a_restart_of_studio_serve(tmp_path):
    home = tmp_path / "home"
    with backend_env("embedded", home) as env:
        port = _free_port()
        env["STUDIO_PORT"] = str(port)
        cli = Cli(env)
        cli.run("db", "upgrade")
        p = subprocess.run([sys.executable, "-m", "studio.cli", "users", "add", "root", "--role", "admin",
                            "--password-stdin"], env=cli.env, input="root-password\n", capture_output=True,
                           text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
        url = f"http://127.0.0.1:{port}"
        proc = cli.serve("--no-worker", log_path=home / "serve.log")
        try:
            client = httpx.Client(base_url=url, timeout=10)
            assert client.get("/config").status_code == 401
            assert client.post("/login", data={"username": "root", "password": "root-password"}).status_code == 200
            assert client.get("/config").status_code == 200
            token = dict(client.cookies).get(f"access-token-unsecure-{cookie_id_for(home)}")
            assert token, dict(client.cookies)
        finally:
            stop_process(proc)
        proc = cli.serve("--no-worker", log_path=home / "serve.log")  # a restart: same cookie name, same login
        try:
            assert client.get("/config").status_code == 200
            assert httpx.get(f"{url}/config", timeout=10).status_code == 401  # without the cookie: still no entry
            client.get("/logout")  # Gradio's logout ends the session in the database too
            again = httpx.Client(base_url=url, timeout=10, cookies={f"access-token-unsecure-{cookie_id_for(home)}": token})
            assert again.get("/config").status_code == 401
        finally:
            stop_process(proc)
        assert token not in (home / "studio.db").read_bytes().decode("latin-1")  # only its hash was stored


def cookie_id_for(home) -> str:
    import hashlib

    return hashlib.sha256(f"finetune-studio:{home.resolve()}".encode()).hexdigest()[:32]
