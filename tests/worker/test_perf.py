"""Throughput arithmetic (MFU/HFU, FLOPs per token, context length), the per-step meter, the system
sampler, the TensorBoard files and the fast-path rules, on CPU with known numbers."""
from __future__ import annotations

from types import SimpleNamespace

import psutil
import pytest

from worker import machine_defaults, perf, sysmon, tboard
from worker.errors import UserFacingError


class Collect:
    """A metrics writer that keeps what it is given."""

    def __init__(self):
        self.points = []

    def put(self, metrics=(), **fields):
        self.points += list(metrics)


def test_mfu_of_a_full_and_a_lora_run_from_known_figures():
    full = perf.FlopsModel(trainable=1_000_000_000, frozen=0, layers=16, attn_width=2048, context=512)
    # 6N + 12 * layers * width * context
    assert full.per_token() == 6e9 + 12 * 16 * 2048 * 512 == 6_201_326_592
    # 20,000 tokens/s on one H100 (989 TFLOP/s): 6.2013e9 * 2e4 / 9.89e14
    assert perf.utilisation(full.per_token(), 20_000, 989e12) == pytest.approx(0.125406, rel=1e-5)
    # the same rate over 2 GPUs is half the utilisation of each
    assert perf.utilisation(full.per_token(), 20_000, 989e12, devices=2) == pytest.approx(0.062703, rel=1e-5)
    lora = perf.FlopsModel(trainable=10_000_000, frozen=1_000_000_000, layers=16, attn_width=2048, context=512)
    assert lora.per_token() == 4e9 + 6e7 + 12 * 16 * 2048 * 512  # ~4N for LoRA
    # HFU counts the forward pass that gradient checkpointing runs again
    assert full.recompute_per_token() == 2e9 + 4 * 16 * 2048 * 512
    hfu = perf.utilisation(full.per_token() + full.recompute_per_token(), 20_000, 989e12)
    assert hfu == pytest.approx((6_201_326_592 + 2_067_108_864) * 2e4 / 989e12)


def test_peak_rates_context_length_and_override(monkeypatch):
    assert perf.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert perf.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert perf.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert perf.peak_tflops("NVIDIA A10G") == 125.0 and perf.peak_tflops("NVIDIA L4") == 121.0
    assert perf.peak_tflops("Some Future GPU") is None
    monkeypatch.setenv("STUDIO_GPU_PEAK_TFLOPS", "100")
    assert perf.peak_tflops("Some Future GPU") == 100.0
    # token-weighted: a token of the 300-long example sees 300, one of the 100-long sees 100
    assert perf.context_length([100, 300]) == (100**2 + 300**2) / 400 == 250
    assert perf.context_length([]) == 0.0


def test_flops_model_counts_matmul_weights_full_and_lora(tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    c = model.config
    fm = perf.flops_model(model, context=64.0)
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    embed = model.get_input_embeddings().weight.numel()
    expected = matrices if c.tie_word_embeddings else matrices - embed  # an untied embedding is a lookup
    assert fm.trainable == expected and fm.frozen == 0
    assert fm.layers == c.num_hidden_layers and fm.attn_width == c.num_attention_heads * (
        getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    fl = perf.flops_model(lora, context=64.0)
    adapters = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert fl.trainable == adapters and fl.frozen == expected
    assert fl.per_token() < fm.per_token()  # frozen weights cost 4, not 6


def test_perf_callback_reports_a_window_of_steps(monkeypatch):
    clock = iter([10.0, 12.0, 14.5, 15.0, 17.0])  # begin, step 1 end, step 2 end, log, step 3 end
    monkeypatch.setattr(perf.time, "perf_counter", lambda: next(clock))
    writer = Collect()
    cb = perf.PerfCallback(writer, context=100.0)
    args = SimpleNamespace(device=SimpleNamespace(type="cpu"), gradient_checkpointing=False,
                           per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1)
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0)
    cb.on_train_begin(args, state, None)
    for tokens in (1000, 2500):
        state.num_input_tokens_seen, state.global_step = tokens, state.global_step + 1
        cb.on_step_end(args, state, None)
    cb.on_log(args, state, None, logs={"loss": 1.0})
    got = {name: value for _, name, value in writer.points}
    assert got["step_time_s"] == pytest.approx(2.25)  # (2.0 + 2.5) / 2
    assert got["samples_per_s"] == pytest.approx(2 * 8 / 4.5)
    assert got["tokens_per_s"] == pytest.approx(2500 / 4.5) and got["tokens_seen"] == 2500
    assert got["peak_memory_gb"] > 0 and "mfu" not in got  # MFU is a CUDA figure
    state.num_input_tokens_seen, state.global_step = 3500, 3
    cb.on_step_end(args, state, None)  # 17.0 - 15.0 (the time spent logging is not a step's)
    summary = cb.summary(3500)
    assert summary["step_time_s"] == pytest.approx(6.5 / 3)
    assert summary["train_tokens_per_s"] == pytest.approx(3500 / 6.5)


def test_system_sample_has_cpu_and_ram_and_the_sampler_writes_sys_points():
    values = sysmon.sample(psutil.Process())
    assert set(values) == {"sys_cpu_pct", "sys_ram_gb", "sys_ram_pct"}
    assert values["sys_ram_gb"] > 0.01 and 0 < values["sys_ram_pct"] <= 100
    writer = Collect()
    sampler = sysmon.SystemSampler(writer, interval=0.05)
    args = SimpleNamespace(device=SimpleNamespace(type="cpu"))
    sampler.on_train_begin(args, SimpleNamespace(global_step=7), None)
    try:
        import time

        deadline = time.monotonic() + 5
        while len(writer.points) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sampler.on_train_end(args, None, None)
    assert {name for _, name, _ in writer.points} == {"sys_cpu_pct", "sys_ram_gb", "sys_ram_pct"}
    assert {step for step, _, _ in writer.points} == {7}


def test_tensorboard_events_are_written_and_read_back(tmp_path):
    sink = tboard.TensorBoardSink(tmp_path / "tb")
    sink.write([])
    assert not (tmp_path / "tb").exists()  # nothing logged, no folder
    sink.write([(1, "loss", 2.5), (1, "tokens_per_s", 900.0), (2, "loss", 2.0), (2, "eval_loss", 2.2),
                (2, "sys_cpu_pct", 55.0)])
    sink.close()
    got = tboard.read_scalars(tmp_path / "tb")
    assert got["train/loss"] == [(1, 2.5), (2, 2.0)]
    assert got["eval/loss"] == [(2, pytest.approx(2.2))] and got["system/cpu_pct"] == [(2, 55.0)]
    assert got["perf/tokens_per_s"] == [(1, 900.0)]


def test_fast_path_rules():
    training = {"optim": "adamw_torch", "gradient_checkpointing": False}
    notes = machine_defaults.settle_training(training, cuda=True, estimate={"total_gb": 90.0}, device_total_gb=79.6)
    assert training == {"optim": "adamw_torch_fused", "gradient_checkpointing": True} and len(notes) == 2
    training = {"optim": "adamw_torch", "gradient_checkpointing": False}
    machine_defaults.settle_training(training, cuda=True, estimate={"total_gb": 20.0}, device_total_gb=79.6)
    assert training["gradient_checkpointing"] is False  # it fits: no recomputation
    training = {"optim": "adamw_torch", "gradient_checkpointing": False, "torch_compile": True}
    machine_defaults.settle_training(training, cuda=False)
    assert training == {"optim": "adamw_torch_fused", "gradient_checkpointing": False, "torch_compile": False}
    with pytest.raises(UserFacingError, match="use_liger_kernel needs a CUDA GPU"):
        machine_defaults.settle_training({"use_liger_kernel": True}, cuda=False)
    assert machine_defaults.dataloader_arguments(cuda=False) == {"dataloader_pin_memory": False}
    gpu = machine_defaults.dataloader_arguments(cuda=True)
    assert gpu["dataloader_pin_memory"] and gpu["dataloader_num_workers"] >= 1
    assert machine_defaults.load_kwargs(cuda=False, half_precision_weights=True) == {}


def test_perf_callback_records_mfu_and_hfu_on_a_known_gpu(monkeypatch, tiny_llama_dir):
    """The CUDA branch, driven on CPU: a named GPU's peak, the model's FLOPs, the window's tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(perf, "peak_memory_gb", lambda cuda: 1.5)
    clock = iter([0.0, 2.0, 2.0])
    monkeypatch.setattr(perf.time, "perf_counter", lambda: next(clock))
    writer = Collect()
    cb = perf.PerfCallback(writer, context=128.0)
    args = SimpleNamespace(device=SimpleNamespace(type="cuda"), gradient_checkpointing=True,
                           per_device_train_batch_size=8, gradient_accumulation_steps=1, world_size=1)
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0)
    cb.on_train_begin(args, state, None, model=model)
    state.num_input_tokens_seen, state.global_step = 10_000, 1
    cb.on_step_end(args, state, None)
    cb.on_log(args, state, None, logs={"loss": 1.0})
    got = {name: value for _, name, value in writer.points}
    fm = perf.flops_model(model, 128.0)
    assert got["mfu"] == pytest.approx(fm.per_token() * 5000 / 989e12)
    assert got["hfu"] == pytest.approx((fm.per_token() + fm.recompute_per_token()) * 5000 / 989e12)
    assert got["hfu"] > got["mfu"] and got["peak_memory_gb"] == 1.5


def test_the_system_sampler_stops_when_training_raises(tiny_llama_dir, tmp_path, monkeypatch):
    import threading

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from studio.settings import get_settings
    from worker.recipes import common

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError("the step failed")

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    rows = Dataset.from_list([{"input_ids": [5, 6, 7, 8], "labels": [5, 6, 7, 8]}] * 4)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      callbacks=[sysmon.SystemSampler(Collect(), interval=30), Boom()])
    try:
        with pytest.raises(RuntimeError, match="the step failed"):
            common.fit(SimpleNamespace(say=print), trainer)
    finally:
        get_settings.cache_clear()
    assert [t for t in threading.enumerate() if t.name == "system-sampler"] == []
