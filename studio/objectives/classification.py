"""Sequence classification: a new head on the base learns the data set's labels (the task called seq_cls before
objectives existed)."""
from __future__ import annotations

from dataclasses import dataclass

from studio.objectives.spec import ObjectiveError, ObjectiveSpec, register


@dataclass(frozen=True)
class ClassificationParams:
    """Classification has no settings of its own: the head is sized from the data set's labels."""


def check_stats(dataset_id: int, stats: dict, rows: int) -> None:
    """A classifier needs at least two classes."""
    labels = stats.get("labels") or {}
    if len(labels) < 2:
        only = f" ({next(iter(labels))!r})" if labels else ""
        raise ObjectiveError(f"dataset {dataset_id} has one label{only} in all its {rows} rows: a classifier needs at "
                             "least two classes. Add examples of the other classes and register the file again.")


SPEC = register(ObjectiveSpec(
    name="classification",
    params=ClassificationParams,
    summary="Sequence classification: a new head learns the data set's labels (encoders and decoders).",
    task="seq_cls",
    formats=("classification",),
    title="sequence classification (task seq_cls)",
    data_help="a classification data set with text and label columns",
    suggest="Train a classifier on it with task seq_cls (objective classification)",
    check_stats=check_stats,
))
