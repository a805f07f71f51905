"""Combining several LoRA versions of one base into a new version, without torch: the checks before a
``combine`` job is queued (worker/combine.py runs peft's ``add_weighted_adapter``), so a combination
that cannot work is refused with what to do instead. Multi-task integration, articles 000 and 001."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session

from models_db import ModelVersion, session_scope
from models_db import jobs as jobq
from studio import methods
from studio.evaluations import task_of
from studio.jobspec import SpecError

# peft's combination types, with whether the adapters must share a rank and whether density prunes
HOWS = {
    "linear": "weighted sum of the adapters (equal ranks)",
    "ties": "TIES: trim to the largest `density` share, elect a sign per weight, average those that agree (equal ranks)",
    "dare_linear": "DARE: drop a random 1-`density` share and rescale, then a weighted sum (equal ranks)",
    "dare_ties": "DARE pruning, then TIES sign election (equal ranks)",
    "magnitude_prune": "keep the largest `density` share of each, then a weighted sum (equal ranks)",
    "cat": "concatenate the low-rank matrices: exact, the rank is the sum of the ranks",
    "svd": "the exact weighted sum, re-factored by SVD to the largest rank",
}
EQUAL_RANKS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
USES_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
# a weighted sum keeps the scale with weights summing to 1; TIES-style merges average the agreeing
# weights themselves, so each adapter keeps its own scale at weight 1
MEAN_BY_WEIGHTS = ("linear", "dare_linear", "magnitude_prune", "cat", "svd")


@dataclass
class CombineSpec:
    """A ``combine`` job's config (also kept in the new version's config under "combination")."""

    parents: list[int]
    weights: list[float]
    combination: str = "linear"
    density: float = 0.5
    name: str = ""
    seed: int = 42  # DARE drops weights at random
    start_version_id: int | None = None  # what every parent was trained on top of (None: the base)
    base_model_id: int = 0
    task: str = "causal_lm"

    def to_json(self) -> dict:
        return asdict(self)


def default_weights(how: str, n: int) -> list[float]:
    return [1.0 / n] * n if how in MEAN_BY_WEIGHTS else [1.0] * n


def parse_weights(text: str | list | None, n: int, how: str) -> list[float]:
    """'0.5,0.5' -> [0.5, 0.5]; empty: the default for the combination; one number per parent."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return default_weights(how, n)
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    try:
        weights = [float(t) for t in items]
    except (TypeError, ValueError):
        raise SpecError(f"weights {text!r}: give one number per version, comma-separated, e.g. "
                        f"{','.join(['0.5'] * n)}") from None
    if len(weights) != n:
        raise SpecError(f"{len(weights)} weight(s) for {n} versions: give one per version, in the same order")
    if not any(weights):
        raise SpecError("every weight is 0: the combination would be the base model itself")
    return weights


def start_of(v: ModelVersion) -> int | None:
    """What a version's adapter applies to: its parent; for a combined version, what its parents started from
    (:func:`check` lets only versions of one start combine, so its first parent's). Read from the lineage
    rows (``VersionParent``), the one record of it; ``v`` must belong to a session."""
    if (v.config or {}).get("combination") is None:
        return v.parent_id
    first = v.parent
    return start_of(first) if first is not None else None


def rank_of(v: ModelVersion) -> tuple[int, str]:
    params = (v.config or {}).get("method_params") or {}
    return int(params.get("r") or 0), str(params.get("rank_pattern") or "")


def check(db: Session, parents: list[int], weights: list[float], how: str, density: float) -> list[ModelVersion]:
    """Refuse a combination that cannot work, saying what to do; returns the parent versions."""
    if how not in HOWS:
        raise SpecError(f"combination {how!r}: use one of {', '.join(HOWS)}")
    ids = list(dict.fromkeys(int(p) for p in parents))
    if len(ids) < 2:
        raise SpecError("combining takes at least 2 different versions: name two or more LoRA versions of one base")
    if how in USES_DENSITY and not 0 < density <= 1:
        raise SpecError(f"density {density}: the share of each adapter's weights kept by {how} must be in (0, 1]")
    vs = []
    for i in ids:
        v = db.get(ModelVersion, i)
        if v is None:
            raise SpecError(f"version {i} does not exist (studio versions list)")
        vs.append(v)
    combinable = [m.name for m in methods.REGISTRY.values() if m.combinable]
    for v in vs:
        spec = methods.get(v.method)
        if not spec.combinable:
            why = spec.not_combinable_why or (f"only LoRA adapters ({', '.join(combinable)}) are low-rank matrices "
                                              "peft can combine")
            raise SpecError(f"version {v.id} was trained with {v.method}, which cannot be combined: {why}. Combine "
                            f"versions trained with {' or '.join(combinable)}, or retrain this one with lora.")
    bases = {v.base_model_id for v in vs}
    if len(bases) > 1:
        listed = ", ".join(f"#{v.id} on base {v.base_model_id}" for v in vs)
        raise SpecError(f"the versions come from different base models ({listed}); adapters only combine on the "
                        "base they were trained on: pick versions of one base model.")
    tasks = {task_of(v) for v in vs}
    if len(tasks) > 1:
        listed = ", ".join(f"#{v.id} {task_of(v)}" for v in vs)
        raise SpecError(f"the versions were trained for different tasks ({listed}); combine versions of one task.")
    if tasks == {"seq_cls"}:
        raise SpecError("classifiers cannot be combined: each has its own fully trained head, which peft's "
                        "add_weighted_adapter does not merge. Combine causal-LM versions, or train one classifier "
                        "on both data sets.")
    starts = {start_of(v) for v in vs}
    if len(starts) > 1:
        listed = ", ".join(f"#{v.id} on {f'version #{start_of(v)}' if start_of(v) else 'the base'}" for v in vs)
        raise SpecError(f"the versions were trained on different starting points ({listed}), so their adapters "
                        "change different weights; combine versions trained from the same base or the same parent.")
    ranks = {rank_of(v) for v in vs}
    if how in EQUAL_RANKS and len(ranks) > 1:
        listed = ", ".join(f"#{v.id} r={rank_of(v)[0]}" + (f" ({rank_of(v)[1]})" if rank_of(v)[1] else "") for v in vs)
        raise SpecError(f"{how} needs adapters of equal rank, and these differ ({listed}); use --how cat or svd, "
                        "which combine any ranks, or combine versions trained with the same r.")
    saved = [v.id for v in vs if ((v.config or {}).get("method_params") or {}).get("modules_to_save")]
    if len(saved) > 1:
        raise SpecError(f"versions {', '.join(f'#{i}' for i in saved)} each train whole modules (modules_to_save), "
                        "which peft cannot combine; combine versions trained without modules_to_save.")
    return vs


def submit_combine(parents: list[int], *, weights: str | list | None = None, how: str = "linear",
                   density: float = 0.5, name: str | None = None) -> tuple:
    """Check the versions and queue a ``combine`` job. Returns (job, spec)."""
    from studio import operations, routing

    with session_scope() as db:
        ids = list(dict.fromkeys(int(p) for p in parents))
        w = parse_weights(weights, len(ids), how)
        vs = check(db, ids, w, how, float(density))
        base = vs[0].base_model
        name = (name or "").strip() or f"{base.name}-{how}-" + "+".join(f"v{v.id}" for v in vs)
        if len(name) > 200:
            raise SpecError("a version's name must be 1 to 200 characters")
        spec = CombineSpec(parents=ids, weights=w, combination=how, density=float(density), name=name,
                           start_version_id=start_of(vs[0]), base_model_id=base.id, task=task_of(vs[0]))
        job, _ = jobq.create_job(db, kind="combine", config=spec.to_json(), base_model_id=base.id,
                                 parent_version_id=ids[0], queue=routing.default_queue())
    operations.send("combine", job.id, job.queue)
    return job, spec
