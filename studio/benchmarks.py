"""Benchmarks, without torch: what each benchmark format measures, the lm-evaluation-harness task each becomes,
and the data sets a person pins as benchmarks for a base model.

A benchmark is a data set of format ``multiple_choice`` or ``qa`` (studio/datasets/benchmark_rows.py). The
worker (worker/benchmark.py) scores it with lm-evaluation-harness: the task config below plus the stored rows
as its data set, and the studio's own loaded model (a version rebuilt from its lineage, or a base) as its LM.
Every evaluation of a benchmark also records the loss on the same rows (their ``messages``), like any data set.

- multiple_choice: lm-eval's ``multiple_choice`` output type: the log-likelihood of each choice after the
  question; ``acc`` (the highest-scoring choice is the answer) and ``acc_norm`` (each choice's log-likelihood
  divided by its length in characters first), each with its standard error.
- qa: lm-eval's ``generate_until``: greedy generation until the end of the turn, the final answer extracted
  from the reply as from the reference (benchmark_rows.final_answer), ``exact_match`` with its standard error.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_db import BaseModel, BenchmarkPin, Dataset
from studio.jobspec import SpecError

NOISE_STDERRS = 2.0  # a difference counts as beyond noise past this many standard errors (of the difference)


@dataclass(frozen=True)
class BenchmarkKind:
    """One benchmark format: its lm-eval output type and the measures it reports (key, label, better)."""

    format: str
    output_type: str
    measures: tuple[tuple[str, str, str], ...]
    filter: str = "none"  # the lm-eval filter whose figures are read

    @property
    def headline(self) -> str:
        """The measure a comparison and the forgetting badge look at first."""
        return self.measures[0][0]


KINDS: dict[str, BenchmarkKind] = {k.format: k for k in (
    BenchmarkKind("multiple_choice", "multiple_choice",
                  (("acc", "accuracy", "higher"), ("acc_norm", "accuracy (length-normalised)", "higher"))),
    BenchmarkKind("qa", "generate_until", (("exact_match", "exact match", "higher"),), filter="final_answer"),
)}
FORMATS = tuple(KINDS)
MAX_NEW_TOKENS = 512  # a qa reply's budget: twice the longest reference answer in tokens, at most this


def is_benchmark(fmt: str) -> bool:
    return fmt in KINDS


def task_config(fmt: str, name: str, max_new_tokens: int = 256) -> dict:
    """The lm-eval task config (a dict ``ConfigurableTask`` takes) for a benchmark format; the worker adds the
    rows (``custom_dataset``) and, for qa, the answer-extracting filter function."""
    kind = KINDS[fmt]
    metrics = [{"metric": key, "aggregation": "mean", "higher_is_better": True} for key, _, _ in kind.measures]
    config = {"task": name, "test_split": "test", "output_type": kind.output_type,
              "doc_to_text": "{{question}}", "metric_list": metrics, "num_fewshot": 0}
    if fmt == "multiple_choice":
        # each choice is a continuation of the question (a chat turn: the assistant's reply, no separator)
        return {**config, "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "target_delimiter": " "}
    return {**config, "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": int(max_new_tokens)}}


def stderr_key(key: str) -> str:
    return f"{key}_stderr"


# --- pins -------------------------------------------------------------------------------------------------

def pins(db: Session, base_model_id: int) -> list[Dataset]:
    """The data sets pinned as benchmarks for a base model, oldest pin first."""
    return list(db.scalars(select(Dataset).join(BenchmarkPin, BenchmarkPin.dataset_id == Dataset.id)
                           .where(BenchmarkPin.base_model_id == base_model_id).order_by(BenchmarkPin.created_at,
                                                                                        Dataset.id)))


def pin(db: Session, base_model_id: int, dataset_id: int) -> bool:
    """Pin a benchmark for a base model: every new version of it is then evaluated on it, beside its parent and
    its base. Any data set a causal LM can be evaluated on may be pinned (a benchmark, or instruction data whose
    loss should not drift). Returns False when it was pinned already."""
    from studio.evaluations import check_base_pair

    base, ds = db.get(BaseModel, base_model_id), db.get(Dataset, dataset_id)
    if base is None:
        raise SpecError(f"base model {base_model_id} does not exist (studio models list)")
    _may_change_pins(db, base)
    if ds is None:
        raise SpecError(f"dataset {dataset_id} does not exist (studio dataset list)")
    check_base_pair(base, ds)
    if db.get(BenchmarkPin, (base_model_id, dataset_id)) is not None:
        return False
    db.add(BenchmarkPin(base_model_id=base_model_id, dataset_id=dataset_id))
    db.flush()
    return True


def unpin(db: Session, base_model_id: int, dataset_id: int) -> bool:
    base = db.get(BaseModel, base_model_id)
    if base is None:
        raise SpecError(f"base model {base_model_id} does not exist (studio models list)")
    _may_change_pins(db, base)
    row = db.get(BenchmarkPin, (base_model_id, dataset_id))
    if row is not None:
        db.delete(row)
    return row is not None


def _may_change_pins(db: Session, base: BaseModel) -> None:
    """A base model's pins decide what every new version of it is evaluated on, whoever trained it: they are
    changed by whoever may change the base model (its owner or an admin), like the model itself."""
    from models_db.access import AccessError, can_change, current, describe_owner

    if not can_change(db, base, current()):
        raise AccessError(f"base model {base.name} belongs to {describe_owner(db, base)}: only its owner or an admin "
                          "pins or unpins its benchmarks")


# --- per-question results ------------------------------------------------------------------------------------

def examples_view(examples: list[dict], failed_only: bool = False) -> list[dict]:
    """A benchmark's per-question results, as listed: all, or only those the model got wrong."""
    return [e for e in examples or [] if not (failed_only and e.get("correct"))]
