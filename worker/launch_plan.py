"""How the runner starts a job's training process: one ``python -m worker.job_process`` for a job on one
device, or ``accelerate launch`` of it on N processes for a job that asks for several GPUs.

Every rank runs ``worker.job_process`` and trains; only rank 0 writes to the database and saves the final
artifacts (worker/distributed.py). The launcher is the runner's direct child in its own process group;
the ranks (which torchrun puts in sessions of their own) die with it, so cancel and kill stop them all.
"""
from __future__ import annotations

import ctypes
import signal
import socket
import sys
from dataclasses import dataclass, field
from functools import lru_cache

from studio.advisor.parallel import Strategy, choose_strategy
from studio.jobkinds import JOB_KINDS
from studio.settings import get_settings

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class Devices:
    """What this worker can give one job: ``count`` devices of ``memory_gb`` each, GPUs or CPU processes."""

    kind: str  # "cuda" or "cpu"
    count: int
    memory_gb: float | None = None

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"{self.count} CPU process{'es' if self.count != 1 else ''}"
        return f"{self.count} GPU{'s' if self.count != 1 else ''}" + (f" of {self.memory_gb:g} GB" if self.memory_gb else "")


@lru_cache(maxsize=1)
def _gpus() -> tuple[dict, ...]:
    # imported here: worker.consumer imports the runner, which imports this module
    from worker.consumer import detect_gpus

    return tuple(detect_gpus())


def worker_devices() -> Devices:
    """This worker's devices: its GPUs, or (``STUDIO_CPU_PROCESSES`` > 0, for tests on a CPU machine)
    that many CPU processes standing in for GPUs."""
    forced = get_settings().cpu_processes
    if forced > 0:
        return Devices("cpu", forced)
    gpus = _gpus()
    if not gpus:
        return Devices("cpu", 1)
    return Devices("cuda", len(gpus), min(g["memory_gb"] for g in gpus))


@dataclass(frozen=True)
class LaunchPlan:
    """The training process's command line, or why this worker refuses the job."""

    strategy: Strategy
    devices: Devices
    refusal: str = ""
    env: dict = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        return self.strategy.processes > 1

    def argv(self, job_id: int, fence: int) -> list[str]:
        """The training process as an argument list (never a shell string)."""
        child = ["-m", "worker.job_process", str(job_id), str(fence)]
        if not self.distributed:
            return [sys.executable, *child]
        return [sys.executable, "-m", "accelerate.commands.launch", *launcher_args(self.strategy, self.devices,
                                                                                    free_port()), *child]


def launcher_args(strategy: Strategy, devices: Devices, port: int) -> list[str]:
    """``accelerate launch`` options for the strategy. ``--multi_gpu`` is the torchrun launcher, which
    starts N ranks; on CPU the recipe's ``use_cpu`` makes them train over gloo (``--cpu`` would start
    one process). Every option is given, so no ``accelerate config`` file on the machine changes it."""
    n = str(strategy.processes)
    common = ["--num_processes", n, "--num_machines", "1", "--main_process_port", str(port),
              "--dynamo_backend", "no", "--mixed_precision", "no"]  # the recipe sets bf16/fp16 itself
    if strategy.name == "fsdp" and devices.kind == "cuda":
        return [*common, "--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD",
                "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
                "--fsdp_use_orig_params", "true", "--fsdp_sync_module_states", "true",
                "--fsdp_cpu_ram_efficient_loading", "true"]
    return [*common, "--multi_gpu"]


def free_port() -> int:
    """A free TCP port for the ranks' rendezvous (two jobs on one machine must not share 29500)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan(kind: str, config: dict, devices: Devices | None = None) -> LaunchPlan:
    """How to start a job of ``kind`` with ``config`` (its TrainSpec as JSON) on this worker."""
    devices = devices or worker_devices()
    wanted = int(config.get("gpus") or 1) if JOB_KINDS[kind].trains else 1  # only training spans GPUs
    if wanted > devices.count:
        what = devices.describe()
        return LaunchPlan(Strategy("single", 1, ""), devices, refusal=(
            f"This job asks for {wanted} GPUs on one machine, but the worker that took it has {what}. "
            f"Lower the job's gpus setting to {devices.count} or fewer, or start a worker on a machine with "
            f"{wanted} GPUs (studio worker --gpus 0,1,...)."))
    try:
        strategy = choose_strategy(config.get("distributed") or "auto", wanted, config.get("estimate"),
                                   devices.memory_gb)
    except ValueError as e:
        return LaunchPlan(Strategy("single", 1, ""), devices, refusal=str(e))
    if strategy.name == "fsdp" and devices.kind == "cpu":
        strategy = Strategy("ddp", strategy.processes, "CPU processes: FSDP needs GPUs, DDP over gloo instead")
    env = {"STUDIO_DISTRIBUTED": strategy.name} if strategy.processes > 1 else {}
    if devices.kind == "cpu" and strategy.processes > 1:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")  # CPU ranks: no GPU, no thread oversubscription
    return LaunchPlan(strategy, devices, env=env)


def die_with_parent() -> None:
    """``preexec_fn`` of the launcher: the kernel kills it when its worker dies (kill -9 included), and
    its ranks die with it (worker.job_process sets the same on them)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def plan_for_job(job_id: int) -> LaunchPlan:
    """The plan for a claimed job, from its row."""
    from models_db import Job, session_scope

    with session_scope() as db:
        job = db.get(Job, job_id, populate_existing=True)
        kind, config = job.kind, dict(job.config or {})
    return plan(kind, config)


def refuse(claim, why: str) -> str:
    """End a claimed job this worker cannot run, with the reason on the job page."""
    from models_db import JobState, session_scope
    from models_db import jobs as jobq

    with session_scope() as db:
        jobq.finish(db, claim, JobState.failed.value, error=why, message="refused by the worker")
    return "refused"
