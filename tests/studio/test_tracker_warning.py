"""A tracker the studio cannot use is said when a job is submitted (CLI: a warning on stderr; Train tab: a
warning toast), and the job is queued all the same: it trains without that tracker, never fails for it."""
import json

from models_db import Job, session_scope
from studio.cli import main
from studio.settings import get_settings
from tests.cli import write_instruction_jsonl


def test_an_unusable_tracker_is_a_warning_at_submit_and_the_job_is_queued(backend, tiny_llama_dir, tmp_path,
                                                                          monkeypatch, capsys):
    from studio import operations
    from tests.tiny import register_tiny_base

    model = register_tiny_base(tiny_llama_dir)
    write_instruction_jsonl(tmp_path / "d.jsonl", 8)
    dataset = operations.add_dataset(tmp_path / "d.jsonl")[0].id
    assert operations.tracker_problems() == []  # none configured: nothing to say
    missing = tmp_path / "no-such-folder" / "mlflow.db"
    monkeypatch.setenv("STUDIO_MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    get_settings.cache_clear()
    main(["train", "--model", str(model), "--dataset", str(dataset), "--method", "lora", "--set", "max_steps=1",
          "--json"])
    out = capsys.readouterr()
    job = json.loads(out.out)  # --json stays clean: the warning is on stderr
    assert "warning: STUDIO_MLFLOW_TRACKING_URI=" in out.err and str(missing.parent) in out.err
    assert "the job trains without it" in out.err
    with session_scope() as db:
        assert db.get(Job, job["id"]).state == "queued"
