"""Model versions without torch: the table, lineage (with its picture), comparison of 2-4 versions,
and rename / tag / notes / delete. The Versions tab and `studio versions ...` both call these."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete as sa_delete
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from models_db import Dataset, Evaluation, Job, JobState, Metric, ModelVersion, VersionParent, session_scope
from models_db import queries as q
from models_db.access import hidden_reason
from studio import audit, evaluations, generations
from studio.advisor.mermaid import _text as mermaid_text
from studio.jobspec import SpecError
from studio.settings import get_settings

CURVES = ("loss", "eval_loss")
MAX_POINTS = 400  # per curve, for display
MAX_TAGS, TAG_RE = 10, re.compile(r"^[\w.+-]{1,32}$")


class VersionError(SpecError):
    """A request about versions the studio refuses; the message says why and what to do."""


def get(db: Session, version_id: int) -> ModelVersion:
    v = db.get(ModelVersion, int(version_id))
    if v is None:  # missing, or someone else's (models_db.access filters every query by owner)
        raise VersionError(hidden_reason(db, ModelVersion, int(version_id))
                           or f"version {version_id} does not exist (studio versions list)")
    return v


# --- what a version measured ---------------------------------------------------------------------

@dataclass(frozen=True)
class Stat:
    key: str
    label: str
    better: str | None  # "lower", "higher" or None (neither)
    digits: int = 4


STATS = (
    Stat("train_loss", "train loss", "lower"), Stat("eval_loss", "eval loss", "lower"),
    Stat("perplexity", "perplexity", "lower", 3), Stat("eval_accuracy", "accuracy", "higher"),
    Stat("eval_f1", "F1", "higher"), Stat("trainable_pct", "trainable %", None, 3),
    Stat("peak_memory_gb", "peak memory (GB)", "lower", 2), Stat("train_seconds", "training time (s)", "lower", 1),
    Stat("tokens_per_s", "tokens/s (run average)", "higher", 0), Stat("size_mb", "size (MB)", "lower", 2),
    Stat("ms_per_token", "latency (ms/token)", "lower", 2),  # median of its generations (studio.generations)
)
# what a preference objective measured on held-out pairs (DPO, KTO, ORPO, SimPO, reward models): shown where
# versions are compared, not as columns of the versions table (most versions have none)
OBJECTIVE_STATS = (
    Stat("eval_rewards/accuracies", "reward accuracy (held-out pairs)", "higher", 3),
    Stat("eval_rewards/margins", "reward margin (held-out)", "higher", 3),
    Stat("eval_rewards/chosen", "reward of chosen (held-out)", "higher", 3),
    Stat("eval_rewards/rejected", "reward of rejected (held-out)", "lower", 3),
)


def artifact_bytes(v: ModelVersion) -> int:
    """Bytes on disk of the version's own artifacts (its adapter, or its weights for full fine-tuning)."""
    home, total = get_settings().home_abs, 0
    for rel in v.artifacts.values():
        p = home / rel
        files = [p] if p.is_file() else (p.rglob("*") if p.is_dir() else [])
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def stats(v: ModelVersion) -> dict:
    """The comparable numbers of a version (None where it did not measure one)."""
    m = v.metrics
    num = {k: float(x) for k, x in m.items() if isinstance(x, (int, float)) and not isinstance(x, bool)}
    ratio = num.get("trainable_ratio")
    out = {s.key: num.get(s.key) for s in (*STATS, *OBJECTIVE_STATS)}
    out["trainable_pct"] = 100 * ratio if ratio is not None else None
    # tokens/s means what the Jobs tab shows: real tokens per second of training steps (evaluation and
    # checkpoints excluded), here averaged over the run; older versions only have the whole-run figure
    out["tokens_per_s"] = num.get("train_tokens_per_s", num.get("tokens_per_s"))
    out["size_mb"] = artifact_bytes(v) / 2**20 if v.artifacts else None
    out["ms_per_token"] = generations.median_ms_per_token(object_session(v), v.id) if object_session(v) else None
    return out


def rows() -> list[dict]:
    """One row per version, newest first, numbers left numeric so the table sorts them."""
    with session_scope() as db:
        out = []
        for v in q.list_versions(db):
            s = stats(v)
            out.append({"id": v.id, "name": v.name, "tags": ", ".join(v.tags or []), "method": v.method,
                        "dataset": _dataset_label(v.dataset), **{st.label: s[st.key] for st in STATS},
                        "base": v.base_model.name, "created": f"{v.created_at:%Y-%m-%d %H:%M}"})
        return out


def _dataset_label(d: Dataset | None) -> str:
    return f"#{d.id} {d.name}" if d else ""


# --- editing ---------------------------------------------------------------------------------------

def parse_tags(tags: str | list[str]) -> list[str]:
    """Comma-separated (or listed) tags, trimmed and de-duplicated in order; each checked."""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    out = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    bad = [t for t in out if not TAG_RE.match(t)]
    if bad:
        raise VersionError(f"tag {bad[0]!r}: use 1 to 32 letters, digits or . _ + - (no spaces); "
                           "separate tags with commas")
    if len(out) > MAX_TAGS:
        raise VersionError(f"{len(out)} tags: a version takes at most {MAX_TAGS}")
    return out


def update(version_id: int, *, name: str | None = None, tags: str | list[str] | None = None,
           notes: str | None = None) -> None:
    """Rename, re-tag and annotate a version; None leaves a field as it is."""
    with session_scope() as db:
        v = get(db, version_id)
        if name is not None:
            if not name.strip() or len(name.strip()) > 200:
                raise VersionError("a version's name must be 1 to 200 characters")
            v.name = name.strip()
        if tags is not None:
            v.tags = parse_tags(tags)
        if notes is not None:
            if len(notes) > 20_000:
                raise VersionError(f"notes are {len(notes)} characters; keep them under 20000")
            v.notes = notes


@dataclass
class DeletePlan:
    """What deleting a version would remove: the versions (deepest first) and their files on disk."""
    ids: list[int]
    paths: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        extra = f" and its descendants {', '.join(f'#{i}' for i in sorted(self.ids[:-1]))}" if len(self.ids) > 1 else ""
        return f"version #{self.ids[-1]}{extra}, with {len(self.paths)} artifact folder(s) and file(s)"


def plan_delete(version_id: int, *, cascade: bool = False) -> DeletePlan:
    """Check that a version may go and list what goes with it; raises VersionError when it may not."""
    s = get_settings()
    with session_scope() as db:
        v = get(db, version_id)
        kids = q.descendants(db, v.id)
        if kids and not cascade:
            listed = ", ".join(f"#{i}" for i in sorted(k.id for k in kids))
            raise VersionError(
                f"version {v.id} has {len(kids)} descendant version(s) ({listed}) "
                "trained from it; delete them first, or confirm deleting them too (CLI: --cascade; UI: tick "
                "'also delete its descendants')")
        doomed = [*reversed(kids), v]  # children before parents: the lineage keys stay valid
        ids = {d.id for d in doomed}
        for job in db.scalars(select(Job).where(Job.state.not_in(JobState.finished()))):
            cfg = job.config or {}
            used = {job.parent_version_id, cfg.get("version_id"), cfg.get("parent_version_id"),
                    *(cfg.get("parents") or [])} & ids  # a combine job reads every parent
            if used:
                raise VersionError(
                    f"version {min(used)} is in use by job {job.id} ({job.kind}, {job.state}); wait for it to "
                    f"finish or cancel it (studio jobs cancel {job.id}), then delete")
        paths = [s.home_abs / rel for d in doomed for rel in d.artifacts.values()]
        paths += [s.home_abs / "jobs" / str(d.job_id) / sub for d in doomed if d.job_id
                  for sub in ("checkpoints", "merged-parent")]
        paths += [z for d in doomed for z in sorted(s.home_abs.joinpath("exports").glob(f"version-{d.id}-*.zip"))]
        return DeletePlan([d.id for d in doomed], [p for p in paths if p.exists() and _inside(p, s.home_abs)])


def _inside(p: Path, root: Path) -> bool:
    return p.resolve().is_relative_to(root)


def delete(version_id: int, *, cascade: bool = False) -> DeletePlan:
    """Delete a version (and, with ``cascade``, its descendants) and their artifacts.

    Refused while a descendant exists (without ``cascade``) or while a queued or running job uses one
    of them. Finished jobs that started from a deleted version keep their history, unlinked."""
    plan = plan_delete(version_id, cascade=cascade)
    with session_scope() as db:
        for job in db.scalars(select(Job).where(Job.parent_version_id.in_(plan.ids))):
            job.parent_version_id = None
        # its lineage rows (as child or parent: a combined child is among the descendants) and evaluations
        db.execute(sa_delete(VersionParent).where(VersionParent.version_id.in_(plan.ids)
                                                  | VersionParent.parent_id.in_(plan.ids)))
        db.execute(sa_delete(Evaluation).where(Evaluation.version_id.in_(plan.ids)))
        db.expire_all()  # the versions' loaded parent links are gone with the rows above
        for vid in plan.ids:
            db.delete(db.get(ModelVersion, vid))
            db.flush()
        audit.record("version.delete", f"version {version_id}", db=db,
                     detail=f"with descendants {sorted(set(plan.ids) - {version_id})}" if len(plan.ids) > 1 else "")
    for p in plan.paths:  # files go once the rows are gone: a failed delete leaves everything in place
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        if p.parent.name.startswith("job-") and p.parent.is_dir() and not any(p.parent.iterdir()):
            p.parent.rmdir()  # versions/job-N/ once its adapter is gone
    return plan


# --- lineage -----------------------------------------------------------------------------------------

def _node(v: ModelVersion) -> dict:
    db = object_session(v)
    return {"id": v.id, "name": v.name, "method": v.method, "objective": objective_of(v), "parent_id": v.parent_id,
            "dataset_id": v.dataset_id,
            "parents": [{"id": p.id, "weight": w} for p, w in q.parents(db, v.id)] if db else []}


def lineage(db: Session, version_id: int) -> dict:
    """The version's parents with their weights (several for a combined version), its ancestors
    (nearest first) and descendants (every parent before its children)."""
    v = get(db, version_id)
    return {"parents": [{"id": p.id, "name": p.name, "method": p.method, "weight": w} for p, w in q.parents(db, v.id)],
            "ancestors": [_node(a) for a in q.ancestors(db, v.id)],
            "descendants": [_node(d) for d in q.descendants(db, v.id)]}


NODE_STYLES = {
    "base": "fill:#e0e7ff,stroke:#4338ca,color:#1e1b4b",
    "data": "fill:#ecfeff,stroke:#0e7490,color:#164e63",
    "ver": "fill:#f8fafc,stroke:#64748b,color:#0f172a",
    "focus": "fill:#fde68a,stroke:#b45309,stroke-width:3px,color:#111827",
}


def lineage_mermaid(version_id: int) -> str:
    """A fenced Mermaid flowchart: base model -> ancestors -> the version -> its descendants, with the
    data set that fed each version on a dotted edge. Every node names its id. A combined version has an
    edge from each of its parents, labelled with its weight (its other parents are drawn too)."""
    with session_scope() as db:
        v = get(db, version_id)
        family = [*reversed(q.ancestors(db, v.id)), v, *q.descendants(db, v.id)]
        edges = {f.id: q.parents(db, f.id) for f in family}
        family += list({p.id: p for ps in edges.values() for p, _ in ps if p.id not in {f.id for f in family}}.values())
        base = v.base_model
        datasets = {d.id: d for d in (db.get(Dataset, f.dataset_id) for f in family if f.dataset_id) if d}
        lines = ["```mermaid", "flowchart LR", f'  B{base.id}(["{mermaid_text(f"base #{base.id} · {base.name}")}"])']
        lines += [f'  D{d.id}[("{mermaid_text(f"data set #{d.id} · {d.name}")}")]' for d in datasets.values()]
        lines += [f'  V{f.id}["{mermaid_text(f"#{f.id} · {f.name} · {f.method}")}"]' for f in family]
        lines += [_edges(f, edges.get(f.id) if f.id in edges else q.parents(db, f.id), base.id) for f in family]
        lines += [f"  D{f.dataset_id} -.-> V{f.id}" for f in family if f.dataset_id in datasets]
    lines += [f"  classDef {name} {style}" for name, style in NODE_STYLES.items()]
    lines += [f"  class B{base.id} base"]
    if datasets:
        lines.append(f"  class {','.join(f'D{i}' for i in datasets)} data")
    others = [f"V{f.id}" for f in family if f.id != v.id]
    if others:
        lines.append(f"  class {','.join(others)} ver")
    lines += [f"  class V{v.id} focus", "```"]
    return "\n".join(lines)


def objective_of(v: ModelVersion) -> str | None:
    """The objective that trained ``v`` (sft, dpo, grpo...; a version stored before objectives existed by its
    task); None for a combination, which trained nothing."""
    from studio import objectives

    config = v.config or {}
    if config.get("combination") or v.method == "combine":
        return None
    try:
        return objectives.of_config(config)
    except objectives.ObjectiveError:
        return config.get("objective")


def _edges(v: ModelVersion, parents: list[tuple[ModelVersion, float]], base_id: int) -> str:
    """Mermaid edges into ``v``: from the base or its parent, labelled with the objective that trained it (sft,
    dpo...), or from each parent of a combined version with its weight."""
    if len(parents) > 1 or (parents and parents[0][1] != 1.0):
        return "\n".join(f'  V{p.id} -- "{mermaid_text(f"x {w:g}")}" --> V{v.id}' for p, w in parents)
    start = f"V{parents[0][0].id}" if parents else f"B{base_id}"
    objective = objective_of(v)
    return f'  {start} -- "{mermaid_text(objective)}" --> V{v.id}' if objective else f"  {start} --> V{v.id}"


# --- comparison ----------------------------------------------------------------------------------------

def thin(points: list, n: int = MAX_POINTS) -> list:
    """At most ``n`` evenly spaced points, always keeping the first and the last."""
    if len(points) <= n:
        return points
    keep = np.unique(np.linspace(0, len(points) - 1, n).round().astype(int))
    return [points[i] for i in keep]


def curves(db: Session, job_id: int | None, max_points: int = MAX_POINTS) -> dict[str, list[list[float | None]]]:
    """``{"loss": [[step, tokens_seen, value], ...], "eval_loss": [...]}`` for a training job; a step
    logged again by a later attempt (after a resume) replaces the earlier one. Tokens seen at an
    eval step are interpolated from the train logs; None where the job logged no token counts."""
    if job_id is None:
        return {}
    by_key: dict[tuple[str, int], float] = {}
    for name, step, value in db.execute(select(Metric.name, Metric.step, Metric.value).where(
            Metric.job_id == job_id, Metric.name.in_((*CURVES, "tokens_seen"))).order_by(Metric.id)):
        by_key[(name, step)] = value
    tok = sorted((s, val) for (name, s), val in by_key.items() if name == "tokens_seen")
    xs, ys = [0] + [s for s, _ in tok], [0.0] + [val for _, val in tok]
    out = {}
    for c in CURVES:
        pts = thin(sorted((s, val) for (name, s), val in by_key.items() if name == c), max_points)
        if pts:  # thinned first, then interpolated in one call: a long run has tens of thousands of points
            tokens = np.interp([s for s, _ in pts], xs, ys).tolist() if tok else [None] * len(pts)
            out[c] = [[s, t, val] for (s, val), t in zip(pts, tokens)]
    return out


# config entries that are not settings: bare ids (the base and the data set are named with their ids
# below) and the advisor's memory estimate made at submit
NOT_SETTINGS = ("model_id", "dataset_id", "estimate")


def flat_config(v: ModelVersion) -> dict:
    """The version's config as dotted keys (method_params.r, training.learning_rate, ...)."""
    out = {}

    def walk(prefix: str, obj):
        if isinstance(obj, dict) and obj:
            for k, val in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), val)
        else:
            out[prefix] = obj
    cfg = {k: val for k, val in v.config.items() if k not in NOT_SETTINGS}
    walk("", {**cfg, "method": v.method, "base_model": f"#{v.base_model_id} {v.base_model.name}",
              "dataset": _dataset_label(v.dataset) or v.config.get("dataset"), "parent_version_id": v.parent_id})
    return out


def config_diff(configs: list[dict]) -> list[dict]:
    """Only the keys whose values differ between the versions: [{"key", "values": [one per version]}]."""
    keys = sorted(set().union(*configs))
    rows = []
    for k in keys:
        values = [c.get(k) for c in configs]
        if len({json.dumps(x, sort_keys=True, default=str) for x in values}) > 1:
            rows.append({"key": k, "values": values})
    return rows


def _diff(first: float | None, x: float | None) -> tuple[float | None, float | None]:
    if first is None or x is None:
        return None, None
    return x - first, (100 * (x - first) / abs(first) if first else None)


def compare(version_ids: list[int], max_points: int = MAX_POINTS) -> dict:
    """Two to four versions side by side: per-version metrics with differences against the first,
    the config keys that differ, and their loss curves (by step and by tokens seen)."""
    ids = list(dict.fromkeys(int(i) for i in version_ids))
    if not 2 <= len(ids) <= 4:
        raise VersionError(f"compare takes 2 to 4 different versions, got {len(ids)}")
    with session_scope() as db:
        vs = [get(db, i) for i in ids]
        per = [stats(v) for v in vs]
        metrics = []
        for st in (*STATS, *OBJECTIVE_STATS):
            values = [p[st.key] for p in per]
            if all(x is None for x in values):
                continue
            diffs = [_diff(values[0], x) for x in values]
            metrics.append({"key": st.key, "label": st.label, "better": st.better, "digits": st.digits,
                            "values": values, "diff": [d for d, _ in diffs], "pct": [p for _, p in diffs]})
        kinds = {v.metrics.get("peak_memory_kind") for v in vs} - {None}
        shared_base = vs[0].base_model_id if len({v.base_model_id for v in vs}) == 1 else None
        return {
            "versions": [{"id": v.id, "name": v.name, "method": v.method, "base_model": v.base_model.name,
                          "dataset": _dataset_label(v.dataset), "tags": v.tags, "job_id": v.job_id} for v in vs],
            "metrics": metrics,
            "peak_memory_kinds": sorted(kinds),
            "config_diff": config_diff([flat_config(v) for v in vs]),
            "curves": {str(v.id): curves(db, v.job_id, max_points) for v in vs},
            # version x data set (studio.evaluations), with the shared base as it is in a last column
            "evaluations": evaluations.table(db, ids, base_model_id=shared_base),
            "evaluations_base": vs[0].base_model.name if shared_base is not None else None,
        }
