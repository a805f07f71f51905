"""A job asking for 2 GPUs, run through the real runner on 2 CPU processes (gloo) standing in for them
(``STUDIO_CPU_PROCESSES=2``): ``accelerate launch`` starts both ranks, both train, rank 0 alone writes
the version; cancel kills every rank; a job asking for more than the worker has is refused."""
import psutil
import pytest

from tests.cli import wait_until
from tests.faults.conftest import alive, studio_env


@pytest.fixture
def studio(tmp_path, monkeypatch, tiny_llama_dir):
    with studio_env("embedded", tmp_path, monkeypatch, tiny_llama_dir) as s:
        yield s


def ranks_of(launcher: int) -> list[int]:
    """The training ranks (``worker.job_process`` processes) under an ``accelerate launch`` process."""
    try:
        kids = psutil.Process(launcher).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if "worker.job_process" in p.cmdline():
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_two_cpu_ranks_train_one_version_and_cancel_kills_both(studio):
    from studio.operations import cancel_job

    s = studio
    s.start_worker(STUDIO_CPU_PROCESSES="2")
    job_id = s.submit(gpus=2, max_steps=10, save_steps=5)
    job = s.wait_state(job_id, "succeeded", "failed", timeout=300)
    assert job.state == "succeeded", (job.error, s.log(job_id)[-3000:])

    log = s.log(job_id)
    assert "ddp on 2 processes" in log
    assert "rank 0 of 2 trained 10 steps" in log and "rank 1 of 2 trained 10 steps" in log
    metrics = job.result["metrics"]
    assert metrics["world_size"] == 2 and metrics["distributed"] == "ddp"
    ranks = metrics["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    assert all(r["steps"] == 10 and r["device"].startswith("cpu") for r in ranks), ranks
    assert metrics["first_train_loss"] > metrics["train_loss"]  # it learned
    assert s.versions() == [job_id]  # one version, written by rank 0 alone
    assert (s.home / "versions" / f"job-{job_id}" / "adapter" / "adapter_model.safetensors").is_file()

    running = s.submit(gpus=2, max_steps=400)
    launcher = s.current_pid(running, attempt=1)
    ranks = wait_until(lambda: len(ranks_of(launcher)) == 2 and ranks_of(launcher), timeout=120, every=0.2)
    wait_until(lambda: s.job(running).step > 0, timeout=120, every=0.2)
    assert cancel_job(running) == "running"
    s.wait_state(running, "cancelled", timeout=30)
    wait_until(lambda: not any(alive(p) for p in [launcher, *ranks]), timeout=30, every=0.2)

    too_many = s.submit(gpus=3, max_steps=2)
    job = s.wait_state(too_many, "failed", timeout=60)
    assert "asks for 3 GPUs" in job.error and "2 CPU processes" in job.error


@pytest.mark.parametrize("name", ["lora", "full", "adapter"])
def test_a_sharded_save_writes_the_gathered_weights_through_the_methods_own_save(name, tiny_llama_dir, tmp_path,
                                                                                 monkeypatch):
    """Under FSDP each rank holds a shard: ``save_trained`` gathers the full weights (accelerate's
    ``get_state_dict``, a collective) and rank 0 saves *them* with the method's own ``save``: its files
    (the method json of full fine-tuning, the adapter method's config), safetensors only, no Trainer
    pickles. Here one process stands in for the ranks: the model's own weights are zeroed, as a shard
    would be, and the gathered dict holds the real ones, which must be what lands on disk."""
    from types import SimpleNamespace

    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from worker import distributed, methods

    method = methods.get(name)
    model = method.apply(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), methods.parse_params(name), "causal_lm")
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.5)  # the trained weights...
    gathered = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # ...which this "rank" no longer holds in full

    accelerator = Accelerator(cpu=True)
    calls = []
    monkeypatch.setattr(accelerator, "get_state_dict", lambda m: calls.append(m) or gathered)
    monkeypatch.setattr(distributed, "strategy", lambda: "fsdp")
    out = tmp_path / "version"
    distributed.save_trained(SimpleNamespace(model=model, accelerator=accelerator), method, out)

    assert calls == [model]  # every rank takes part in the gather
    files = sorted(p.name for p in out.iterdir())
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".md"))], files
    saved = {}
    for f in out.glob("*.safetensors"):
        saved.update(load_file(str(f)))
    assert saved and all(t.abs().sum() > 0 for t in saved.values())  # the gathered weights, not the zeroed shard
    if name == "full":
        assert "studio_method.json" in files and len(saved) >= len(trained) - 1  # tied embeddings are saved once
    if name == "adapter":
        assert "adapter_config.json" in files and set(saved) == set(trained)
