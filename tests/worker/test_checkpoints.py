"""Checkpoint housekeeping and failure messages: rotation keeps the last N plus the best by eval loss,
torn checkpoints are never resumed from, the disk check refuses a run that cannot fit, a non-finite
loss or weights stop training without writing a checkpoint, and an out-of-memory error carries the
advisor's settings for this job."""
import math
from types import SimpleNamespace

import pytest
import torch

from worker import checkpoints as ck
from worker.errors import UserFacingError, humanize, oom_advice


def make(out, step, complete=True):
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x" * 100)
    if complete:
        ck.mark_complete(d, step)
    return d


def test_rotation_keeps_the_last_n_and_the_best_by_eval_loss(tmp_path):
    for step in (10, 20, 30, 40, 50):
        make(tmp_path, step)
    gone = ck.rotate(tmp_path, keep_last=2, eval_losses={10: 2.0, 20: 0.5, 30: 0.9, 40: 1.0})
    assert sorted(p.name for p in gone) == ["checkpoint-10", "checkpoint-30"]
    assert [p.name for p in ck.complete_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-40", "checkpoint-50"]


def test_a_torn_checkpoint_is_never_the_resume_point_and_is_removed(tmp_path):
    from worker.callbacks import latest_complete_checkpoint

    make(tmp_path, 10)
    make(tmp_path, 20, complete=False)  # the process died while writing it
    assert latest_complete_checkpoint(tmp_path).endswith("checkpoint-10")
    assert [p.name for p in ck.discard_torn(tmp_path)] == ["checkpoint-20"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]


def test_disk_check_refuses_a_run_whose_checkpoints_do_not_fit(tmp_path):
    per = ck.checkpoint_bytes(trainable=1_000_000_000, total=7_000_000_000, weight_bytes=2, optimizer="adamw_torch",
                              adapter_only=False)
    assert per == 7e9 * 2 + 1e9 * 8 + ck.SMALL_FILES_BYTES
    need = ck.disk_needed(per, keep_last=2, final_weights=14e9)
    with pytest.raises(UserFacingError, match=r"needs about 9\d\.\d GB .* only 10\.0 GB is free.*save_total_limit"):
        ck.check_disk(tmp_path, need, free=10 * 2**30)
    ck.check_disk(tmp_path, need, free=need + 1)  # enough: no error


def test_non_finite_loss_or_weights_stop_without_a_checkpoint(tmp_path):
    from worker.callbacks import StudioCallback

    make(tmp_path, 10)
    cb = StudioCallback(SimpleNamespace(writer=SimpleNamespace(put=lambda *a, **k: None), check=lambda: None,
                                        job=SimpleNamespace(config={})))
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=13, max_steps=40, num_input_tokens_seen=0)
    with pytest.raises(UserFacingError, match=r"loss \(nan\) became NaN .* step 13; the last good checkpoint "
                                              r"\(checkpoint-10\) is kept"):
        cb.on_log(args, state, SimpleNamespace(), logs={"loss": math.nan})
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    control = SimpleNamespace(should_save=True)
    with pytest.raises(UserFacingError, match="the weights became NaN or infinite at step 13"):
        cb.on_step_end(args, state, control, model=model)
    assert control.should_save is False


def test_the_last_step_is_checkpointed_only_for_early_stopping():
    from worker.callbacks import StudioCallback

    cb = StudioCallback(SimpleNamespace(writer=SimpleNamespace(put=lambda *a, **k: None), check=lambda: None,
                                        job=SimpleNamespace(config={})))
    for step, best_at_end, saved in ((40, False, False), (40, True, True), (35, False, True)):
        control = SimpleNamespace(should_save=True)
        cb.on_step_end(SimpleNamespace(load_best_model_at_end=best_at_end), SimpleNamespace(global_step=step, max_steps=40),
                       control)
        assert control.should_save is saved, (step, best_at_end)


def test_out_of_memory_message_carries_the_advisors_settings(backend):
    from models_db import BaseModel, session_scope

    llama_7b = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
                "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
    with session_scope() as db:
        base = BaseModel(name="llama-7b", path="/nowhere", source="/nowhere", config=llama_7b)
        db.add(base)
        db.flush()
        base_id = base.id
    job = SimpleNamespace(base_model_id=base_id, config={
        "model_id": base_id, "method": "lora", "method_params": {"r": 16}, "max_seq_length": 2048,
        "training": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1}})
    advice = oom_advice(job, 24.0, cuda=True)
    assert "per_device_train_batch_size=" in advice and "gradient_accumulation_steps=" in advice
    assert "same effective batch of 16" in advice and "24 GB" in advice
    message = humanize(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), job)
    assert message.startswith("The GPU ran out of memory.")
    assert "ran out of memory" in humanize(MemoryError(), None) and "Advisor tab" in humanize(MemoryError(), None)


def _machine(monkeypatch, home, store):
    """Point this process at one machine's home and the shared store."""
    from studio.settings import get_settings

    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("STUDIO_STORE_URL", f"file://{store}")
    get_settings.cache_clear()
    return get_settings().path("jobs", "7", "checkpoints")


def test_checkpoints_travel_through_the_shared_store(tmp_path, monkeypatch):
    """A retry on another machine resumes from the newest complete checkpoint the first one published;
    a checkpoint whose copy never got its marker is not taken, and rotation removes it from the store."""
    from studio import store
    from studio.settings import get_settings

    try:
        out_a = _machine(monkeypatch, tmp_path / "a", tmp_path / "store")
        for step in (10, 20):
            ck.publish(make(out_a, step))
        torn = make(out_a, 30, complete=False)  # published without its marker: a copy cut short
        for child in torn.iterdir():
            store.put(ck._key(child))
        out_b = _machine(monkeypatch, tmp_path / "b", tmp_path / "store")
        got = ck.fetch_latest(out_b)
        assert got is not None and got.name == "checkpoint-20"
        assert [p.name for p in ck.complete_checkpoints(out_b)] == ["checkpoint-20"]
        assert (got / "model.safetensors").read_bytes() == b"x" * 100
        assert ck.fetch_latest(out_b) is None  # has one now: nothing fetched again
        out_a = _machine(monkeypatch, tmp_path / "a", tmp_path / "store")
        ck.rotate(out_a, keep_last=1, eval_losses={})
        assert not (tmp_path / "store" / "jobs" / "7" / "checkpoints" / "checkpoint-10").exists()
        assert (tmp_path / "store" / "jobs" / "7" / "checkpoints" / "checkpoint-20" / ck.COMPLETE).exists()
    finally:
        get_settings.cache_clear()
