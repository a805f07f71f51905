"""Every registered method through the real training job: submitted like the CLI does, claimed, run by
``worker.job_process.main`` in this process, saved as a version, reloaded and exported.

Parametrised over the registry, so a newly registered method is covered without editing this file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select
from transformers import AutoModelForCausalLM

from models_db import Job, Metric, ModelVersion, session_scope
from models_db import jobs as jobq
from studio import operations
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from worker import job_process, lineage, methods
from worker.errors import UserFacingError
from worker.export import export_version

STEPS = 6
# The whole training split in one batch: every step sees the same rows, so the loss must fall.
TRAIN = {"max_steps": STEPS, "learning_rate": 1e-2, "per_device_train_batch_size": 64, "eval_split": 0.1,
         "logging_steps": 1, "eval_steps": STEPS, "save_steps": STEPS}


@dataclass
class Studio:
    model_id: int
    dataset_id: int
    model_dir: str


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir):
    """A migrated embedded studio with the tiny Llama imported and a 40-row instruction data set."""
    from models_db.migrate import upgrade
    from worker.importer import register

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        model_id, model_path = register(tiny_llama_dir, "tiny")
        write_instruction_jsonl(root / "pairs.jsonl")
        dataset, _, _ = operations.add_dataset(root / "pairs.jsonl")
        yield Studio(model_id, dataset.id, model_path)



def run_train(studio: Studio, method: str, parent: int | None = None, **settings) -> ModelVersion:
    """Submit a training job as the CLI does, claim it, run its child entry point here; the new version."""
    spec = build_train_spec(model_id=studio.model_id, dataset_id=studio.dataset_id, method=method,
                            settings={**TRAIN, **settings}, parent_version_id=parent)
    job, _ = operations.submit_train(spec)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "test-worker", lease_seconds=600)
    assert job_process.main(job.id, claim.fence) == 0
    with session_scope() as db:
        job = db.get(Job, job.id)
        assert job.state == "succeeded", job.error
        return db.get(ModelVersion, job.result["version_id"])


def losses(version: ModelVersion) -> list[float]:
    with session_scope() as db:
        return list(db.scalars(select(Metric.value).where(Metric.job_id == version.job_id, Metric.name == "loss")
                               .order_by(Metric.step)))


def versions_of(version: ModelVersion) -> list[ModelVersion]:
    with session_scope() as db:
        chain = lineage.chain(db, version.id)
        db.expunge_all()
    return chain


def fixed_batch(vocab: int) -> dict:
    ids = torch.randint(4, vocab, (3, 10), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def reload(studio: Studio, version: ModelVersion, **load_kwargs):
    """The version rebuilt from disk through its lineage, for inference."""
    base = AutoModelForCausalLM.from_pretrained(studio.model_dir, **load_kwargs)
    return lineage.load_chain(base, versions_of(version), last="inference")


def run_snippet(readme: str, cwd, monkeypatch):
    """Execute the README's loading snippet in the export folder; the model it builds."""
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(cwd)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the snippet is the studio's own output, checked by this test
    return scope["model"]


@pytest.mark.parametrize("name", methods.names())
def test_method_trains_through_the_job_reloads_and_exports(name, studio, trained_models, tmp_path, monkeypatch):
    method = methods.get(name)
    version = run_train(studio, name)
    assert version.method == name and version.metrics["steps"] == STEPS
    curve = losses(version)
    assert len(curve) == STEPS and curve[-1] < curve[0], f"{name}: loss did not fall: {curve}"
    assert 0 < version.metrics["trainable_params"] <= version.metrics["total_params"]
    saved = lineage.artifact(version)
    assert all(p.suffix in (".safetensors", ".json", ".jinja") or p.name == "tokenizer.model"
               for p in saved.iterdir()), sorted(p.name for p in saved.iterdir())

    trained = trained_models[-1]
    batch = fixed_batch(trained.config.vocab_size)
    expected = logits(trained, batch)
    params = methods.parse_params(name, version.config["method_params"])
    # bitsandbytes' 4-bit CPU kernel on AVX-512 machines computes in bf16: the same weights agree to ~1e-3
    atol = 5e-3 if method.load_kwargs(params) else 1e-5
    torch.testing.assert_close(logits(reload(studio, version, **method.load_kwargs(params)), batch), expected,
                               atol=atol, rtol=0)

    out = tmp_path / "export"
    if method.mergeable:
        export_version(version.id, out, merged=True, say=lambda _: None)
        # qlora merges onto the base in full precision: its reference is the adapter on that base
        reference = reload(studio, version) if method.load_kwargs(params) else trained
        standalone = AutoModelForCausalLM.from_pretrained(out)
        assert not (out / "adapter_config.json").exists()
        torch.testing.assert_close(logits(standalone, batch), logits(reference, batch), atol=1e-4, rtol=0)
        assert json.loads((out / "studio_version.json").read_text())["method"] == name
        return
    with pytest.raises(UserFacingError, match=rf"{name} cannot be merged into the base model .*"
                                              r"export the adapter instead \(--format adapter\)"):
        export_version(version.id, tmp_path / "refused", merged=True)
    export_version(version.id, out, merged=False, say=lambda _: None)
    readme = (out / "README.md").read_text()
    assert f"This `{name}` version cannot be merged" in readme and "BASE_MODEL" in readme  # the base it needs
    assert studio.model_dir not in readme and "/tmp/" not in readme  # no path of this machine travels in the card
    monkeypatch.setenv("BASE_MODEL", studio.model_dir)  # as the person points it at their copy of the base
    assert (out / "adapter" / "adapter_config.json").exists()
    torch.testing.assert_close(logits(run_snippet(readme, out, monkeypatch), batch), expected, atol=1e-5, rtol=0)


def test_adalora_reallocates_after_every_optimizer_step(studio, monkeypatch):
    """Epoch-based run with gradient accumulation: the recipe's step count must be the Trainer's, and
    peft's update_and_allocate must see every step 1..N (N = total_step applies the final budget)."""
    from peft.tuners.adalora import AdaLoraModel

    seen = []
    real = AdaLoraModel.update_and_allocate

    def spy(self, global_step):
        # the gradients are still there: peft scores importance from them before zero_grad
        assert any(p.grad is not None for n, p in self.model.named_parameters() if "lora_E" in n)
        seen.append(global_step)
        return real(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", spy)
    # 36 train rows in batches of 8 = 5 batches; accumulating 2 gives 3 optimizer steps per epoch
    version = run_train(studio, "adalora", max_steps=-1, num_train_epochs=2, per_device_train_batch_size=8,
                        gradient_accumulation_steps=2)
    config = json.loads((lineage.artifact(version) / "adapter_config.json").read_text())
    assert version.metrics["steps"] == config["total_step"] == version.config["method_params"]["total_step"] == 6
    assert seen == [1, 2, 3, 4, 5, 6]
    assert config["rank_pattern"]  # the budget was allocated (and saved, so a reload has the pruned ranks)


@pytest.mark.parametrize("name", ["lora", "prompt_tuning", "adapter"])
def test_continue_from_a_version(name, studio, trained_models):
    """Mergeable parents are merged and a new adapter trains on top; unmergeable ones keep training."""
    parent = run_train(studio, name, max_steps=3)
    parent_model = trained_models[-1]
    batch = fixed_batch(parent_model.config.vocab_size)
    parent_logits = logits(parent_model, batch)
    child_version = run_train(studio, name, parent=parent.id, max_steps=3, learning_rate=5e-3)
    assert child_version.parent_id == parent.id
    assert [v.id for v in versions_of(child_version)] == [parent.id, child_version.id]
    trained = logits(trained_models[-1], batch)
    assert not torch.allclose(trained, parent_logits, atol=1e-4)  # it trained further
    assert losses(child_version)[0] < losses(parent)[0]  # starting where the parent left off
    torch.testing.assert_close(logits(reload(studio, child_version), batch), trained, atol=1e-5, rtol=0)
    if methods.get(name).mergeable:
        return
    # the same adapter kept training: the child's artifact has the parent's tensors, trained further
    assert child_version.config["method_params"] == parent.config["method_params"]
    before, after = (load_file(lineage.artifact(v) / "adapter_model.safetensors") for v in (parent, child_version))
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(SpecError, match=rf"version {child_version.id} was trained with {name}, which cannot be merged .*"
                                        rf"Continue it with method {name}"):
        run_train(studio, "lora", parent=child_version.id)


@pytest.mark.parametrize("method, settings, message", [
    ("lora", {"target_modules": "query,value"}, r"lora: target_modules names query, value, which the model does not "
                                                r"have\. Its blocks contain: .*q_proj.*Set --set target_modules="),
    ("lora", {"modules_to_save": "pooler"}, r"modules_to_save names pooler"),
    ("freeze", {"num_trainable_layers": 5}, r"num_trainable_layers=5 but the model has 2 layers"),
    ("lora", {"layers_to_transform": "0,3"}, r"layers_to_transform has an index outside 0\.\.1"),
])
def test_model_dependent_mistakes_fail_before_the_job_is_queued(method, settings, message, studio):
    with session_scope() as db:
        before = db.scalar(select(Job.id).order_by(Job.id.desc()).limit(1))
    spec = build_train_spec(model_id=studio.model_id, dataset_id=studio.dataset_id, method=method,
                            settings=settings)
    with pytest.raises(SpecError, match=message):
        operations.submit_train(spec)
    with session_scope() as db:
        assert db.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) == before


def test_a_method_change_on_continue_says_what_it_means(studio):
    from worker.methods import continuation_note

    parent = run_train(studio, "lora", max_steps=2)
    spec = build_train_spec(model_id=studio.model_id, dataset_id=studio.dataset_id, method="dora",
                            settings={**TRAIN, "max_steps": 2}, parent_version_id=parent.id)
    job, _ = operations.submit_train(spec)
    note = job.config["lineage_note"]
    assert note.startswith(f"Version {parent.id} (lora) is merged into the base first, then a new dora adapter")
    assert "a method change" in note and f"base → #{parent.id} → the new version" in note and "merged export" in note
    assert "cannot be merged, so exports give" in continuation_note(parent.id, "lora", "adapter")
    assert "weights keep training" in continuation_note(parent.id, "prompt_tuning", "prompt_tuning")
