"""Rank handling inside a job's training process when ``accelerate launch`` started several of them.

Every rank trains (the HF Trainer wraps the model in DDP, or FSDP, and splits each batch); only rank 0
talks to the database (progress, metrics, success or failure, the version) and writes the final
artifacts, so a job has one set of rows and files whatever its number of processes. torchrun sets
``RANK`` and ``WORLD_SIZE``; a job on one device has neither and is rank 0 of 1."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0: the one process of a job that writes to the database and saves the final artifacts."""
    return rank() == 0


def strategy() -> str:
    """single, ddp or fsdp: what the runner launched (worker/launch_plan.py)."""
    return os.environ.get("STUDIO_DISTRIBUTED", "single") if world_size() > 1 else "single"


class NullWriter:
    """The metrics writer of ranks other than 0: training calls it the same way, nothing is written.
    Their claim is watched by rank 0's writer and the runner, which stops every rank when it goes stale."""

    def __init__(self):
        self.stale = threading.Event()

    def put(self, metrics=(), **fields) -> None:
        pass

    def close(self) -> None:
        pass


def save_trained(trainer, method, out_dir: Path) -> None:
    """Save the trained part with the method's own ``save`` (PiSSA/OLoRA conversion, the adapter
    method's files, the method json; safetensors only), on rank 0. Under FSDP each rank holds a shard:
    every rank takes part in gathering the full weights (accelerate's ``get_state_dict``, a collective)
    and rank 0 saves them. Otherwise every rank holds the same weights and rank 0 saves its own."""
    if strategy() == "fsdp":
        state = trainer.accelerator.get_state_dict(trainer.model)  # the full weights, on rank 0
        if is_main():
            method.save(trainer.accelerator.unwrap_model(trainer.model), out_dir, state_dict=state)
    elif is_main():
        method.save(trainer.model, out_dir)


def ranks_report(trainer) -> list[dict]:
    """What each rank did (its host, device and steps), gathered on every rank; one entry when alone.
    Kept in the job's result, so a multi-process run shows that every rank trained."""
    import torch.distributed as dist

    mine = {"rank": rank(), "host": socket.gethostname(), "pid": os.getpid(), "device": str(trainer.args.device),
            "steps": trainer.state.global_step}
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out
