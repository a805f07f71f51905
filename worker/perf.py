"""How fast a job trains: tokens/s (real tokens, padding excluded), samples/s, step time, peak memory
and, on CUDA, the model FLOPs utilisation (MFU) against the GPU's peak bf16 rate.

FLOPs convention (PaLM appendix B, as nanoGPT and torchtitan count them), per trained token:
  - matmul weights: 6 FLOPs per trainable weight (forward 2, backward 2 for the activation gradient and
    2 for the weight gradient) and 4 per frozen weight (no weight gradient): 6N for full fine-tuning,
    about 4N for LoRA and other adapters;
  - attention: 12 x layers x (heads x head_dim) x context (QK^T and AV, forward and backward; the
    non-causal convention, so MFU figures compare with published ones);
  - N counts the weights that take part in a matmul: the input embedding is a lookup, so it is left out
    unless it is tied to the output head (then it is the head's matmul).
HFU (hardware FLOPs utilisation) adds the forward pass that gradient checkpointing recomputes.
"""
from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from transformers import TrainerCallback

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity); the first substring that
# matches the device name wins, so the specific names come first. STUDIO_GPU_PEAK_TFLOPS overrides.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A6000", 154.8), ("A10", 125.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The GPU's peak dense bf16 rate in TFLOP/s, or None when the studio does not know the GPU."""
    override = os.environ.get("STUDIO_GPU_PEAK_TFLOPS")
    if override:
        return float(override)
    name = device_name.upper()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


@dataclass(frozen=True)
class FlopsModel:
    """What the FLOPs of one trained token depend on (see the module docstring)."""

    trainable: int  # matmul weights that are trained
    frozen: int  # matmul weights that are not
    layers: int
    attn_width: int  # heads x head_dim
    context: float  # token-weighted mean sequence length: sum(L^2) / sum(L)

    def per_token(self) -> float:
        """Model FLOPs per trained token: 6 per trainable + 4 per frozen weight + attention."""
        return 6 * self.trainable + 4 * self.frozen + 12 * self.layers * self.attn_width * self.context

    def recompute_per_token(self) -> float:
        """The forward pass gradient checkpointing runs again: 2 per weight + the attention forward."""
        return 2 * (self.trainable + self.frozen) + 4 * self.layers * self.attn_width * self.context


def utilisation(flops_per_token: float, tokens_per_s: float, peak_flops: float, devices: int = 1) -> float:
    """The fraction of ``devices`` GPUs' peak that ``tokens_per_s`` (all devices together) amounts to."""
    return flops_per_token * tokens_per_s / (peak_flops * devices)


def context_length(lengths) -> float:
    """Token-weighted mean example length, sum(L^2) / sum(L): the context one trained token attends over
    on average, whether its example is padded into a batch or packed beside others."""
    total = sum(lengths)
    return sum(n * n for n in lengths) / total if total else 0.0


def flops_model(model, context: float) -> FlopsModel:
    """Count the matmul weights of ``model`` (a transformers model, possibly wrapped by peft)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    embed = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    skip = set()
    tied = getattr(config, "tie_word_embeddings", False)
    if embed is not None and not tied:
        skip = {id(p) for p in embed.parameters()}
    trainable = frozen = 0
    for p in model.parameters():
        if id(p) in skip or p.dim() < 2:  # lookups, norms and biases do no matmul work worth counting
            continue
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    heads = getattr(config, "num_attention_heads", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0)
    return FlopsModel(trainable, frozen, getattr(config, "num_hidden_layers", 0) or 0, heads * head_dim, context)


def peak_memory_gb(cuda: bool) -> float:
    """Peak memory so far: CUDA tensors allocated on this process's device, else the process's peak RSS."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB


class PerfCallback(TrainerCallback):
    """Per logging step: tokens/s (the Trainer's non-padding count), samples/s, mean step time, peak
    memory and, on a known CUDA GPU, MFU (and HFU with gradient checkpointing).

    Step time runs from the end of whatever came before the step (the previous step, a log, an
    evaluation, a checkpoint) to the end of the optimizer step: batch fetching, forward, backward,
    optimizer and the studio's own per-step work count; evaluation and checkpoint saving do not."""

    def __init__(self, writer, context: float = 0.0):
        self.writer = writer
        self.context = context
        self.flops: FlopsModel | None = None
        self.peak: float | None = None  # FLOP/s of one device
        self.cuda = False
        self._mark = 0.0
        self._window = [0.0, 0, 0]  # step seconds, steps, tokens at the window's start
        self.total_seconds, self.total_steps, self._tokens0 = 0.0, 0, 0
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.cuda = args.device.type == "cuda"
        self.recompute = bool(args.gradient_checkpointing)
        self.samples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.devices = args.world_size
        if self.cuda and model is not None:
            import torch

            tflops = peak_tflops(torch.cuda.get_device_name())
            self.peak = tflops * 1e12 if tflops else None
            self.flops = flops_model(model, self.context)
        self._window = [0.0, 0, state.num_input_tokens_seen]
        self._tokens0 = state.num_input_tokens_seen
        self._mark = time.perf_counter()

    def _touch(self, *a, **kw):
        self._mark = time.perf_counter()

    on_evaluate = on_save = _touch

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self._window[0] += now - self._mark
        self._window[1] += 1
        self._mark = now

    def on_log(self, args, state, control, logs=None, **kw):
        if "loss" in (logs or {}) and self._window[1]:
            points = [(state.global_step, k, v) for k, v in self.window_figures(state.num_input_tokens_seen).items()]
            self.writer.put(points)
        self._mark = time.perf_counter()

    def window_figures(self, tokens_seen: int) -> dict[str, float]:
        """The figures of the steps since the last call, and the window restarted."""
        seconds, steps, tokens0 = self._window
        self._window = [0.0, 0, tokens_seen]
        self.total_seconds += seconds
        self.total_steps += steps
        out = {"step_time_s": seconds / steps, "samples_per_s": steps * self.samples_per_step / seconds,
               "peak_memory_gb": peak_memory_gb(self.cuda)}
        if tokens_seen > tokens0:
            out["tokens_per_s"] = (tokens_seen - tokens0) / seconds
            out["tokens_seen"] = float(tokens_seen)
            out.update(self._utilisation(out["tokens_per_s"]))
        self.last = out
        return out

    def _utilisation(self, tokens_per_s: float) -> dict[str, float]:
        if not (self.flops and self.peak):
            return {}
        out = {"mfu": utilisation(self.flops.per_token(), tokens_per_s, self.peak, self.devices)}
        if self.recompute:
            hardware = self.flops.per_token() + self.flops.recompute_per_token()
            out["hfu"] = utilisation(hardware, tokens_per_s, self.peak, self.devices)
        return out

    def summary(self, tokens_seen: int) -> dict:
        """The run's figures over its training steps (evaluation and checkpoints excluded)."""
        if self._window[1]:  # steps after the last log
            self.window_figures(tokens_seen)
        if not self.total_steps or self.total_seconds <= 0:
            return {}
        tokens = tokens_seen - self._tokens0
        out = {"step_time_s": self.total_seconds / self.total_steps,
               "samples_per_s": self.total_steps * self.samples_per_step / self.total_seconds,
               "train_tokens_per_s": tokens / self.total_seconds if tokens else None}
        if self.flops:
            out["model_flops_per_token"] = self.flops.per_token()
            if self.peak and tokens:
                out.update(self._utilisation(tokens / self.total_seconds))
                out["gpu_peak_tflops"] = self.peak / 1e12
        return out


def find(trainer) -> PerfCallback | None:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, PerfCallback)), None)


def summary(trainer) -> dict:
    """The run's throughput figures from the trainer's PerfCallback ({} when it has none)."""
    meter = find(trainer)
    return meter.summary(trainer.state.num_input_tokens_seen) if meter else {}


def context_of(dataset, limit: int = 20_000) -> float:
    """``context_length`` of a tokenised data set's first ``limit`` rows (0 when it has no input_ids)."""
    if dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
        return 0.0
    return context_length([len(ids) for ids in dataset[:limit]["input_ids"]])
