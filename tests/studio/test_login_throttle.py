"""Login throttling, the audit log, password rules, session rotation and cookie flags, against Gradio's real
login route (the app `studio serve` builds, in-process, on both backends) with the throttle's clock held
still and then moved past the lock."""
from __future__ import annotations

from datetime import datetime, timedelta

import gradio as gr
import pytest
from gradio.routes import App
from starlette.testclient import TestClient

from models_db import access
from models_db.access import acting_as
from studio import audit, auth, login_throttle
from studio.webguard import FileGuard

ALICE = "alice-secret-42"


class Clock:
    def __init__(self):
        self.now = datetime(2030, 1, 1, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def studio(backend, monkeypatch):
    """(make_app, calls): the served app's login as `studio serve` sets it up, counting password checks."""
    monkeypatch.setattr(access, "_resolver", access._resolver)  # launch_options installs the Gradio resolver
    monkeypatch.setattr(FileGuard, "login_required", FileGuard.login_required)
    clock = Clock()
    monkeypatch.setattr(login_throttle, "clock", clock)
    auth.add_user("root", "root-secret-42", role="admin")
    auth.add_user("alice", ALICE, team="red")
    calls = []

    def counted_check(username, password):
        calls.append(username)
        return auth.check_login(username, password)

    def make_app():
        opts = auth.launch_options("127.0.0.1")
        with gr.Blocks() as blocks:
            gr.Markdown("studio")
        blocks.auth, blocks.auth_message = counted_check, opts["auth_message"]
        return App.create_app(blocks, app_kwargs=opts["app_kwargs"])

    return make_app, calls, clock


def _login(client, name, password):
    return client.post("/login", data={"username": name, "password": password})


def test_a_burst_of_wrong_passwords_is_throttled_locked_and_audited(studio):
    make_app, calls, clock = studio
    with TestClient(make_app()) as client, TestClient(make_app()) as other_process:
        answers = [_login(client, "alice", f"guess-{i}") for i in range(30)]
        assert all(r.status_code == 400 for r in answers)
        # 3 free failures and a 4th after no wait: the password is checked 4 times, never again in the burst
        assert calls == ["alice"] * 4
        assert all(r.json()["detail"] == "Incorrect credentials." for r in answers[:4])
        assert all("wait" in r.json()["detail"] for r in answers[4:9])  # early attempts: refused, and counted
        locked = answers[9:]
        until = clock.now + timedelta(minutes=15)
        assert all(f"locked until {until:%Y-%m-%d %H:%M:%S} UTC" in r.json()["detail"] for r in locked)
        assert all(int(r.headers["retry-after"]) == 15 * 60 for r in locked)

        # the right password during the lock: refused the same way, unchecked, from any studio process
        for c in (client, other_process):
            r = _login(c, "alice", ALICE)
            assert r.status_code == 400 and "locked until" in r.json()["detail"]
        assert calls == ["alice"] * 4 and client.get("/config").status_code == 401

        with acting_as(None):  # the embedded admin reads the audit log
            events = audit.recent(action="login")
        actions = [e["action"] for e in reversed(events)]
        assert actions.count("login.failed") == 4 and actions.count("login.locked") == 1
        assert actions.count("login.refused") == 28 and "login.ok" not in actions
        assert all(e["address"] == "testclient" and e["target"] == "user alice" for e in events)
        assert "wrong password (failure 4 in a row)" in [e["detail"] for e in events]
        assert not any(ALICE in str(e) or "guess-" in str(e) for e in events)  # passwords are never logged

        clock.now = until + timedelta(seconds=1)  # the lock is over: the right password gets in
        r = _login(other_process, "alice", ALICE)
        assert r.status_code == 200 and calls[-1] == "alice" and len(calls) == 5
        assert other_process.get("/config").status_code == 200
        assert login_throttle.state(account="alice") is None  # its count starts over
        with acting_as(None):
            assert audit.recent(limit=1)[0]["action"] == "login.ok"


def test_unknown_names_and_addresses_are_throttled_too(studio):
    make_app, calls, clock = studio
    with TestClient(make_app()) as client:
        answers = [_login(client, f"nobody{i // 5}", "whatever-1") for i in range(60)]  # 12 names, 5 tries each
    # each name checks 4 passwords; the address (all from one client) stops checking after its 10 free
    # failures and one more, then waits, so the spray is cut short long before 60 checks
    assert len(calls) == 11, calls
    assert any("for address testclient: wait" in r.json()["detail"] for r in answers[11:])
    assert login_throttle.state(address="testclient")["failures"] > 11
    with acting_as(None):
        assert auth.unlock_login(address="testclient") == 1
        assert audit.recent(limit=1)[0]["action"] == "user.unlock"


def test_login_rotates_the_session_and_sets_strict_cookies(studio, monkeypatch):
    make_app, _, _ = studio
    with TestClient(make_app()) as client:
        app = client.app
        # as the login page sends it (multipart form data): counted and checked like a urlencoded form
        assert client.post("/login", files={"username": (None, "alice"), "password": (None, "wrong-one")}).status_code == 400
        assert login_throttle.state(account="alice")["failures"] == 1
        assert client.post("/login", files={"username": (None, "alice"), "password": (None, ALICE)}).status_code == 200
        cookies = client.cookies
        first = cookies.get(f"access-token-unsecure-{app.cookie_id}")
        assert first and app.tokens.get(first) == "alice"
        r = _login(client, "root", "root-secret-42")  # the same browser logs in again
        second = client.cookies.get(f"access-token-unsecure-{app.cookie_id}")
        assert second != first and app.tokens.get(second) == "root"
        assert app.tokens.get(first) is None  # the session from before the login is over
        set_cookies = r.headers.get_list("set-cookie")
        assert len(set_cookies) == 2
        for header in set_cookies:
            flags = [f.strip().lower() for f in header.split(";")[1:]]
            assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags, header
    monkeypatch.setenv("STUDIO_BEHIND_TLS", "1")
    from studio.settings import get_settings

    get_settings.cache_clear()
    with TestClient(make_app(), base_url="https://testserver") as client:
        r = _login(client, "alice", ALICE)
        assert all("; Secure" in h and "SameSite=Lax" in h for h in r.headers.get_list("set-cookie"))


def test_password_rules_on_creation(backend):
    for name, password, why in [("carol", "short1!", "at least 8"), ("carol", "Carol2024!", "user name"),
                                ("carol", "lorac-", "at least 8"), ("carol", "!!lorac!!", "user name"),
                                ("carol", "Password123!", "most common"), ("carol", "qwertyuiop", "most common"),
                                ("carol", "aaaaaaaaaaab", "repeats"), ("carol", "x" * 2000, "at most")]:
        with pytest.raises(auth.AuthError, match=why):
            auth.add_user(name, password)
    assert auth.add_user("carol", "ruby-kettle-orbit").name == "carol"
    with acting_as(None):
        event = audit.recent(limit=1)[0]
    assert (event["action"], event["target"], event["detail"]) == ("user.add", "user carol", "role member")


def test_admin_actions_are_audited_and_the_log_is_for_admins(backend, monkeypatch, capsys):
    from tests.studio.test_users_cli import add, run

    assert add(monkeypatch, capsys, "root", "admin")[0] == 0
    assert add(monkeypatch, capsys, "alice", team="red")[0] == 0
    assert run(monkeypatch, capsys, "users", "role", "alice", "admin", user="root")[0] == 0
    assert run(monkeypatch, capsys, "users", "role", "alice", "member", user="root")[0] == 0
    code, _, err = run(monkeypatch, capsys, "users", "role", "root", "member", user="root")
    assert code == 2 and "last enabled admin" in err
    assert run(monkeypatch, capsys, "users", "disable", "alice", user="root")[0] == 0
    assert run(monkeypatch, capsys, "users", "enable", "alice")[0] == 0
    code, out, _ = run(monkeypatch, capsys, "users", "unlock", "alice", user="root")
    assert code == 0 and out == {"unlocked": "alice", "cleared": 0}
    code, out, _ = run(monkeypatch, capsys, "audit", "list", user="root")
    assert code == 0
    got = [(e["actor"], e["action"], e["target"], e["detail"]) for e in reversed(out["events"])]
    local = got[0][0]
    assert local.startswith("(local")
    assert got == [(local, "user.add", "user root", "role admin"), (local, "user.add", "user alice", "role member, team red"),
                   ("root", "user.role", "user alice", "member -> admin"), ("root", "user.role", "user alice", "admin -> member"),
                   ("root", "user.disable", "user alice", ""), (local, "user.enable", "user alice", ""),
                   ("root", "user.unlock", "user alice", "nothing was locked")]
    code, out, _ = run(monkeypatch, capsys, "audit", "list", "--action", "user.role", "--limit", "1", user="root")
    assert [e["detail"] for e in out["events"]] == ["admin -> member"]
    code, _, err = run(monkeypatch, capsys, "audit", "list", user="alice")
    assert code == 2 and "only an admin" in err

    from studio.tabs import audit_box

    with acting_as(auth.viewer_by_name("alice")):  # the Fleet tab's box: hidden for members, and empty
        box, table = audit_box.refresh()
        assert box.visible is False and table == []
        with pytest.raises(audit.AuditAccessError):
            audit.recent()
    with acting_as(auth.viewer_by_name("root")):
        box, table = audit_box.refresh()
        assert box.visible is True and table[0][1:4] == ["root", "user.unlock", "user alice"]


def test_parallel_attempts_cannot_slip_through_one_check(backend, monkeypatch):
    """Counted before the check, with a compare-and-set: 24 simultaneous attempts on one account let at
    most the 4 a sequence would through (several studio processes race the same way on the rows)."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(login_throttle, "clock", Clock())
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda i: login_throttle.admit("alice", f"10.0.0.{i}"), range(24)))
    assert sum(v.allowed for v in verdicts) == 4
    assert login_throttle.state(account="alice")["failures"] == 10  # attempts during the lock do not count
    assert sum("locked until" in v.message for v in verdicts) == 24 - 9


def test_a_password_spray_locks_the_address_and_spares_other_addresses(studio):
    """One name each (no account reaches its back-off): the address is what slows down and then locks."""
    make_app, calls, clock = studio
    with TestClient(make_app(), client=("203.0.113.7", 5000)) as sprayer, \
            TestClient(make_app(), client=("198.51.100.2", 5000)) as elsewhere:
        answers = [_login(sprayer, f"guess{i}", "Summer2030!") for i in range(60)]
        # 10 free failures and the 11th, then every early attempt counts until the 50th locks the address
        assert len(calls) == 11
        until = clock.now + timedelta(minutes=15)
        locked = [r for r in answers if "for address 203.0.113.7: locked until" in r.json()["detail"]]
        assert len(locked) == 60 - 49 and f"{until:%Y-%m-%d %H:%M:%S} UTC" in locked[0].json()["detail"]
        assert int(locked[-1].headers["retry-after"]) == 15 * 60
        r = _login(sprayer, "alice", ALICE)  # a real account's right password, from the locked address
        assert r.status_code == 400 and "locked until" in r.json()["detail"] and len(calls) == 11
        r = _login(elsewhere, "alice", ALICE)  # the same account from another address gets in
        assert r.status_code == 200 and calls[-1] == "alice"
    with acting_as(None):
        events = audit.recent(action="login.locked")
    assert any(e["address"] == "203.0.113.7" for e in events)


def test_sharing_trust_and_deleting_a_version_are_audited(backend, monkeypatch, capsys):
    """The admin actions besides accounts: share, `models trust`, version delete; a refused one writes nothing."""
    from models_db import BaseModel, ModelVersion, session_scope
    from studio import sharing, versions
    from tests.studio.test_users_cli import add, run

    assert add(monkeypatch, capsys, "root", "admin")[0] == 0
    assert add(monkeypatch, capsys, "alice", team="red")[0] == 0
    with session_scope() as db:
        base = BaseModel(name="tiny", path="/nowhere", source="/nowhere")
        db.add(base)
        db.flush()
        v = ModelVersion(name="v", base_model_id=base.id, method="lora", config={})
        db.add(v)
        db.flush()
        base_id, version_id = base.id, v.id
    assert run(monkeypatch, capsys, "share", "version", str(version_id), "--on", user="root")[0] == 0
    assert run(monkeypatch, capsys, "models", "trust", "tiny", "--on", user="root")[0] == 0
    code, _, err = run(monkeypatch, capsys, "models", "trust", "tiny", "--off", user="alice")
    assert code == 2 and "only an admin" in err  # refused: not in the log
    with acting_as(auth.viewer_by_name("alice")), pytest.raises(access.AccessError, match="only the owner"):
        sharing.set_shared("model", base_id, False)  # not hers: refused before the audit line
    with acting_as(auth.viewer_by_name("root")):
        versions.delete(version_id)
        events = [(e["actor"], e["action"], e["target"], e["detail"]) for e in reversed(audit.recent(limit=3))]
    assert events == [("root", "share", f"version {version_id}", "shared with the team"),
                      ("root", "model.trust", f"model {base_id} (tiny)", "on"),
                      ("root", "version.delete", f"version {version_id}", "")]
