"""Security against the running app: `studio serve` in a subprocess on a free port with a temp
STUDIO_HOME, driven over HTTP. Login on a non-loopback bind, the file route (traversal, encoded
traversal, absolute paths, dot-files, other users' exports), the upload limit, and secrets in logs."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.backends import backend_env
from tests.cli import Cli, stop_process
from tests.e2e.conftest import _free_port

PASSWORDS = {"root": "root-password", "alice": "alice-password", "bob": "bob-password"}


def _add_user(cli: Cli, name: str, role: str, team: str = "") -> None:
    args = ["users", "add", name, "--role", role, "--password-stdin", *(["--team", team] if team else [])]
    p = subprocess.run([sys.executable, "-m", "studio.cli", *args], env=cli.env, input=PASSWORDS[name] + "\n",
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr


def _seed_exports(env: dict) -> dict:
    """A version for alice and one for bob (rows as their own accounts would make them), each with an
    export zip; plus a dot-file in the export folder."""
    code = """
import json, sys
from models_db import BaseModel, Job, ModelVersion, session_scope
from models_db.access import acting_as
from studio.auth import viewer_by_name
from studio.settings import get_settings
with session_scope() as db:
    base = BaseModel(name="tiny", path="/nowhere", source="/nowhere"); db.add(base); db.flush(); base_id = base.id
out = {}
for who in ("alice", "bob"):
    with acting_as(viewer_by_name(who)), session_scope() as db:
        job = Job(kind="train", config={}, base_model_id=base_id); db.add(job); db.flush()
        v = ModelVersion(name=f"{who}-v", base_model_id=base_id, job_id=job.id, method="lora"); db.add(v); db.flush()
        out[who] = v.id
exports = get_settings().path("exports")
for who, vid in out.items():
    (exports / f"version-{vid}-merged.zip").write_bytes(f"zip of {who}".encode())
(exports / ".secret").write_text("TOP-SECRET-DOTFILE")
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A studio on 0.0.0.0 with accounts (admin root; alice in team red; bob in blue), no worker."""
    home = tmp_path_factory.mktemp("sec") / "home"
    with backend_env("embedded", home) as env:
        port = _free_port()
        env.update(STUDIO_PORT=str(port), STUDIO_MAX_UPLOAD_MB="1")
        cli = Cli(env)
        cli.run("db", "upgrade")
        # no admin yet: a public bind is refused with a clear message, and nothing is served
        p = cli.run("serve", "--host", "0.0.0.0", "--no-worker", ok=False, timeout=60)
        assert p.returncode == 2 and "studio users add NAME --role admin" in p.stderr, p.stderr
        _add_user(cli, "root", "admin")
        _add_user(cli, "alice", "member", "red")
        _add_user(cli, "bob", "member", "blue")
        ids = _seed_exports(cli.env)
        proc = cli.serve("--host", "0.0.0.0", "--no-worker", log_path=home / "serve.log")
        try:
            yield {"url": f"http://127.0.0.1:{port}", "port": port, "home": home.resolve(), "ids": ids, "cli": cli}
        finally:
            stop_process(proc)


def _login(s: dict, name: str) -> httpx.Client:
    c = httpx.Client(base_url=s["url"], timeout=10)
    r = c.post("/login", data={"username": name, "password": PASSWORDS[name]})
    assert r.status_code == 200, r.text
    return c


def _raw_get(s: dict, path: str, cookies: httpx.Cookies | None = None) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of '..' or of percent escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", s["port"], timeout=10)
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())} if cookies else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_login_required_on_public_bind(served):
    anon = httpx.Client(base_url=served["url"], timeout=10)
    assert anon.get("/config").status_code == 401  # the app's configuration needs a login
    assert anon.get("/gradio_api/login_check").status_code == 401
    bad = anon.post("/login", data={"username": "alice", "password": "wrong-password"})
    assert bad.status_code == 400
    alice = _login(served, "alice")
    assert alice.get("/config").status_code == 200
    assert alice.get("/gradio_api/login_check").status_code == 200


def test_file_route_serves_own_export_only(served):
    exports = served["home"] / "exports"
    alice, bob = _login(served, "alice"), _login(served, "bob")
    mine, theirs = exports / f"version-{served['ids']['alice']}-merged.zip", exports / f"version-{served['ids']['bob']}-merged.zip"
    r = alice.get(f"/gradio_api/file={mine}")
    assert r.status_code == 200 and r.content == b"zip of alice"
    assert alice.get(f"/gradio_api/file={theirs}").status_code == 403  # bob's export
    assert bob.get(f"/gradio_api/file={theirs}").content == b"zip of bob"
    root = _login(served, "root")
    assert root.get(f"/gradio_api/file={theirs}").status_code == 200  # an admin sees everything
    status, _ = _raw_get(served, f"/gradio_api/file={mine}")  # no login: no file
    assert status in (401, 403)
    # Gradio's older alias of the route (`file/PATH`, the same handler) is guarded the same way
    assert alice.get(f"/gradio_api/file/{theirs}").status_code == 403
    assert alice.get(f"/gradio_api/file/{mine}").content == b"zip of alice"
    assert _raw_get(served, f"/gradio_api/file/{mine}")[0] in (401, 403)


@pytest.mark.parametrize("tail", [
    "../studio.db",  # plain traversal out of exports/
    "%2e%2e%2fstudio.db",  # URL-encoded traversal
    "%2e%2e/studio.db",
    "%252e%252e%252fstudio.db",  # double-encoded
    "..%2f..%2f..%2fetc%2fpasswd",
    ".secret",  # a dot-file inside exports/
    "%2esecret",
])
def test_file_route_refuses_traversal_and_dotfiles(served, tail):
    alice = _login(served, "alice")
    status, body = _raw_get(served, f"/gradio_api/file={served['home'] / 'exports'}/{tail}", alice.cookies)
    assert status in (403, 404), (tail, status, body[:200])
    assert b"SQLite" not in body and b"root:" not in body and b"TOP-SECRET" not in body


@pytest.mark.parametrize("target", ["/etc/passwd", "{home}/studio.db", "{home}/models", "{home}/serve.log",
                                    "{home}/exports/../studio.db"])
def test_file_route_refuses_absolute_paths_outside_exports(served, target):
    alice = _login(served, "alice")
    path = target.format(home=served["home"])
    for route in ("file=", "file/"):  # the route and Gradio's older alias of it
        for sent in (path, quote(path, safe="")):
            status, body = _raw_get(served, f"/gradio_api/{route}{sent}", alice.cookies)
            assert status in (403, 404), (route, sent, status, body[:200])
            assert b"SQLite" not in body and b"root:" not in body


def test_upload_over_the_limit_is_refused_with_the_size(served):
    alice = _login(served, "alice")
    big = b'{"text": "' + b"x" * (1_200_000) + b'"}\n'  # over STUDIO_MAX_UPLOAD_MB=1
    r = alice.post("/gradio_api/upload", files={"files": ("big.jsonl", big, "application/octet-stream")})
    assert r.status_code == 413 and "1048576 bytes" in r.text, r.text
    ok = alice.post("/gradio_api/upload", files={"files": ("small.jsonl", b'{"text": "hi"}\n', "text/plain")})
    assert ok.status_code == 200
    # the stored upload has a generated folder, never a path the person chose
    stored = Path(ok.json()[0])
    assert stored.name == "small.jsonl" and stored.parent.name not in ("", ".", "..")


def test_cli_dataset_add_enforces_the_size_limit(served, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "' + "x" * 1_200_000 + '"}\n')
    p = served["cli"].run("dataset", "add", str(big), ok=False)
    assert p.returncode == 2 and "over the 1.0 MB upload limit" in p.stderr, p.stderr


def test_database_password_never_printed(tmp_path):
    """`studio serve` names its database, password masked, and still never prints it when it fails."""
    with backend_env("embedded", tmp_path / "home") as env:
        env["STUDIO_DATABASE_URL"] = "postgresql+psycopg://studio:hunter2-secret@127.0.0.1:9/studio"
        p = Cli(env).run("serve", "--no-worker", ok=False, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "postgresql+psycopg://studio:***@127.0.0.1:9/studio" in out
    assert "hunter2-secret" not in out


def test_embedded_loopback_without_accounts_needs_no_login(tmp_path):
    """Nothing changes for the single user on 127.0.0.1: no login, their exports download, and the
    file guard still refuses the database and dot-files."""
    home = tmp_path / "home"
    with backend_env("embedded", home) as env:
        port = _free_port()
        env["STUDIO_PORT"] = str(port)
        cli = Cli(env)
        cli.run("db", "upgrade")
        exports = home.resolve() / "exports"
        exports.mkdir(parents=True)
        (exports / "version-1-adapter.zip").write_bytes(b"zip")
        (exports / ".env").write_text("STUDIO_S3_SECRET=x")
        proc = cli.serve("--no-worker", log_path=home / "serve.log")
        try:
            c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            assert c.get("/config").status_code == 200  # no login
            assert c.get(f"/gradio_api/file={exports}/version-1-adapter.zip").content == b"zip"
            s = {"port": port}
            assert _raw_get(s, f"/gradio_api/file={exports}/.env")[0] == 403
            assert _raw_get(s, f"/gradio_api/file={exports}/%2e%2e%2fstudio.db")[0] == 403
        finally:
            stop_process(proc)
