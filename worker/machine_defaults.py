"""The studio's default fast path, settled on the worker for the machine it runs on: what a careful person
would set by hand on top of the Trainer's defaults.

- bf16 on GPUs that support it (else fp16), fp32 on CPU (recipes/common.read_job);
- the fused AdamW kernel on CUDA instead of the for-each one (same numbers, one kernel launch);
- gradient checkpointing only when the advisor's estimate does not fit this GPU without it;
- FlashAttention-2 when installed and the weights are 16-bit, else PyTorch SDPA (which picks
  flash/memory-efficient kernels itself);
- dataloader workers and pinned memory on GPU, so batches are ready when the step needs them;
- padding-free packing of causal LM data (studio/jobspec.py switches it on; worker/data.py packs), and
  without FlashAttention, SDPA on each packed example (worker/packed_attention.py), no dense mask;
- torch.compile and Liger kernels only when asked for (``torch_compile``, ``use_liger_kernel``): both
  help long CUDA runs and cost compile time or an extra package.
"""
from __future__ import annotations

import importlib.util
import os

from worker.errors import UserFacingError


def settle_training(training: dict, *, cuda: bool, estimate: dict | None = None,
                    device_total_gb: float | None = None) -> list[str]:
    """Adjust ``training`` (TrainingArguments values) in place for this machine; returns what changed, in
    words, for the job's log."""
    notes = []
    # the same AdamW in one fused kernel per step, on a GPU and on the CPU alike (torch >= 2.4): on the demo
    # model's 135M weights a CPU step of the optimizer fell from seconds to a fraction of one (docs/benchmarks.md)
    if training.get("optim", "adamw_torch") == "adamw_torch":
        training["optim"] = "adamw_torch_fused"
        notes.append("fused AdamW")
    total = (estimate or {}).get("total_gb")
    if cuda and not training.get("gradient_checkpointing") and total and device_total_gb and total > device_total_gb:
        training["gradient_checkpointing"] = True
        notes.append(f"gradient checkpointing on: the estimated peak {total:.1f} GiB exceeds this GPU's "
                     f"{device_total_gb:.1f} GiB")
    if training.get("use_liger_kernel"):
        if not cuda:
            raise UserFacingError("use_liger_kernel needs a CUDA GPU (Liger's kernels are Triton); this worker has "
                                  "none. Turn use_liger_kernel off or send the job to a GPU worker.")
        if importlib.util.find_spec("liger_kernel") is None:
            raise UserFacingError("use_liger_kernel is on but liger-kernel is not installed on this worker: "
                                  "pip install 'finetune-studio[fast]' there, or turn use_liger_kernel off.")
    if training.get("torch_compile") and not cuda:
        training["torch_compile"] = False
        notes.append("torch_compile off: it only pays on a GPU")
    return notes


def load_kwargs(*, cuda: bool, half_precision_weights: bool) -> dict:
    """FlashAttention-2 (varlen kernels: packed rows cost no padding) when installed and usable; otherwise
    transformers' own default, SDPA wherever the architecture has it (eager where it has not)."""
    if cuda and half_precision_weights and importlib.util.find_spec("flash_attn") is not None:
        return {"attn_implementation": "flash_attention_2"}
    return {}


def packed_attention(model) -> bool:
    """For packed causal-LM rows without FlashAttention (CPU, or CUDA without flash-attn): SDPA run on each
    example of the row (worker/packed_attention.py) instead of one dense block-diagonal mask over the whole
    row, whose cost is the square of the row's length. Returns whether the model now uses it."""
    from worker import packed_attention as packed

    return packed.use(model)


def dataloader_arguments(*, cuda: bool, gpus: int = 1) -> dict:
    """Worker processes that collate the next batches while the GPU trains, and pinned host memory."""
    if not cuda:  # on CPU the cores are busy training; a worker process would only compete with it
        return {"dataloader_pin_memory": False}
    workers = max(1, min(4, (os.cpu_count() or 2) // max(gpus, 1) - 1))
    return {"dataloader_pin_memory": True, "dataloader_num_workers": workers,
            "dataloader_persistent_workers": True}
