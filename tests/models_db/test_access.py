"""Accounts and ownership in-process: password hashing, the owner filter on every query, the stamp on
new rows, refused changes to other people's rows, sharing within a team. Both backends."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models_db import BaseModel, Dataset, Job, ModelVersion, session_scope
from models_db import queries as q
from models_db.access import NOBODY, AccessError, acting_as, hidden_reason
from studio import auth


def test_password_hash_is_salted_scrypt_and_verifies():
    a, b = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert a.startswith("scrypt$") and a != b  # a fresh salt each time
    assert "correct horse" not in a
    assert auth.verify_password("correct horse", a) and auth.verify_password("correct horse", b)
    assert not auth.verify_password("wrong horse", a)
    assert not auth.verify_password("correct horse", "sha256$abc")  # never a plain-hash fallback
    assert not auth.verify_password("x", "garbage")


def _world():
    """admin; alice and carol in team red; bob in team blue. A base model from the admin CLI (no owner)."""
    users = {n: auth.add_user(n, "password-" + n, role="admin" if n == "root" else "member",
                              team={"alice": "red", "carol": "red", "bob": "blue"}.get(n, ""))
             for n in ("root", "alice", "bob", "carol")}
    with session_scope() as db:  # embedded/admin: no viewer
        base = BaseModel(name="tiny", path="/x", source="/x")
        db.add(base)
        db.flush()
        base_id = base.id
    return {n: auth.viewer_by_name(n) for n in users}, base_id


def _make(viewer, base_id, tag, shared=False):
    with acting_as(viewer), session_scope() as db:
        ds = Dataset(name=f"ds-{tag}", content_hash=f"h-{tag}", format="text", path="/d", shared=shared)
        db.add(ds)
        db.flush()
        job = Job(kind="train", config={}, base_model_id=base_id, dataset_id=ds.id, shared=shared)
        db.add(job)
        db.flush()
        return ds.id, job.id


def test_members_see_only_their_own_and_team_shared_rows(backend):
    v, base_id = _world()
    a_ds, a_job = _make(v["alice"], base_id, "a")
    b_ds, b_job = _make(v["bob"], base_id, "b")
    c_ds, c_job = _make(v["carol"], base_id, "c", shared=True)
    with session_scope() as db:  # owner stamped from the viewer
        assert db.get(Dataset, a_ds).owner_id == v["alice"].id and db.get(Job, b_job).owner_id == v["bob"].id
    # a version registered by a worker (no viewer) inherits its job's owner
    with session_scope() as db:
        db.add(ModelVersion(name="va", base_model_id=base_id, job_id=a_job, method="lora"))
    with acting_as(v["alice"]), session_scope() as db:
        assert {d.id for d in q.list_datasets(db)} == {a_ds, c_ds}  # own + carol's shared one (same team)
        assert {j.id for j in q.list_jobs(db)} == {a_job, c_job}
        assert [x.name for x in q.list_versions(db)] == ["va"]
        assert db.get(Dataset, b_ds) is None  # session.get is filtered too
        assert [m.id for m in q.list_models(db)] == [base_id]  # the admin's shared base model is usable
        assert "belongs to user bob" in hidden_reason(db, Dataset, b_ds)
        assert hidden_reason(db, Dataset, 99999) is None  # missing is not "someone else's"
    with acting_as(v["bob"]), session_scope() as db:
        assert {d.id for d in q.list_datasets(db)} == {b_ds}  # carol shares with red, not blue
        assert q.list_versions(db) == []
    for who in (v["root"], None):  # an admin and the embedded user see everything
        with acting_as(who), session_scope() as db:
            assert {d.id for d in q.list_datasets(db)} >= {a_ds, b_ds, c_ds}
    with acting_as(NOBODY), session_scope() as db:  # a request without a login sees nothing
        assert q.list_datasets(db) == [] and q.list_models(db) == [] and db.get(Job, a_job) is None


def test_changes_to_other_peoples_rows_are_refused(backend):
    v, base_id = _world()
    a_ds, _ = _make(v["alice"], base_id, "a")
    c_ds, _ = _make(v["carol"], base_id, "c", shared=True)
    with acting_as(v["alice"]), session_scope() as db:  # team-shared rows can be changed by the team ...
        db.get(Dataset, c_ds).name = "renamed by alice"
    with pytest.raises(AccessError, match="only the owner of data set .* can share or unshare"), \
            acting_as(v["alice"]), session_scope() as db:  # ... but not un-shared
        db.get(Dataset, c_ds).shared = False
    with pytest.raises(AccessError, match="belongs to user alice"), \
            acting_as(v["bob"]), session_scope() as db:  # a row reached around the filter still cannot change
        row = db.scalar(select(Dataset).where(Dataset.id == a_ds).execution_options(studio_unfiltered=True))
        row.name = "bob was here"
    with pytest.raises(AccessError, match="belongs to the administrator"), \
            acting_as(v["alice"]), session_scope() as db:  # a shared base model is for use, not for change
        db.get(BaseModel, base_id).trust_remote_code = True
    with acting_as(v["bob"]), session_scope() as db:  # bulk UPDATEs are filtered as well
        from sqlalchemy import update
        assert db.execute(update(Dataset).where(Dataset.id == a_ds).values(name="x")).rowcount == 0
    with acting_as(v["alice"]), session_scope() as db:
        assert db.get(Dataset, a_ds).name == "ds-a"
        db.get(Dataset, a_ds).shared = True  # the owner may share


def test_disabled_account_cannot_log_in_and_sees_nothing(backend):
    auth.add_user("dora", "long-enough-pw", team="red")
    assert auth.check_login("dora", "long-enough-pw") and not auth.check_login("dora", "wrong-password")
    assert not auth.check_login("nobody-here", "long-enough-pw")
    auth.set_disabled("dora")
    assert not auth.check_login("dora", "long-enough-pw")
    assert auth.viewer_by_name("dora") is NOBODY
    with pytest.raises(auth.AuthError, match="at least 8"):
        auth.add_user("eve", "short")
    with pytest.raises(auth.AuthError, match="already exists"):
        auth.add_user("dora", "long-enough-pw")


def test_login_needed_by_host(backend):
    assert auth.login_needed("127.0.0.1") is False  # embedded, no accounts: nothing changes
    with pytest.raises(auth.AuthError, match="studio users add NAME --role admin"):
        auth.login_needed("0.0.0.0")
    auth.add_user("root", "password-root", role="admin")
    assert auth.login_needed("0.0.0.0") and auth.login_needed("127.0.0.1")  # accounts exist: always


def test_redact_url():
    assert auth.redact_url("postgresql+psycopg://u:s3cret@db:5432/studio") == "postgresql+psycopg://u:***@db:5432/studio"
    assert auth.redact_url("redis://:pw@r:6379/0") == "redis://:***@r:6379/0"
    assert auth.redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_tab_handlers_see_the_logged_in_gradio_user(backend):
    """`studio serve` with accounts: the viewer is the Gradio request's user, inside any handler."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from models_db import access
    from studio.tabs import versions as versions_tab

    v, base_id = _world()
    _, a_job = _make(v["alice"], base_id, "a")
    _, b_job = _make(v["bob"], base_id, "b")
    with session_scope() as db:
        db.add_all([ModelVersion(name="va", base_model_id=base_id, job_id=a_job, method="lora"),
                    ModelVersion(name="vb", base_model_id=base_id, job_id=b_job, method="lora")])
    auth.require_login()
    try:
        for who, seen in (("alice", ["va"]), ("bob", ["vb"]), ("root", ["vb", "va"])):
            token = LocalContext.request.set(SimpleNamespace(username=who))
            try:
                assert [label.split(" ", 1)[1] for label, _ in versions_tab.version_choices()] == seen
            finally:
                LocalContext.request.reset(token)
        assert versions_tab.version_choices() == []  # outside a request (or not logged in): nothing
    finally:
        access.set_resolver(None)


def test_share_checkbox_handler(backend):
    """The Datasets/Versions tabs' "Shared with my team" box: the owner flips it; anyone else gets a message."""
    import gradio as gr

    from studio import sharing
    from studio.tabs import share_box

    v, base_id = _world()
    a_ds, _ = _make(v["alice"], base_id, "a")
    share = share_box.toggle("dataset")
    with acting_as(v["alice"]):
        assert share(a_ds, True).value is True and sharing.is_shared("dataset", a_ds)
    with acting_as(v["bob"]), pytest.raises(gr.Error, match="belongs to user alice"):
        share(a_ds, False)
    with acting_as(v["carol"]):  # same team: sees it shared, but only alice may unshare
        assert share_box.shared_box("dataset", a_ds).value is True
        with pytest.raises(gr.Error, match="only the owner"):
            share(a_ds, False)


def test_generations_are_private_to_whoever_asked(backend, monkeypatch):
    """A member sees and reuses only their own playground generations, even on a version shared with
    their team (sharing a version shares the model, not the prompts); an admin sees all of them."""
    from sqlalchemy import update

    from models_db import Generation
    from studio import generations

    monkeypatch.setattr(generations, "send", lambda gid: True)
    v, base_id = _world()
    _, a_job = _make(v["alice"], base_id, "a")
    with session_scope() as db:  # registered by a worker: alice's, shared with team red
        version = ModelVersion(name="va", base_model_id=base_id, job_id=a_job, method="lora", shared=True)
        db.add(version)
        db.flush()
        version_id = version.id
    settings = {"max_new_tokens": 4}
    with acting_as(v["alice"]):
        [mine] = generations.request([version_id], ["my secret prompt"], settings)
    with session_scope() as db:  # the interactive worker (no viewer) writes alice's answer
        db.execute(update(Generation).where(Generation.id == mine["id"])
                   .values(state="done", output="alice's answer", ms_per_token=3.0))
        assert db.get(Generation, mine["id"]).owner_id == v["alice"].id  # stamped by the access hook
    with acting_as(v["alice"]):  # the owner reuses her own cached row
        [again] = generations.request([version_id], ["my secret prompt"], settings)
        assert again["id"] == mine["id"] and again["output"] == "alice's answer"
    with acting_as(v["carol"]):  # same team, the version is visible to her, the generation is not
        [hers] = generations.request([version_id], ["my secret prompt"], settings)
        assert hers["id"] != mine["id"] and hers["state"] == "queued" and hers["output"] == ""
        [seen] = generations.status([mine["id"]])
        assert seen["state"] == "gone" and "belongs to user alice" in seen["error"] and seen["output"] == ""
        with session_scope() as db:
            assert db.get(Generation, mine["id"]) is None
            assert db.execute(update(Generation).where(Generation.id == mine["id"])
                              .values(output="carol was here")).rowcount == 0
            assert generations.median_ms_per_token(db, version_id) == 3.0  # the latency figure is not private
    with pytest.raises(AccessError, match="belongs to user alice"), acting_as(v["carol"]), session_scope() as db:
        row = db.scalar(select(Generation).where(Generation.id == mine["id"]).execution_options(studio_unfiltered=True))
        row.output = "carol was here"
    with acting_as(v["bob"]):  # another team, on the shared base model
        [bobs] = generations.request([f"base:{base_id}"], ["my secret prompt"], settings)
        with session_scope() as db:
            assert {g.id for g in db.scalars(select(Generation))} == {bobs["id"]}
    for who in (v["root"], None):
        with acting_as(who), session_scope() as db:
            assert {g.id for g in db.scalars(select(Generation))} == {mine["id"], hers["id"], bobs["id"]}
    with acting_as(NOBODY), session_scope() as db:
        assert list(db.scalars(select(Generation))) == []
    assert generations.status([mine["id"]])[0]["output"] == "alice's answer"  # embedded/admin: everything
