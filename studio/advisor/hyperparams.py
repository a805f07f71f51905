"""Suggested training settings for the chosen method, keyed by the CLI's ``--set`` names.

One source: everything not derived from this job's data, model or hardware is the method's own default
(its spec in ``studio.methods``: learning rate, schedule, warm-up, dropout, target modules; the studio's
hold-out rule), so the advice and a plain Start agree; the method's params come from its spec's
``advised_params``. Derived here: rank from the task kind (article 001), alpha = 2·r, epochs from the
data size, micro-batch and accumulation from the memory plan, sequence length from the data's token
lengths, and a short warm-up only for runs long enough to need one.
"""
from __future__ import annotations

import math

from studio import methods
from studio.methods import AdvisorChoices

MAX_SEQ = 4096
DEFAULT_SEQ = 512
DEFAULT_LR = 2e-4  # for a method whose spec names no learning rate


def lora_rank(task: str, complexity: float, quality: str) -> tuple[int, str]:
    """Article 001's rank rule: r ≤ 8 narrow (style, domain, a single label set), 16 < r < 64
    general (instructions, generation, several tasks), r ≥ 64 close to full fine-tuning — chosen
    only for a very complex task with a high quality bar.  Returns (r, why)."""
    if complexity > 0.8 and quality == "high":
        return 64, "001: r ≥ 64 approaches full fine-tuning (complexity > 0.8, high quality)"
    if task in ("style", "domain", "classification"):
        return 8, f"001: r ≤ 8 for a narrow adaptation ({task})"
    return 32, f"001: 16 < r < 64 for general tasks ({task})"


def lora_targets(r: int) -> str:
    """Every linear layer, at any rank: the method's default (001: all linear layers for more capacity;
    measured better than attention only at the same rank, bench/quality.py)."""
    return "all_linear"


LONG_RUN_STEPS = 300  # optimizer steps from which a warm-up helps (shorter runs: measured to hurt)
WARMUP_RATIO = 0.03


def planned_steps(examples: int | None, epochs_: float, batch: int) -> int | None:
    """Optimizer steps the run will take: examples x epochs / examples per step."""
    if not examples or not batch:
        return None
    return math.ceil(examples / batch) * math.ceil(epochs_)


def seq_length(seq_len: int | None, p95: int | None, max_positions: int | None) -> tuple[int, str]:
    """Training sequence length: as given, else the data's p95 rounded up to 64, capped by the model."""
    cap = min(max_positions or MAX_SEQ, MAX_SEQ)
    if seq_len:
        return int(seq_len), "as given"
    if p95:
        rounded = max(64, math.ceil(p95 / 64) * 64)
        if rounded > cap:
            return cap, f"p95 {p95} tokens, capped at {cap}"
        return rounded, f"p95 {p95} tokens rounded up to a multiple of 64"
    return min(DEFAULT_SEQ, cap), "no token lengths known: default"


def target_batch(batch_size: int | None, examples: int | None) -> int:
    """Examples per optimizer step: as given, else 8 for small data sets, 16 otherwise."""
    if batch_size:
        return int(batch_size)
    return 8 if examples is not None and examples < 1000 else 16


def epochs(examples: int | None) -> int:
    """More passes over small data, one over very large data (000/002 warn of overfitting small sets)."""
    if examples is None:
        return 3
    if examples < 1_000:
        return 5
    if examples < 10_000:
        return 3
    return 2 if examples < 100_000 else 1


def suggest(method: str | None, settings: dict, *, examples: int | None, r: int, target: str,
            cpu: bool, layers: int) -> dict:
    """Hyperparameters for ``method`` at the planned ``settings`` (micro_batch, accumulation, ...)."""
    if method is None:
        return {}
    from studio.jobspec import SMALL_DATA_ROWS, STUDIO, TRAINING

    spec = methods.get(method)
    defaults = spec.default_training
    n_epochs = epochs(examples)
    steps = planned_steps(examples, n_epochs, settings["micro_batch"] * settings["gradient_accumulation_steps"])
    long_run = steps is not None and steps >= LONG_RUN_STEPS
    out = {
        "learning_rate": defaults.get("learning_rate", DEFAULT_LR),
        "num_train_epochs": n_epochs,
        "per_device_train_batch_size": settings["micro_batch"],
        "gradient_accumulation_steps": settings["gradient_accumulation_steps"],
        "warmup_ratio": WARMUP_RATIO if long_run else defaults.get("warmup_ratio", TRAINING["warmup_ratio"].default),
        # long runs: warm-up then cosine (003, 001); short ones: the method's measured default (linear)
        "lr_scheduler_type": "cosine" if long_run else defaults.get("lr_scheduler_type",
                                                                      TRAINING["lr_scheduler_type"].default),
        "weight_decay": 0.01 if spec.trains_base else 0.0,  # 003: decay the weights of the base that train
        "max_grad_norm": 1.0,
        "gradient_checkpointing": bool(settings["grad_ckpt"]),
        "bf16": not cpu,
        "fp16": False,
        "max_seq_length": settings["seq_len"],
        # the studio's own hold-out rule (studio/jobspec.py): none from a small data set
        "eval_split": 0.0 if examples is not None and examples < SMALL_DATA_ROWS else STUDIO["eval_split"].default,
    }
    if settings.get("optimizer") not in (None, "adamw"):
        out["optim"] = settings["optimizer"]
    out.update(spec.advised_params(AdvisorChoices(rank=r, target=target, layers=layers)))  # the method's own keys
    return out
