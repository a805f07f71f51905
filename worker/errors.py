"""Turning exceptions into messages a person can act on (never a stack trace on the job page)."""
from __future__ import annotations


class UserFacingError(RuntimeError):
    """An error whose message is already written for the person (what happened, what to do)."""


def humanize(exc: BaseException, job=None) -> str:
    """One or two sentences: what went wrong and what to change."""
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, UserFacingError):
        return text
    low = text.lower()
    if "out of memory" in low or isinstance(exc, MemoryError):
        where = "GPU" if "cuda" in low else "machine"
        return (f"The {where} ran out of memory. Lower per_device_train_batch_size (raise "
                "gradient_accumulation_steps to keep the effective batch), shorten max_seq_length, turn on "
                "gradient_checkpointing, or pick a lighter method (the Advisor tab estimates each).")
    if isinstance(exc, FileNotFoundError):
        return f"A file the job needs is missing: {exc.filename or text}. Re-import the model or re-upload the data set."
    if isinstance(exc, KeyboardInterrupt):
        return "The training process was interrupted."
    return f"{exc.__class__.__name__}: {text}. The log below has the details."
