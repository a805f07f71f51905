"""Where the advisor's inputs come from inside the studio: the model store, the data sets, the workers.

The CLI (``studio advise``), the Advisor tab and the Train tab read the same facts through here.
"""
from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

from models_db import BaseModel, Dataset, session_scope
from models_db import queries as q
from models_db.schema import utcnow
from studio.advisor.advise import AdvisorInputs
from studio.settings import get_settings

ALIVE = timedelta(minutes=10)  # a worker that has not heartbeaten for this long is not counted
CHARS_PER_TOKEN = 4  # rough English average, used only when no tokenizer is at hand
TOKEN_SAMPLE_ROWS = 2000  # rows tokenised to measure a data set's lengths


class SourceError(ValueError):
    """A model or data set the person named cannot be read; the message says what to do."""


def model_config(model: BaseModel) -> dict:
    """The model's ``config.json`` from the model store (the row's copy if the folder is gone)."""
    path = Path(model.path) / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SourceError(f"model {model.name}: cannot read {path} ({e}); import the model again") from None
    if model.config:
        return dict(model.config)
    raise SourceError(f"model {model.name}: {path} is missing; import the model again (studio models import)")


def find_model(db, ref) -> BaseModel:
    model = q.model_by_ref(db, ref)
    if model is None:
        raise SourceError(f"model {ref!r} does not exist (studio models list)")
    return model


def find_dataset(db, dataset_id) -> Dataset:
    ds = db.get(Dataset, int(dataset_id))
    if ds is None:
        raise SourceError(f"dataset {dataset_id} does not exist (studio dataset list)")
    return ds


def dataset_facts(ds: Dataset, model: BaseModel | None = None) -> dict:
    """``{"examples", "seq_len_p95", "how"}``: the row count and the 95th-percentile token length.

    Token lengths come from the data set's stats when intake recorded them, else from tokenising
    the first rows as the worker will (the model's ``tokenizer.json`` and chat template), else from
    characters / 4.
    """
    stats = ds.stats or {}
    tokens = stats.get("tokens") or stats.get("token_lengths") or {}
    if isinstance(tokens, dict) and tokens.get("p95"):
        return {"examples": ds.rows, "seq_len_p95": int(tokens["p95"]), "how": "token lengths from intake"}
    tok = Path(model.path) / "tokenizer.json" if model is not None else None
    data = get_settings().home_abs / ds.path
    if tok is not None and tok.is_file() and data.is_file():
        from studio.datasets.tokens import ModelText, token_lengths

        lengths = sorted(token_lengths(data, ModelText.from_model_dir(Path(model.path)), limit=TOKEN_SAMPLE_ROWS))
        if lengths:
            p95 = lengths[min(len(lengths) - 1, math.ceil(0.95 * len(lengths)) - 1)]
            sample = f"the first {len(lengths):,} rows" if len(lengths) < ds.rows else "all rows"
            return {"examples": ds.rows, "seq_len_p95": p95, "how": f"{model.name}'s tokenizer on {sample}"}
    chars = (stats.get("chars") or {}).get("p95")
    if chars:
        return {"examples": ds.rows, "seq_len_p95": max(1, math.ceil(chars / CHARS_PER_TOKEN)),
                "how": f"characters / {CHARS_PER_TOKEN} (no tokenizer at hand)"}
    return {"examples": ds.rows, "seq_len_p95": None, "how": "no length statistics"}


def worker_gpus(db) -> list[float]:
    """Memory (GiB) of every GPU of the workers seen in the last ten minutes; [] means CPU only."""
    since = utcnow() - ALIVE
    return [float(g["memory_gb"]) for w in q.list_workers(db) if w.last_heartbeat and w.last_heartbeat >= since
            for g in (w.gpus or []) if g.get("memory_gb")]


def _size_b(model: BaseModel) -> float:
    """The model's parameter count in billions, from its config.json (as the advisor counts it)."""
    from studio.advisor.memory import resolve_shape

    return resolve_shape(model_config(model)).total() / 1e9


def worker_ram_gb(db) -> float | None:
    """RAM (GiB) of the largest alive worker that reported it: where a CPU job would train."""
    since = utcnow() - ALIVE
    sizes = [w.ram_total / 2**30 for w in q.list_workers(db)
             if w.last_heartbeat and w.last_heartbeat >= since and w.ram_total]
    return round(max(sizes), 1) if sizes else None


def known_gpus() -> list[float]:
    with session_scope() as db:
        return worker_gpus(db)


def estimator_history(db, limit: int = 500) -> dict:
    """How far the estimate was from the measured peak on the studio's finished training jobs."""
    from studio.advisor.jobcost import estimate_vs_measured

    errors = []
    for job in q.list_jobs(db, kind="train", limit=limit):
        vs = estimate_vs_measured(job.config, job.result)
        if vs and vs["error_pct"] is not None:
            errors.append(vs["error_pct"])
    mean = sum(abs(e) for e in errors) / len(errors) if errors else None
    return {"jobs": len(errors), "mean_abs_error_pct": mean, "mean_error_pct": sum(errors) / len(errors) if errors
            else None}


def objective_facts(db, ds: Dataset | None, model: BaseModel | None) -> dict:
    """What decides the objective (studio.advisor.objective): the data set's format, and the newest SFT and
    reward-model versions of the base the person can see (a preference objective starts from the first, GRPO
    may be rewarded by the second)."""
    from studio.versions import objective_of

    out: dict = {"data_format": ds.format if ds is not None else None}
    if model is not None:
        newest: dict = {}
        for v in q.list_versions(db):  # newest first
            if v.base_model_id == model.id:
                newest.setdefault(objective_of(v), v.id)
        out["sft_version"], out["reward_model"] = newest.get("sft"), newest.get("reward")
    return out


def studio_inputs(*, model=None, dataset=None, params_b: float | None = None, examples: int | None = None,
                  gpu_memory_gb: list[float] | None = None, cpu_only: bool = False,
                  **answers) -> tuple[AdvisorInputs, dict]:
    """AdvisorInputs from what the studio knows plus the person's answers; returns (inputs, where).

    ``model`` (id or name) gives the config, else ``params_b``; ``dataset`` (id) gives the example
    count and token lengths, else ``examples``; ``gpu_memory_gb`` as given, else the workers' GPUs,
    else the CPU.  ``where`` says where each fact came from, for the person to check.
    """
    where: dict = {}
    config = None
    with session_scope() as db:
        m = find_model(db, model) if model not in (None, "") else None
        if m is not None and params_b:
            raise SourceError(
                f"give a model or a size, not both: {m.name} has its own size "
                f"({_size_b(m):.3g} B parameters), and the size says {params_b:g} B. Clear the size (0) to "
                f"advise for {m.name}, or leave the model out to advise for a {params_b:g} B one.")
        if m is not None:
            config = model_config(m)
            where["model"] = f"{m.name} (config.json from the model store)"
        elif params_b:
            where["model"] = f"{params_b:g} B parameters (Llama-shaped guess)"
        ds = find_dataset(db, dataset) if dataset not in (None, "") else None
        for key, value in objective_facts(db, ds, m).items():
            answers.setdefault(key, value)
        if ds is not None:
            facts = dataset_facts(ds, m)
            examples = examples or facts["examples"]
            answers.setdefault("seq_len_p95", facts["seq_len_p95"])
            where["dataset"] = f"dataset {dataset}: {examples:,} examples, p95 length {facts['seq_len_p95']} tokens " \
                               f"({facts['how']})"
        if cpu_only:
            gpus, where["hardware"] = [], "CPU only (as asked)"
        elif gpu_memory_gb:
            gpus, where["hardware"] = list(gpu_memory_gb), "as given"
        else:
            gpus = worker_gpus(db)
            where["hardware"] = "the registered workers' GPUs" if gpus else "no worker with a GPU: CPU"
        if not gpus:  # on the CPU the budget is RAM: as given, else what the workers reported
            if answers.get("ram_gb"):
                where["hardware"] += f", {answers['ram_gb']:g} GB RAM (as given)"
            elif (ram := worker_ram_gb(db)) is not None:
                answers["ram_gb"] = ram
                where["hardware"] += f", {ram:g} GB RAM (the largest registered worker's)"
    if config is None and not params_b:
        raise SourceError("give a model (--model, an imported model) or its size in billions (--params-b)")
    inputs = AdvisorInputs(config=config, params_b=None if config else params_b, examples=examples,
                           gpu_memory_gb=gpus, cpu_only=cpu_only or not gpus, **answers)
    return inputs, where


__all__ = ["SourceError", "dataset_facts", "objective_facts", "estimator_history", "find_dataset", "find_model", "known_gpus",
           "model_config", "studio_inputs", "worker_gpus", "worker_ram_gb"]
