"""The layers and tables that keep the packages one way (docs/architecture.md): the job-kind table drives the
worker's tasks, its entry points and the job page; models_db is told its URL; the studio runs torch work in the
worker's own process."""
import subprocess
import sys

import pytest

from studio.jobkinds import GENERATE, JOB_KINDS, kind, task_name


def test_every_job_kind_has_a_task_an_entry_point_and_a_view():
    from studio.tabs.job_views import VIEWS, has_charts
    from worker import job_process, tasks
    from studio.celery_app import app

    assert set(tasks.TASKS) == set(JOB_KINDS)
    for name, k in JOB_KINDS.items():
        assert k.task in app.tasks and tasks.TASKS[name].name == k.task
        assert callable(job_process.entry_point(type("J", (), {"kind": name})()))  # the module:function imports
        assert name in VIEWS and has_charts(name) == k.trains
    assert task_name(GENERATE) in app.tasks
    assert [k for k in JOB_KINDS if JOB_KINDS[k].trains] == ["train"]
    assert [k for k in JOB_KINDS if JOB_KINDS[k].makes_version] == ["train", "combine"]
    from studio import evaluations

    assert evaluations.follow_up("export", 1, 1, {}) == [] and evaluations.follow_up("bake", 1, 1, {}) == []
    with pytest.raises(ValueError, match="unknown job kind 'bake'; known kinds: train, export"):
        kind("bake")


def test_an_unknown_kind_fails_the_job_with_a_message():
    from worker import job_process
    from worker.errors import UserFacingError

    with pytest.raises(UserFacingError, match="unknown job kind 'bake': this worker runs train, export"):
        job_process.entry_point(type("J", (), {"kind": "bake"})())


def test_models_db_imports_nothing_of_the_studio_and_asks_for_its_url():
    code = ("import sys, models_db\n"
            "assert not any(m == 'studio' or m.startswith('studio.') for m in sys.modules), 'studio imported'\n"
            "try:\n    models_db.get_engine()\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "models_db has no database URL: pass url=... or import studio.settings" in out


def test_the_studio_never_loads_the_worker_or_torch():
    code = ("import sys, studio.app, studio.cli, studio.operations, studio.celery_app, studio.jobkinds\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('worker', 'torch', 'transformers', 'peft'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_hands_torch_work_to_the_worker_and_reports_its_error(tmp_path):
    from tests.cli import Cli

    cli = Cli({"STUDIO_HOME": str(tmp_path)})
    p = cli.run("models", "import", str(tmp_path / "missing"), ok=False)
    assert p.returncode == 2 and p.stderr.strip().endswith(f"error: {tmp_path / 'missing'} does not exist")
    assert "Traceback" not in p.stderr


def test_the_ui_contract_covers_every_studio_module_but_the_ui():
    """import-linter's UI contract lists its source modules by name: a studio module added later and left off
    the list could import the tabs unnoticed."""
    import pkgutil
    import tomllib
    from pathlib import Path

    import studio

    root = Path(__file__).resolve().parents[1]
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    ui = next(c for c in contracts if "studio.tabs" in c.get("forbidden_modules", []))
    modules = {f"studio.{m.name}" for m in pkgutil.iter_modules(studio.__path__)}
    assert modules - set(ui["forbidden_modules"]) - set(ui["source_modules"]) == set()
    assert {"worker", "models_db"} <= set(ui["source_modules"])
