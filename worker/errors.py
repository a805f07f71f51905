"""Turning exceptions into messages a person can act on (never a stack trace on the job page)."""
from __future__ import annotations

import os
import sys

GENERIC_OOM_ADVICE = ("Lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective "
                      "batch), shorten max_seq_length, turn on gradient_checkpointing, or pick a lighter method "
                      "(the Advisor tab estimates each).")


class UserFacingError(RuntimeError):
    """An error whose message is already written for the person (what happened, what to do)."""


def humanize(exc: BaseException, job=None) -> str:
    """One or two sentences: what went wrong and what to change."""
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, UserFacingError):
        return text
    low = text.lower()
    if "out of memory" in low or isinstance(exc, MemoryError):
        cuda = "cuda" in low or "gpu" in low
        where = "GPU" if cuda else "machine"
        return f"The {where} ran out of memory. {oom_advice(job, device_memory_gb(cuda), cuda)}"
    if isinstance(exc, FileNotFoundError):
        return f"A file the job needs is missing: {exc.filename or text}. Re-import the model or re-upload the data set."
    if isinstance(exc, KeyboardInterrupt):
        return "The training process was interrupted."
    return f"{exc.__class__.__name__}: {text}. The log below has the details."


def device_memory_gb(cuda: bool) -> float | None:
    """The memory of the device that ran out: the first visible GPU, or the machine's RAM."""
    torch = sys.modules.get("torch")  # the training process has it; never import it just for this
    if cuda:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def oom_advice(job, device_gb: float | None, cuda: bool) -> str:
    """The advisor's settings for this job on a device of ``device_gb`` GiB, as an instruction; the
    generic advice when the job, its model or the device size is unknown."""
    config = (getattr(job, "config", None) or {})
    training = config.get("training") or {}
    if not device_gb or not config.get("method") or not training:
        return GENERIC_OOM_ADVICE
    try:
        plan = _plan(job, config, training, device_gb, cuda)
    except Exception:  # noqa: BLE001 - advice is a nicety; the failure itself must still be reported
        return GENERIC_OOM_ADVICE
    if plan is None:
        return GENERIC_OOM_ADVICE
    micro, accum = training.get("per_device_train_batch_size", 1), training.get("gradient_accumulation_steps", 1)
    if not plan.fits:
        return (f"The advisor finds no settings of {config['method']} that fit {device_gb:.0f} GB: "
                f"{'; '.join(plan.make_it_fit)}.")
    s = plan.settings
    changes = [f"per_device_train_batch_size={s['micro_batch']}",
               f"gradient_accumulation_steps={s['gradient_accumulation_steps']}"]
    if s["grad_ckpt"]:
        changes.append("gradient_checkpointing=true")
    if s["optimizer"] != "adamw":
        changes.append(f"optim={s['optimizer']}")
    return (f"The advisor estimates {plan.estimate.total_gb:.1f} GB with {', '.join(changes)} (same effective batch "
            f"of {micro * accum}) on this {device_gb:.0f} GB device. Submit again with these settings "
            f"(Train tab, or studio train --set KEY=VALUE).")


def _plan(job, config: dict, training: dict, device_gb: float, cuda: bool):
    from models_db import BaseModel, session_scope
    from studio.advisor.plan import Hardware, plan_method

    with session_scope() as db:
        base = db.get(BaseModel, config.get("model_id") or getattr(job, "base_model_id", None))
        model_config = dict(base.config) if base is not None else None
    if not model_config:
        return None
    params = config.get("method_params") or {}
    kwargs = {}
    if "r" in params:
        kwargs["lora_r"] = int(params["r"])
    if isinstance(params.get("target_modules"), str):
        kwargs["target"] = params["target_modules"]
    batch = training.get("per_device_train_batch_size", 1) * training.get("gradient_accumulation_steps", 1)
    hw = Hardware((device_gb,)) if cuda else Hardware((), device_gb)
    return plan_method(model_config, config["method"], hw, seq_len=config.get("max_seq_length") or 512,
                       target_batch=batch, precision="bf16" if cuda else "fp32", **kwargs)
