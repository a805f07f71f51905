"""System curves sampled while a job trains: CPU and RAM (psutil), and on CUDA the GPU's memory (torch's
allocator, and the whole device) and utilisation (NVML, when ``nvidia-ml-py``/``pynvml`` is installed).

A daemon thread samples every few seconds and hands ``sys_*`` points to the job's batched metrics
writer, tagged with the current optimizer step, so the system chart lines up under the loss curves.
Sampling costs well under a millisecond and never touches the training thread."""
from __future__ import annotations

import threading

import psutil
from transformers import TrainerCallback

INTERVAL_S = 5.0  # a modest rate: 12 samples a minute, a few points per sample


def _nvml_handle(index: int):
    """An NVML handle for the device, or None when NVML is not installed or not usable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - missing package, driver or permission: GPU utilisation is optional
        return None


def sample(process: psutil.Process, cuda: bool = False, nvml=None) -> dict[str, float]:
    """One sample: ``sys_cpu_pct`` (this process's CPU time as a share of all the machine's cores),
    ``sys_ram_gb`` (its resident memory), ``sys_ram_pct`` (the machine's memory in use), and on CUDA
    ``sys_gpu_alloc_gb`` (tensors), ``sys_gpu_reserved_gb`` (torch's cache), ``sys_gpu_used_gb`` and
    ``sys_gpu_mem_pct`` (the whole device, other processes included) and ``sys_gpu_util_pct`` (NVML)."""
    out = {"sys_cpu_pct": process.cpu_percent(None) / (psutil.cpu_count() or 1),
           "sys_ram_gb": process.memory_info().rss / 2**30, "sys_ram_pct": psutil.virtual_memory().percent}
    if cuda:
        import torch

        free, total = torch.cuda.mem_get_info()
        out.update(sys_gpu_alloc_gb=torch.cuda.memory_allocated() / 2**30,
                   sys_gpu_reserved_gb=torch.cuda.memory_reserved() / 2**30,
                   sys_gpu_used_gb=(total - free) / 2**30, sys_gpu_mem_pct=100 * (total - free) / total)
        if nvml is not None:
            import pynvml

            out["sys_gpu_util_pct"] = float(pynvml.nvmlDeviceGetUtilizationRates(nvml).gpu)
    return out


class SystemSampler(TrainerCallback):
    """Samples the system from the start of training to its end on its own thread."""

    def __init__(self, writer, interval: float | None = None):
        self.writer = writer
        self.interval = interval or INTERVAL_S
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, args, state, control, **kw):
        cuda = args.device.type == "cuda"
        if cuda:
            import torch

            index = torch.cuda.current_device()
        self.step = state.global_step
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(cuda, _nvml_handle(index) if cuda else None),
                                        name="system-sampler", daemon=True)
        self._thread.start()

    def on_step_end(self, args, state, control, **kw):
        self.step = state.global_step

    def on_train_end(self, args, state, control, **kw):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    def _loop(self, cuda: bool, nvml) -> None:
        process = psutil.Process()
        process.cpu_percent(None)  # the first call only starts the measurement
        while not self._stop.wait(self.interval):
            try:
                values = sample(process, cuda, nvml)
            except Exception as exc:  # noqa: BLE001 - a monitoring hiccup must never stop training
                print(f"system sampler stopped: {exc}", flush=True)
                return
            self.writer.put([(self.step, name, value) for name, value in values.items()])
