"""The authorization matrix: every UI handler, CLI command and file route, run as each of four people
against a member's own rows, and who may read, change, export, evaluate, generate and delete.

The people: **anonymous** (UI: no login, so Gradio answers 401 before any handler, and the handler run as
NOBODY must show nothing; CLI: ``STUDIO_USER`` naming no account; file route: no cookie), **member** (alice,
team red, who owns the rows), **other team** (bob, a member of team blue) and **admin** (root). Alice's rows
carry a marker in their names: a read is "yes" when the marker reaches the output, a change when the row
changed; a refusal must not leak the marker either.

The table in docs/security.md is rendered from what this test observes, and the test fails when the two
differ: run it with ``STUDIO_WRITE_MATRIX=1`` to rewrite the table after a deliberate change (``MATRIX_DEBUG=1``
prints every refusal it meets). It also fails when a UI handler wired into the app or a CLI command is neither
in the matrix nor listed below as touching no one's rows, so a new route or command cannot slip past it.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from models_db import BaseModel, Dataset, Evaluation, Generation, Job, ModelVersion, session_scope
from models_db.access import NOBODY, acting_as

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
BEGIN = "<!-- authorization matrix: rendered by tests/test_authorization_matrix.py (STUDIO_WRITE_MATRIX=1 rewrites it) -->"
END = "<!-- end of the authorization matrix -->"
ROLES = ("anonymous", "member", "other team", "admin")
USERS = {"member": "alice", "other team": "bob", "admin": "root"}
PASSWORDS = {"alice": "alice-secret-42", "bob": "bob-secret-42", "root": "root-secret-42"}
MARK = "zqalice"  # in the names of alice's rows: seen in an output = the row was read
POLICY = {"owner": (False, True, False, True), "admin": (False, False, False, True), "anyone": (False, True, True, True)}

# UI handlers wired into the app that read or change no one's rows (form plumbing, the tab strip)
UI_WITHOUT_ROWS = {
    "studio.app.remember_tab": "the tab this browser keeps (its localStorage)",
    "studio.app.restore_tab": "reopens the tab this browser kept",
    "studio.tab_state.Shell.hand_to.<locals>.wire.<locals>.handler": "fills another tab's form from this one's values",
    "studio.tab_state.Shell.note_tab.<locals>.<lambda>": "switches tabs",
    "gradio.renderable.Renderable.apply": "Gradio's re-render of a form",
    "studio.tabs.datasets.on_upload": "checks the person's own upload (nothing stored)",
    "studio.tabs.datasets.on_format": "re-checks the person's own upload",
    "studio.tabs.datasets.on_mapping": "re-checks the person's own upload",
    "studio.tabs.datasets.render.<locals>.<lambda>": "clears the form",
    "studio.tabs.jobs.pick_from_queue": "turns a clicked row of the queue table into its id",
    "studio.tabs.jobs.render.<locals>.<lambda>": "resets the watched job",
    "studio.tabs.versions.pick_row": "turns a clicked row of the versions table into its id",
    "studio.tabs.versions.render.<locals>.<lambda>": "hides the delete confirmation",
    "studio.tabs.playground.clear": "clears the conversation in the browser",
    "studio.tabs.side_by_side.show_grid": "shows the side-by-side grid again",
    "studio.tabs.playground.render.<locals>.<lambda>": "resets the conversation",
    "studio.tabs.train.method_defaults": "the method's default values",
    "studio.tabs.train.objective_defaults": "the objective's default values",
    "studio.tabs.train.objective_shows": "which fields the objective shows",
    "studio.tabs.train.remember_form": "the form as this browser keeps it",
    "studio.tabs.train.restore_form": "the form this browser kept",
    "studio.tabs.train.render.<locals>.<lambda>": "form plumbing",
    "studio.tabs.advisor.run": "advice from the numbers in the form (a data set only by its id)",
    "studio.tabs.advisor.render.<locals>.<lambda>": "turns the Measure button on once there is advice",
}
# CLI commands that read or change no one's rows, or act only as the machine's own administrator
CLI_WITHOUT_ROWS = {
    "serve": "starts the studio (the machine's administrator)",
    "worker": "starts a worker, which acts for every owner (the machine's administrator)",
    "db upgrade": "migrates the database (the machine's administrator)",
    "methods list": "the method registry",
    "objectives list": "the objective registry",
    "models import": "reads a model folder on the machine and registers it (as whoever runs it)",
}
# the served app's routes that take a path or serve files: probed as the matrix's file rows, or why not
FILE_ROUTES = {"/gradio_api/file={path_or_url:path}": "file=", "/gradio_api/file/{path:path}": "file/"}
ROUTES_WITHOUT_ROWS = {
    "/static/{path:path}": "Gradio's own front-end files",
    "/assets/{path:path}": "Gradio's own front-end files",
    "/svelte/{path:path}": "Gradio's own front-end files",
    "/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}": "a custom component's code (none used)",
    "/gradio_api/proxy={url_path:path}": "Gradio's proxy to Hugging Face Spaces only, not a local file",
    "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file": "a media stream of the session's own "
                                                                            "(the studio streams none)",
    "/gradio_api/upload": "stores the person's own upload (the Datasets tab's register row)",
    "/gradio_api/upload_progress": "the progress of the person's own upload",
    "/gradio_api/run-history/records/{endpoint}/{record_id}/assets/{asset_id}":
        "Gradio's run history in a Hugging Face bucket (not configured by the studio)",
}


@dataclass
class Probe:
    """One operation: ``run`` performs it as the acting person (``ids`` from ``setup``, made as alice first);
    ``seen`` reads its outcome: True when the operation reached alice's row."""
    action: str
    surface: str  # UI | CLI | file
    what: str
    run: Callable
    policy: str = "owner"
    setup: Callable | None = None
    seen: Callable | None = None  # (world, ids, output) -> bool; default: the marker in the output
    covers: tuple = ()


@dataclass
class World:
    base: int
    dataset: int
    job: int
    version: int
    version2: int
    generation: int
    export_job: int
    zip_path: Path
    made: list = field(default_factory=list)


# --- the world ---------------------------------------------------------------------------------------------

def _make_world(home: Path, tmp: Path) -> World:
    from studio import auth
    from studio.datasets import versions as dataset_versions

    for name, role, team in (("root", "admin", ""), ("alice", "member", "red"), ("bob", "member", "blue")):
        auth.add_user(name, PASSWORDS[name], role=role, team=team)
    model_dir = tmp / "tiny-model"
    model_dir.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 256,
              "max_position_embeddings": 128, "tie_word_embeddings": False}
    (model_dir / "config.json").write_text(json.dumps(config))
    with session_scope() as db:  # imported by the admin CLI: no owner, shared (members train on it)
        base = BaseModel(name="tiny", path=str(model_dir), source=str(model_dir), architecture="LlamaForCausalLM",
                         params_total=300_000, config=config)
        db.add(base)
        db.flush()
        base_id = base.id
    alice = auth.viewer_by_name("alice")
    data = tmp / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"what is {i} + {i}?", "output": f"{2 * i}"}) + "\n"
                            for i in range(12)))
    with acting_as(alice):
        ds, _, _ = dataset_versions.register(data, name=f"{MARK}-data")
        versions = [_version(home, base_id, ds.id, f"{MARK}-v{i}") for i in (1, 2)]
        with session_scope() as db:
            job_id = db.get(ModelVersion, versions[0]).job_id
            db.get(Job, job_id).message = f"{MARK} trained"
            db.add(Evaluation(version_id=versions[0], dataset_id=ds.id, rows=3, metrics={"eval_loss": 7.654321}))
            gen = Generation(cache_key="k-alice", base_model_id=base_id, version_id=versions[0], prompt=f"{MARK} prompt",
                             settings={}, state="done", output=f"{MARK} reply", new_tokens=2)
            export = Job(kind="export", state="succeeded", base_model_id=base_id,
                         config={"version_id": versions[0], "format": "adapter", "merged": False})
            db.add_all([gen, export])
            db.flush()
            gen_id, export_id = gen.id, export.id
    zip_path = home / "exports" / f"version-{versions[0]}-adapter.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(f"zip of {MARK}".encode())
    with session_scope() as db:
        db.get(Job, export_id).result = {"zip": f"exports/{zip_path.name}"}
    return World(base_id, ds.id, job_id, versions[0], versions[1], gen_id, export_id, zip_path)


def _version(home: Path, base_id: int, dataset_id: int, name: str) -> int:
    """A finished LoRA version (with its job and adapter file), owned by whoever acts."""
    with session_scope() as db:
        job = Job(kind="train", state="succeeded", base_model_id=base_id, dataset_id=dataset_id, config={})
        db.add(job)
        db.flush()
        rel = f"versions/job-{job.id}/adapter"
        (home / rel).mkdir(parents=True)
        header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
        (home / rel / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
        v = ModelVersion(name=name, base_model_id=base_id, dataset_id=dataset_id, job_id=job.id, method="lora",
                         artifacts={"adapter": rel}, metrics={"eval_loss": 1.0},
                         config={"model_id": base_id, "dataset_id": dataset_id, "method": "lora",
                                 "method_params": {"r": 4, "lora_alpha": 8}, "training": {"max_steps": 2},
                                 "max_seq_length": 128, "task": "causal_lm"})
        db.add(v)
        db.flush()
        job.result = {"version_id": v.id}
        return v.id


def _as_alice(fn):
    """A setup step made as alice (her rows), returning ids."""
    def setup(w: World) -> dict:
        from studio.auth import viewer_by_name

        with acting_as(viewer_by_name("alice")):
            return fn(w)
    return setup


def _fresh_version(w: World) -> dict:
    from studio.settings import get_settings

    with session_scope() as db:
        dataset_id = db.get(Dataset, w.dataset).id
    return {"v": _version(get_settings().home_abs, w.base, dataset_id, f"{MARK}-fresh")}


def _fresh_job(w: World) -> dict:
    from models_db import jobs as jobq

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={"note": MARK}, base_model_id=w.base, dataset_id=w.dataset)
        return {"job": job.id}


def _alice_advice(w: World) -> dict:
    """The advice on alice's model and data set as the Advisor tab keeps it, for "Measure" (a pre-flight job)."""
    from studio.advisor import advise
    from studio.advisor.sources import studio_inputs

    inputs, _ = studio_inputs(model=w.base, dataset=w.dataset, cpu_only=True, seq_len=32, batch_size=4)
    return {"kept": {**advise(inputs).to_json(), "model_id": w.base, "dataset_id": w.dataset}, **_last_job(w)}


def _alice_preflight(w: World) -> dict:
    from models_db import jobs as jobq

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="preflight", config={"note": MARK}, base_model_id=w.base, dataset_id=w.dataset)
        return {"job": job.id}


def _alice_sweep(w: World) -> dict:
    """A sweep of alice's whose one finished trial made a fresh version (studio/sweeps.py reads it as its best)."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from models_db import Sweep
    from models_db import jobs as jobq
    from studio import sweeps

    version = _fresh_version(w)["v"]
    with session_scope() as db:
        row = Sweep(study_name=f"matrix-{os.urandom(4).hex()}", base_model_id=w.base, dataset_id=w.dataset,
                    method="lora", space={"learning_rate": {"kind": "loguniform", "low": 1e-5, "high": 1e-3}},
                    metric="eval_loss", direction="minimize", trials=1, seed={}, state="running", message=MARK)
        db.add(row)
        db.flush()
        job, _ = jobq.create_job(db, kind="train", config={"note": MARK}, idempotency_key=f"sweep-{row.id}-trial-0",
                                 base_model_id=w.base, dataset_id=w.dataset)
        job.state, job.result = "succeeded", {"version_id": version}
        sweep_id, job_id = row.id, job.id
        db.expunge(row)
    sweeps.study(row).add_trial(create_trial(
        state=TrialState.COMPLETE, value=1.0, params={"learning_rate": 1e-4}, user_attrs={"job_id": job_id},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}))
    return {"sweep": sweep_id, "v": version}


def _tagged_best(w, ids, out) -> bool:
    with session_scope() as db:
        return "best" in (db.get(ModelVersion, ids["v"]).tags or [])


def _sweep_cancelled(w, ids, out) -> bool:
    from models_db import Sweep

    with session_scope() as db:
        return db.get(Sweep, ids["sweep"]).state == "cancelled"


def _dpo_job_with_points(w: World) -> dict:
    from models_db import Metric

    with session_scope() as db:  # a finished job's row (queueing one would hold SQLite's write lock meanwhile)
        job = Job(kind="train", state="succeeded", config={"objective": "dpo", "note": MARK}, base_model_id=w.base,
                  dataset_id=w.dataset)
        db.add(job)
        db.flush()
        db.add(Metric(job_id=job.id, step=1, name="rewards/margins", value=0.25))
        return {"job": job.id}


def _grpo_job_with_samples(w: World) -> dict:
    from models_db import jobs as jobq
    from models_db.schema import GrpoSample

    with session_scope() as db:
        job, _ = jobq.create_job(db, kind="train", config={"objective": "grpo"}, base_model_id=w.base,
                                 dataset_id=w.dataset)
        db.add(GrpoSample(job_id=job.id, step=1, prompt=f"What is 2+2? {MARK}", completion="#### 4", reference="4",
                          rewards={"numeric_match": 1.0}, reward=1.0))
        return {"job": job.id}


def _alice_pair(w: World) -> dict:
    """Two finished answers of alice's two versions to one fresh prompt (a pair to vote on), as a side-by-side grid
    and a Playground conversation; made as alice (_as_alice)."""
    n = os.urandom(3).hex()
    prompt = f"{MARK} question {n}"
    with session_scope() as db:
        gens = [Generation(cache_key=f"pair-{n}-{k}", base_model_id=w.base, version_id=v, prompt=prompt,
                           settings={"mode": "chat"}, state="done", output=f"{MARK} answer {k} {n}", new_tokens=3)
                for k, v in enumerate((w.version, w.version2))]
        db.add_all(gens)
        db.flush()
        a, b = gens[0].id, gens[1].id
    return {"a": a, "b": b, "grid": {"columns": ["A", "B"], "prompts": [prompt], "references": [], "ids": [[a, b]]},
            "duel": {"a": a, "b": b, "label_a": "A", "label_b": "B", "blind": False, "prompt": prompt},
            "history": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"{MARK} answer 0 {n}"}]}


def _alice_vote(w: World) -> dict:
    """A fresh vote of alice's (version 1's answer better), and the last data set and job ids before the probe."""
    from studio import votes
    from studio.auth import viewer_by_name

    ids = _as_alice(_alice_pair)(w)
    with acting_as(viewer_by_name("alice")):
        votes.record(ids["a"], ids["b"], "a")
    return {**ids, **_last_ds(w), **_last_job(w)}


def _new_vote(w, ids, out) -> bool:
    from models_db.schema import PreferenceVote

    with session_scope() as db:
        return db.query(PreferenceVote).filter(PreferenceVote.generation_a_id == ids["a"]).count() > 0


def _version_gone(w, ids, out) -> bool:
    with session_scope() as db:
        return db.get(ModelVersion, ids["v"]) is None


def _job_state(w, ids, out) -> bool:
    with session_scope() as db:
        return db.get(Job, ids["job"]).state == "cancelled" or bool(db.get(Job, ids["job"]).cancel_requested)


def _shared(w, ids, out) -> bool:
    with session_scope() as db:
        return bool(db.get(Dataset, w.dataset).shared)


def _new_job_made(kind: str):
    def seen(w, ids, out) -> bool:
        with session_scope() as db:
            return db.query(Job).filter(Job.kind == kind, Job.id > ids["last_job"]).count() > 0
    return seen


def _last_job(w: World) -> dict:
    with session_scope() as db:
        return {"last_job": max(j.id for j in db.query(Job))}


def _new_generation(w, ids, out) -> bool:
    with session_scope() as db:
        return db.query(Generation).filter(Generation.id > ids["last_gen"]).count() > 0


def _last_gen(w: World) -> dict:
    with session_scope() as db:
        return {"last_gen": max(g.id for g in db.query(Generation))}


def _renamed(w, ids, out) -> bool:
    with session_scope() as db:
        return db.get(ModelVersion, w.version2).notes.endswith("edited")


def _unpinned(w: World) -> dict:
    from models_db import BenchmarkPin

    with session_scope() as db:
        db.query(BenchmarkPin).filter_by(base_model_id=w.base, dataset_id=w.dataset).delete()
    return {}


def _pinned(w, ids, out) -> bool:
    from models_db import BenchmarkPin

    with session_scope() as db:
        return db.get(BenchmarkPin, (w.base, w.dataset)) is not None


def _succeeded(w, ids, out) -> bool:
    return out is not None


def _eval_value(w, ids, out) -> bool:
    return "7.65" in _text(out)


def _new_dataset(w, ids, out) -> bool:
    with session_scope() as db:
        return db.query(Dataset).filter(Dataset.id > ids["last_ds"]).count() > 0


def _last_ds(w: World) -> dict:
    with session_scope() as db:
        return {"last_ds": max(d.id for d in db.query(Dataset))}


def _combined(w: World) -> dict:
    return {**_last_job(w)}


# --- the probes ----------------------------------------------------------------------------------------------

def _ui_probes() -> list[Probe]:
    from studio.tabs import advisor, audit_box, datasets, fleet, jobs, playground, share_box, side_by_side, train, \
        version_jobs, versions
    from studio.tabs import sweeps as sweeps_tab

    def form_values():
        return train.form_values("lora", {"max_steps": 2})

    def start_training(w, ids):
        values = [None if isinstance(v, type(gr.skip())) else v for v in form_values()]
        return train.start(w.base, w.dataset, "lora", None, None, f"nonce-{ids['last_job']}", *values)

    def delete(w, ids):
        _, _, pending = versions.ask_delete(ids["v"], False)
        return versions.confirm_delete(pending, [])

    upload = _upload_file()
    P = Probe
    return [
        P("read", "UI", "Datasets tab: the list and a data set's details", lambda w, i: (
            datasets.datasets_frame(), datasets.refresh(), datasets.details_markdown(w.dataset)),
          covers=("studio.tabs.datasets.datasets_frame", "studio.tabs.datasets.refresh",
                  "studio.tabs.datasets.details_markdown")),
        P("read", "UI", "Advisor tab: the pickers and a data set's facts", lambda w, i: (
            advisor.on_open(None, None, "1 x 24 GB"), advisor.fill_from_dataset(w.dataset, None)),
          covers=("studio.tabs.advisor.on_open", "studio.tabs.advisor.fill_from_dataset")),
        P("read", "UI", "Advisor tab: a pre-flight's progress and figures", lambda w, i: advisor.poll_measure(i["job"]),
          setup=_as_alice(_alice_preflight), seen=lambda w, i, out: f"job #{i['job']}" in _text(out),
          covers=("studio.tabs.advisor.poll_measure",)),
        P("change", "UI", "Advisor tab: measure the advice on a data set (a pre-flight job)", lambda w, i:
          advisor.measure(i["kept"], 1), setup=_as_alice(_alice_advice), seen=_new_job_made("preflight"),
          covers=("studio.tabs.advisor.measure",)),
        P("read", "UI", "Advisor tab: a base model's description", lambda w, i: advisor.describe_model(w.base),
          policy="anyone", seen=lambda w, i, out: "tiny" in _text(out), covers=("studio.tabs.advisor.describe_model",)),
        P("read", "UI", "Train tab: the pickers, the data set's objective and the run's cost", lambda w, i: (
            train.refresh_choices(), train.follow_dataset(w.dataset, None, "lora"),
            train.cost(w.base, w.dataset, "lora", *form_values())),
          seen=lambda w, i, out: MARK in _text(out[0]) and "Cannot estimate" not in _text(out[2]),
          covers=("studio.tabs.train.refresh_choices", "studio.tabs.train.follow_dataset", "studio.tabs.train.cost")),
        P("read", "UI", "Jobs tab: a job's view, curves, log and cancel button", lambda w, i: (
            jobs.on_open(w.job), jobs.select_job(w.job), jobs.layout(w.job), jobs.poll(w.job, None),
            jobs.reveal(w.job, None), jobs.cancel_button(w.job)),
          seen=lambda w, i, out: MARK in _text(out),
          covers=("studio.tabs.jobs.on_open", "studio.tabs.jobs.select_job", "studio.tabs.jobs.layout",
                  "studio.tabs.jobs.poll", "studio.tabs.jobs.reveal", "studio.tabs.jobs.cancel_button")),
        P("read", "UI", "Jobs tab: a preference job's objective figures", lambda w, i: jobs.objective_poll(i["job"], None),
          setup=_as_alice(_dpo_job_with_points), seen=lambda w, i, out: isinstance(out[0], gr.LinePlot) and out[0].visible,
          covers=("studio.tabs.jobs.objective_poll",)),
        P("read", "UI", "Jobs tab: a GRPO job's sampled completions", lambda w, i: jobs.samples_poll(i["job"], None),
          setup=_as_alice(_grpo_job_with_samples), seen=lambda w, i, out: out[0].visible and MARK in _text(out[0].value),
          covers=("studio.tabs.jobs.samples_poll",)),
        P("read", "UI", "Versions tab: the list, a version, a comparison", lambda w, i: (
            versions.on_open(w.version, [w.version]), versions.show_version(w.version),
            versions.compare_view([w.version, w.version2], "step")),
          covers=("studio.tabs.versions.on_open", "studio.tabs.versions.show_version",
                  "studio.tabs.versions.compare_view")),
        P("read", "UI", "Versions tab: evaluations, benchmarks, a job's status", lambda w, i: (
            version_jobs.on_open(), version_jobs.evaluations_md(w.version), version_jobs.benchmark_choices(w.version),
            version_jobs.examples_frame(w.version, w.dataset, False), version_jobs.job_status(w.job, w.version)),
          seen=lambda w, i, out: _eval_value(w, i, out[1]) or MARK in _text(out),
          covers=("studio.tabs.version_jobs.on_open", "studio.tabs.version_jobs.evaluations_md",
                  "studio.tabs.version_jobs.benchmark_choices", "studio.tabs.version_jobs.examples_frame",
                  "studio.tabs.version_jobs.job_status")),
        P("read", "UI", "Playground: the models to pick and a reply", lambda w, i: (
            playground.on_open(None), playground.poll(w.generation, [])),
          covers=("studio.tabs.playground.on_open", "studio.tabs.playground.poll")),
        P("read", "UI", "Side by side: prompts sampled from a version's data, the grid", lambda w, i: (
            side_by_side.sample([w.version], 2), side_by_side.poll({"columns": ["a"], "prompts": ["p"],
                                                                     "references": [], "ids": [[w.generation]]})),
          seen=lambda w, i, out: "what is" in _text(out) or MARK in _text(out),
          covers=("studio.tabs.side_by_side.sample", "studio.tabs.side_by_side.poll")),
        P("read", "UI", "Sweeps tab: the list, a sweep's trials, curves and importances", lambda w, i: (
            sweeps_tab.sweep_choices(), sweeps_tab.show(i["sweep"]), sweeps_tab.tick(i["sweep"], None)),
          setup=_as_alice(_alice_sweep),
          covers=("studio.tabs.sweeps.sweep_choices", "studio.tabs.sweeps.show", "studio.tabs.sweeps.tick")),
        P("read", "UI", "Fleet tab: the workers and where jobs run", lambda w, i: fleet.refresh(), policy="anyone",
          seen=_succeeded, covers=("studio.tabs.fleet.refresh",)),
        P("read", "UI", "Fleet tab: the audit log", lambda w, i: audit_box.refresh(), policy="admin",
          seen=lambda w, i, out: out[0].visible and bool(out[1]), covers=("studio.tabs.audit_box.refresh",)),
        P("change", "UI", "Datasets tab: register an upload (a row of one's own)", lambda w, i: datasets.register(
            upload, "mine", "auto", None, 512, 0, 0, None, True, *([None] * 16)), policy="anyone", setup=_last_ds,
          seen=_new_dataset, covers=("studio.tabs.datasets.register",)),
        P("change", "UI", "Datasets tab: a new version of a data set (mapping)", lambda w, i: datasets.edit_version(
            w.dataset, None, 512), seen=_succeeded, covers=("studio.tabs.datasets.edit_version",)),
        P("change", "UI", "Datasets/Versions tabs: share with the team", lambda w, i: (
            share_box.toggle("dataset")(w.dataset, True), share_box.toggle("dataset")(w.dataset, False)),
          setup=lambda w: {}, seen=lambda w, i, out: out is not None,
          covers=("studio.tabs.share_box.toggle.<locals>.handler",)),
        P("change", "UI", "Versions tab: rename, tag, notes", lambda w, i: versions.save_version(
            w.version2, f"{MARK}-v2", "", "edited"), seen=_renamed, covers=("studio.tabs.versions.save_version",)),
        P("change", "UI", "Jobs tab: cancel a job", lambda w, i: jobs.cancel(i["job"]), setup=_as_alice(_fresh_job),
          seen=_job_state, covers=("studio.tabs.jobs.cancel",)),
        P("change", "UI", "Train tab: train on a data set", start_training, setup=_last_job,
          seen=_new_job_made("train"), covers=("studio.tabs.train.start",)),
        P("change", "UI", "Sweeps tab: promote the best trial's version", lambda w, i: sweeps_tab.promote(
            i["sweep"], "best"), setup=_as_alice(_alice_sweep), seen=_tagged_best,
          covers=("studio.tabs.sweeps.promote",)),
        P("change", "UI", "Sweeps tab: start a sweep on a data set", lambda w, i: sweeps_tab.start(
            "tiny", w.dataset, "lora", 1, "learning_rate=loguniform:1e-5:1e-3", "train_loss", "random", "max_steps=2"),
          setup=_last_job, seen=_new_job_made("train"), covers=("studio.tabs.sweeps.start",)),
        P("change", "UI", "Versions tab: combine versions", lambda w, i: version_jobs.start_combine(
            [w.version, w.version2], "", "linear", 0.5, f"combined-{i['last_job']}"), setup=_last_job,
          seen=_new_job_made("combine"), covers=("studio.tabs.version_jobs.start_combine",)),
        P("change", "UI", "Versions tab: pin a benchmark for the version's base", lambda w, i: version_jobs.pin_for_base(
            w.version, w.dataset), policy="admin", setup=_unpinned, seen=_pinned,
          covers=("studio.tabs.version_jobs.pin_for_base",)),
        P("export", "UI", "Versions tab: the export's state and hint", lambda w, i: (
            versions.export_hint(w.version, "adapter"), versions.known_export(w.version, "adapter"),
            versions.export_status(w.export_job)),
          seen=lambda w, i, out: "Cannot export" not in _text(out[0]) and out[1][0] is not None and
                                 "Ready" in _text(out[2]),
          covers=("studio.tabs.versions.export_hint", "studio.tabs.versions.known_export",
                  "studio.tabs.versions.export_status")),
        P("export", "UI", "Versions tab: build an export", lambda w, i: versions.build_export(w.version2, "adapter"),
          seen=_succeeded, covers=("studio.tabs.versions.build_export",)),
        P("evaluate", "UI", "Versions tab: evaluate on a data set", lambda w, i: version_jobs.start_evaluate(
            w.version2, w.dataset), seen=_succeeded,
          covers=("studio.tabs.version_jobs.start_evaluate",)),
        P("generate", "UI", "Playground: send a message", lambda w, i: playground.send(
            str(w.version), f"hello {i['last_gen']}", [], 8, 0, 1, 0), setup=_last_gen, seen=_new_generation,
          covers=("studio.tabs.playground.send",)),
        P("generate", "UI", "Side by side: run prompts", lambda w, i: side_by_side.run(
            [w.version, w.version2], False, f"hi {i['last_gen']}", None, 8, 0, 1, 0), setup=_last_gen,
          seen=_new_generation, covers=("studio.tabs.side_by_side.run",)),
        P("generate", "UI", "Playground: another answer to compare with the last reply", lambda w, i: playground.regenerate(
            str(w.version), i["history"], 8, 0.7, 1, 0), setup=lambda w: {**_as_alice(_alice_pair)(w), **_last_gen(w)},
          seen=_new_generation, covers=("studio.tabs.playground.regenerate",)),
        P("read", "UI", "Side by side: the next pair of answers to judge", lambda w, i: side_by_side.next_pair(
            i["grid"], False), setup=_as_alice(_alice_pair), covers=("studio.tabs.side_by_side.next_pair",)),
        P("change", "UI", "Side by side / Playground: vote which answer is better", lambda w, i: (
            side_by_side.vote(i["duel"], "a"), playground.vote({"a": i["b"], "b": i["a"]}, "b", i["history"])),
          setup=_as_alice(_alice_pair), seen=_new_vote,
          covers=("studio.tabs.side_by_side.vote", "studio.tabs.playground.vote")),
        P("change", "UI", "Side by side: build the preference data set from the votes", lambda w, i: side_by_side.build_votes(
            ""), setup=_alice_vote, seen=_new_dataset, covers=("studio.tabs.side_by_side.build_votes",)),
        P("change", "UI", "Side by side: train DPO from the preferred version", lambda w, i: side_by_side.train_votes(""),
          setup=_alice_vote, seen=_new_job_made("train"), covers=("studio.tabs.side_by_side.train_votes",)),
        P("delete", "UI", "Versions tab: delete a version", delete, setup=_as_alice(_fresh_version), seen=_version_gone,
          covers=("studio.tabs.versions.ask_delete", "studio.tabs.versions.confirm_delete")),
    ]


def _upload_file() -> dict:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": f"my own row {i}"}) + "\n" for i in range(4)))
    return {"path": str(path), "name": "mine.jsonl"}


def _cli_probes() -> list[Probe]:
    def C(action, command, shown, argv, policy="owner", **kw):
        """``studio COMMAND SHOWN`` in the table; ``argv(world, ids)`` the arguments run."""
        probe = Probe(action, "CLI", f"`studio {command}{' ' + shown if shown else ''}`", argv, policy, **kw)
        probe.covers = (command,)
        return probe

    upload = _upload_file()["path"]
    return [
        C("read", "dataset list", "", lambda w, i: ["dataset", "list"]),
        C("read", "dataset show", "ID", lambda w, i: ["dataset", "show", str(w.dataset)]),
        C("read", "jobs list", "", lambda w, i: ["jobs", "list"]),
        C("read", "jobs show", "ID", lambda w, i: ["jobs", "show", str(w.job)]),
        C("read", "versions list", "", lambda w, i: ["versions", "list"]),
        C("read", "versions show", "ID", lambda w, i: ["versions", "show", str(w.version)]),
        C("read", "versions compare", "A B", lambda w, i: ["versions", "compare", str(w.version), str(w.version2)]),
        C("read", "advise", "--dataset ID", lambda w, i: ["advise", "--model", "tiny", "--dataset", str(w.dataset),
                                                         "--gpu-memory-gb", "24"],
          seen=_succeeded),
        C("read", "sweep show", "ID", lambda w, i: ["sweep", "show", str(i["sweep"])], setup=_as_alice(_alice_sweep)),
        C("read", "sweep list", "", lambda w, i: ["sweep", "list"], setup=_as_alice(_alice_sweep),
          seen=lambda w, i, out: i["sweep"] in [r["id"] for r in out.get("sweeps", [])]),
        C("read", "models list", "", lambda w, i: ["models", "list"], "anyone", seen=lambda w, i, out: "tiny" in _text(out)),
        C("read", "models benchmarks", "MODEL", lambda w, i: ["models", "benchmarks", "tiny"], "anyone", seen=_succeeded),
        C("read", "workers list", "", lambda w, i: ["workers", "list"], "anyone", seen=_succeeded),
        C("read", "users list", "", lambda w, i: ["users", "list"], "admin", seen=lambda w, i, out: "alice" in _text(out)),
        C("read", "audit list", "", lambda w, i: ["audit", "list"], "admin", seen=_succeeded),
        C("change", "dataset add", "FILE (a row of one's own)", lambda w, i: ["dataset", "add", upload, "--drop-bad-rows"],
          "anyone", seen=_succeeded),
        C("change", "dataset edit", "ID", lambda w, i: ["dataset", "edit", str(w.dataset), "--format", "instruction"],
          seen=_succeeded),
        C("change", "versions edit", "ID", lambda w, i: ["versions", "edit", str(w.version2), "--notes", "edited"],
          seen=_renamed),
        C("change", "share", "dataset ID --on", lambda w, i: ["share", "dataset", str(w.dataset), "--on"], seen=_shared),
        C("change", "jobs cancel", "ID", lambda w, i: ["jobs", "cancel", str(i["job"])], setup=_as_alice(_fresh_job),
          seen=_job_state),
        C("change", "train", "--dataset ID", lambda w, i: ["train", "--model", "tiny", "--dataset", str(w.dataset),
                                                          "--method", "lora", "--set", "max_steps=2",
                                                          "--idempotency-key", f"k{i['last_job']}"],
          setup=_last_job, seen=_new_job_made("train")),
        C("change", "sweep", "--dataset ID", lambda w, i: ["sweep", "--model", "tiny", "--dataset", str(w.dataset),
                                                          "--trials", "1", "--space", "learning_rate=loguniform:1e-5:1e-3",
                                                          "--metric", "train_loss", "--set", "max_steps=2"],
          setup=_last_job, seen=_new_job_made("train")),
        C("change", "sweep cancel", "ID", lambda w, i: ["sweep", "cancel", str(i["sweep"])],
          setup=_as_alice(_alice_sweep), seen=_sweep_cancelled),
        C("change", "versions combine", "A B", lambda w, i: ["versions", "combine", str(w.version), str(w.version2),
                                                            "--name", f"c{i['last_job']}"],
          setup=_last_job, seen=_new_job_made("combine")),
        C("change", "models pin-benchmark", "MODEL --dataset ID",
          lambda w, i: ["models", "pin-benchmark", "tiny", "--dataset", str(w.dataset)], "admin", seen=_succeeded),
        C("change", "models unpin-benchmark", "MODEL --dataset ID",
          lambda w, i: ["models", "unpin-benchmark", "tiny", "--dataset", str(w.dataset)], "admin", seen=_succeeded),
        C("change", "users add", "NAME", lambda w, i: ["users", "add", f"new{i['n']}", "--password-stdin"], "admin",
          setup=lambda w: {"n": os.urandom(3).hex()}, seen=_succeeded),
        C("change", "users disable", "NAME", lambda w, i: ["users", "disable", "carol"], "admin", seen=_succeeded),
        C("change", "users enable", "NAME", lambda w, i: ["users", "enable", "carol"], "admin", seen=_succeeded),
        C("change", "users role", "NAME ROLE", lambda w, i: ["users", "role", "carol", "member"], "admin", seen=_succeeded),
        C("change", "users unlock", "NAME", lambda w, i: ["users", "unlock", "carol"], "admin", seen=_succeeded),
        C("change", "models trust", "MODEL --on/--off", lambda w, i: ["models", "trust", "tiny", "--off"], "admin",
          seen=_succeeded),
        C("export", "versions export", "ID --out DIR", lambda w, i: ["versions", "export", str(w.version), "--out", i["out"]],
          setup=lambda w: {"out": _out_dir()}, seen=_succeeded),
        C("export", "models export", "MODEL --format gguf-f16",
          lambda w, i: ["models", "export", "tiny", "--format", "gguf-f16"], "anyone", seen=_succeeded),
        C("evaluate", "versions evaluate", "ID --dataset ID",
          lambda w, i: ["versions", "evaluate", str(w.version2), "--dataset", str(w.dataset)], seen=_succeeded),
        C("evaluate", "models evaluate", "MODEL --dataset ID",
          lambda w, i: ["models", "evaluate", "tiny", "--dataset", str(w.dataset)], seen=_succeeded),
        C("generate", "versions generate", "ID --prompt P",
          lambda w, i: ["versions", "generate", str(w.version), "--prompt", f"hello {i['last_gen']}"], setup=_last_gen,
          seen=_new_generation),
        C("read", "votes list", "", lambda w, i: ["votes", "list"], setup=_alice_vote),
        C("change", "votes add", "A B --winner a", lambda w, i: ["votes", "add", str(i["a"]), str(i["b"]), "--winner", "a"],
          setup=_as_alice(_alice_pair), seen=_new_vote),
        C("change", "votes dataset", "", lambda w, i: ["votes", "dataset"], setup=_alice_vote, seen=_new_dataset),
        C("change", "votes train-dpo", "", lambda w, i: ["votes", "train-dpo", "--set", "max_steps=2"],
          setup=_alice_vote, seen=_new_job_made("train")),
        C("delete", "versions delete", "ID", lambda w, i: ["versions", "delete", str(i["v"])],
          setup=_as_alice(_fresh_version), seen=_version_gone),
    ]


def _out_dir() -> str:
    import tempfile

    return tempfile.mkdtemp()


# --- running them ----------------------------------------------------------------------------------------------

def _text(obj) -> str:
    """Everything an output shows, as text (tables, components' values and choices, nested tuples)."""
    if isinstance(obj, pd.DataFrame):
        return obj.to_csv()
    if isinstance(obj, (list, tuple)):
        return "\n".join(_text(o) for o in obj)
    if isinstance(obj, dict):
        return json.dumps(obj, default=str)
    if isinstance(obj, (gr.components.Component, gr.blocks.BlockContext)):
        return _text([getattr(obj, "value", None), getattr(obj, "choices", None)])
    return "" if obj is None else str(obj)


def _viewer(role: str):
    from studio.auth import viewer_by_name

    return NOBODY if role == "anonymous" else viewer_by_name(USERS[role])


CRASHES: list[str] = []


def _setup(w: World, probe: Probe) -> dict:
    """The probe's fresh rows, made outside any person's view (or as alice, by _as_alice)."""
    if probe.setup is None:
        return {}
    with acting_as(None):
        return probe.setup(w)


def _run_ui(w: World, probe: Probe, role: str) -> bool:
    ids = _setup(w, probe)
    try:
        with acting_as(_viewer(role)):
            out = probe.run(w, ids)
    except (gr.Error, ValueError, PermissionError) as e:  # AccessError, SpecError …: a refusal
        if os.environ.get("MATRIX_DEBUG"):
            print(f"UI {probe.what} as {role}: {e}", file=sys.__stderr__)
        assert MARK not in str(e) or role in ("member", "admin"), f"{probe.what}: a refusal leaks {e}"
        return False
    except Exception as e:  # noqa: BLE001  a crash instead of a refusal: collected, the test fails at the end
        CRASHES.append(f"{probe.what} as {role}: {type(e).__name__}: {e}")
        return False
    seen = (probe.seen or (lambda w, i, o: MARK in _text(o)))(w, ids, out)
    if role not in ("member", "admin") and probe.policy != "anyone":
        assert MARK not in _text(out), f"{probe.what} as {role}: the output shows alice's rows"
    return bool(seen)


def _run_cli(w: World, probe: Probe, role: str, monkeypatch, capsys) -> bool:
    from studio.cli import main

    ids = _setup(w, probe)
    monkeypatch.setenv("STUDIO_USER", "nobody" if role == "anonymous" else USERS[role])
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-new-secret-42\n"))
    argv = probe.run(w, ids)
    try:
        main([*argv, "--json"])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    if code != 0:
        if os.environ.get("MATRIX_DEBUG"):
            print(f"CLI {argv} as {role}: {err.strip()[-300:]}", file=sys.__stderr__)
        assert MARK not in err or role in ("member", "admin"), f"{argv} as {role}: a refusal leaks {err}"
        assert "Traceback" not in err
        return False
    parsed = json.loads(out) if out.strip() else {}
    seen = (probe.seen or (lambda w, i, o: MARK in _text(o)))(w, ids, parsed)
    if role not in ("member", "admin") and probe.policy != "anyone":
        assert MARK not in out, f"{argv} as {role}: the output shows alice's rows"
    return bool(seen)


def _stub_heavy_work(monkeypatch) -> None:
    """What runs after the checks and needs a worker: the export's handover and the wait for generations."""
    from studio.cli import generate as cli_generate
    from studio.cli import versions as cli_versions

    def fake_export(kind, version_id, out, fmt):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "studio_version.json").write_text(json.dumps({"fidelity": {"verified": True}}))
        return {"out": out}

    monkeypatch.setattr(cli_versions, "run_in_worker", fake_export)
    monkeypatch.setattr(cli_generate, "wait", lambda rows, timeout: [{**r, "state": "done"} for r in rows])


def _file_route(w: World, monkeypatch) -> dict[str, bool]:
    """GET the export zip of alice's version through the served app's file route, as each person."""
    from gradio.routes import App
    from starlette.testclient import TestClient

    from models_db import access
    from studio import auth
    from studio.settings import get_settings
    from studio.webguard import FileGuard

    monkeypatch.setattr(access, "_resolver", access._resolver)
    monkeypatch.setattr(FileGuard, "login_required", FileGuard.login_required)
    opts = auth.launch_options("127.0.0.1")
    with gr.Blocks() as blocks:
        gr.Markdown("studio")
    blocks.auth, blocks.auth_message = opts["auth"], opts["auth_message"]
    blocks.allowed_paths = [str(get_settings().path("exports"))]
    app = App.create_app(blocks, app_kwargs=opts["app_kwargs"])
    access.set_resolver(None)  # the handlers' resolver stays with the served app's requests
    served = {path for path in _route_paths(app.routes) if re.search(r":path}|file|asset|upload", path)}
    assert not served - set(FILE_ROUTES) - set(ROUTES_WITHOUT_ROWS), \
        f"file routes neither in the matrix nor listed: {sorted(served - set(FILE_ROUTES) - set(ROUTES_WITHOUT_ROWS))}"
    got = {}
    with TestClient(app) as client:
        gate = client.post("/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "x"})
        got["ui gate"] = gate.status_code not in (401, 403)
        for role in ROLES:
            client.cookies.clear()
            if role != "anonymous":
                name = USERS[role]
                assert client.post("/login", data={"username": name, "password": PASSWORDS[name]}).status_code == 200
            for route in FILE_ROUTES.values():
                r = client.get(f"/gradio_api/{route}{w.zip_path}")
                got[route, role] = r.status_code == 200 and MARK in r.text
    return got


def _route_paths(routes) -> set[str]:
    """Every route's path, those of included routers too (FastAPI keeps Gradio's API router as one entry)."""
    paths = set()
    for route in routes:
        if getattr(route, "original_router", None) is not None:  # an included router
            paths |= {route.include_context.prefix + p for p in _route_paths(route.original_router.routes)}
        elif getattr(route, "routes", None):  # a mounted app
            paths |= {route.path + p for p in _route_paths(route.routes)}
        elif getattr(route, "path", None) is not None:
            paths.add(route.path)
    return paths


def _wired_handlers() -> set[str]:
    from studio.app import build_app

    names = set()
    for dep in build_app().fns.values():
        if dep.fn is not None:
            names.add(f"{dep.fn.__module__}.{dep.fn.__qualname__}")
    return names


def _cli_commands() -> set[str]:
    from studio.cli import build_parser

    found = set()

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        walk(sub, [*prefix, name])
                    else:
                        found.add(" ".join([*prefix, name]))
    walk(build_parser(), [])
    return found


def render(rows: list[tuple[str, str, str, tuple[bool, ...]]]) -> str:
    """The matrix as the Markdown table docs/security.md holds."""
    lines = [BEGIN, "", "| action | where | operation (on a member's own rows) | " + " | ".join(ROLES) + " |",
             "|---|---|---|" + "---|" * len(ROLES)]
    lines += [f"| {action} | {surface} | {what} | " + " | ".join("yes" if c else "no" for c in cells) + " |"
              for action, surface, what, cells in rows]
    return "\n".join([*lines, "", END])


ORDER = ("read", "change", "export", "evaluate", "generate", "delete")


def test_authorization_matrix(backend, tmp_path, monkeypatch, capsys):
    from studio.settings import get_settings

    w = _make_world(get_settings().home_abs, tmp_path)
    from studio import auth

    auth.add_user("carol", "carol-secret-42", team="red")
    _stub_heavy_work(monkeypatch)
    ui, cli = _ui_probes(), _cli_probes()

    covered = {name for p in ui for name in p.covers}
    wired = _wired_handlers()
    assert not wired - covered - set(UI_WITHOUT_ROWS), \
        f"UI handlers neither in the matrix nor listed as touching no rows: {sorted(wired - covered - set(UI_WITHOUT_ROWS))}"
    commands = {name for p in cli for name in p.covers}
    assert not _cli_commands() - commands - set(CLI_WITHOUT_ROWS), \
        f"CLI commands neither in the matrix nor listed: {sorted(_cli_commands() - commands - set(CLI_WITHOUT_ROWS))}"

    CRASHES.clear()
    rows, wrong = [], []
    for probe in ui:
        cells = tuple(_run_ui(w, probe, role) for role in ROLES)
        rows.append((probe, cells))
    files = _file_route(w, monkeypatch)
    assert files.pop("ui gate") is False, "the Gradio API answered a request without a login"
    rows = [(p, (False, *cells[1:])) for p, cells in rows]  # anonymous: 401 before any handler (and NOBODY saw nothing)
    for probe in cli:
        rows.append((probe, tuple(_run_cli(w, probe, role, monkeypatch, capsys) for role in ROLES)))
    for route in FILE_ROUTES.values():
        what = f"`/gradio_api/{route}` an export zip" + (" (Gradio's older alias)" if route == "file/" else "")
        rows.append((Probe("export", "file", what, None), tuple(files[route, r] for r in ROLES)))

    for probe, cells in rows:
        if cells != POLICY[probe.policy]:  # the file rows too: the owner's (and the admin's) export only
            wrong.append(f"{probe.surface} {probe.what}: {dict(zip(ROLES, cells))}, expected {probe.policy}")
    assert not CRASHES and not wrong, "\n".join(CRASHES + wrong)

    table = render([(p.action, p.surface, p.what.replace("|", "\\|"), cells)
                    for p, cells in sorted(rows, key=lambda r: ORDER.index(r[0].action))])
    text = DOC.read_text()
    if os.environ.get("STUDIO_WRITE_MATRIX"):
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: table, text, flags=re.S) \
            if BEGIN in text else text.rstrip() + "\n\n" + table + "\n"
        DOC.write_text(text)
    assert table in text, "docs/security.md's authorization matrix differs: rerun with STUDIO_WRITE_MATRIX=1"
