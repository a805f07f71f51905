"""Every load of a base (and of its tokenizer) on a worker reads ``trust_remote_code`` from the model's
row and loads weights through safetensors only: evaluation, combining, a merged export (and the reload
that times it) and the playground's generation, each run through its real code on the tiny Llama while
``from_pretrained`` is recorded. Off unless an admin allowed it; on when allowed."""
from __future__ import annotations

import pytest
import transformers

from models_db import BaseModel, Job, session_scope
from models_db import jobs as jobq
from studio import combine, generations
from tests.worker.test_recipe_methods import run_train, studio  # noqa: F401 - studio is a fixture
from worker import evaluation_job, generate, job_process
from worker.export import export_version

MODEL_CLASSES = ("AutoModelForCausalLM", "AutoModelForSequenceClassification")
LOADERS = MODEL_CLASSES + ("AutoTokenizer", "AutoConfig")


@pytest.fixture(scope="module")
def two_loras(studio):  # noqa: F811
    return run_train(studio, "lora"), run_train(studio, "lora", learning_rate=5e-3)


@pytest.fixture
def loads(monkeypatch):
    """(class name, path, kwargs) of every Auto*.from_pretrained call; the real loader still runs."""
    seen = []
    for name in LOADERS:
        cls = getattr(transformers, name)
        real = cls.from_pretrained

        def record(path, *args, _name=name, _real=real, **kwargs):
            seen.append((_name, str(path), kwargs))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", record)
    return seen


def set_trust(model_id: int, on: bool) -> None:
    with session_scope() as db:  # what `studio models trust ID --on/--off` stores
        db.get(BaseModel, model_id).trust_remote_code = on


def assert_flag(seen: list, on: bool, where: str) -> None:
    assert seen, f"{where}: nothing was loaded"
    for name, path, kwargs in seen:
        assert kwargs.get("trust_remote_code") is on, f"{where}: {name}({path}) got {kwargs}"
        if name in MODEL_CLASSES:
            assert kwargs.get("use_safetensors") is True, f"{where}: {name}({path}) got {kwargs}"
    assert {name for name, _, _ in seen} >= {"AutoModelForCausalLM", "AutoTokenizer"}, (where, seen)


@pytest.mark.parametrize("on", [False, True], ids=["not-allowed", "allowed"])
def test_every_worker_load_passes_the_model_rows_trust_flag(on, studio, two_loras, loads, tmp_path,  # noqa: F811
                                                            monkeypatch):
    a, b = two_loras
    set_trust(studio.model_id, on)
    try:
        evaluation_job.load_version(a.id)  # the evaluate job's loader
        assert_flag(loads, on, "evaluate")
        loads.clear()

        job, _ = combine.submit_combine([a.id, b.id], weights="0.5,0.5", name=f"both-{on}")
        with session_scope() as db:
            claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
        assert job_process.main(job.id, claim.fence) == 0
        with session_scope() as db:
            assert db.get(Job, job.id).state == "succeeded", db.get(Job, job.id).error
        assert_flag(loads, on, "combine")
        loads.clear()

        export_version(a.id, tmp_path / "export", format="merged", say=lambda *_: None)
        assert_flag(loads, on, "export")
        assert sum(name == "AutoModelForCausalLM" for name, _, _ in loads) == 3  # the merge, the fidelity
        # check reading the written files back (worker/fidelity.py), then the timed reload
        loads.clear()

        monkeypatch.setattr(generations, "send", lambda gid: True)
        generate.CACHE.clear()
        for ref in (a.id, f"base:{studio.model_id}"):
            [row] = generations.request([ref], [f"What is 2 plus 1? ({on})"], {"max_new_tokens": 2})
            assert generate.run_generation(row["id"]) == "done"
        assert_flag(loads, on, "generate")
    finally:
        set_trust(studio.model_id, False)
        generate.CACHE.clear()
