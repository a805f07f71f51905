"""What the job page shows for each kind of job (train, evaluate, combine, export): what it works on
(the picker's and the queue's label), its status card (progress, the stat cards: a training job's speed,
losses, ETA and memory, any other job's timing) and its result once it succeeded. Pure rendering from a
``Job`` row and the newest metric values; the Jobs tab (studio/tabs/jobs.py) polls and wires it."""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from models_db import Job, JobState
from models_db.schema import utcnow
from studio.advisor.jobcost import describe_memory, estimate_vs_measured
from studio.jobkinds import JOB_KINDS


def _train_what(j: Job) -> str:
    method = (j.config or {}).get("method", "train")
    return f"{method} on data set #{j.dataset_id}" if j.dataset_id else method


def _export_what(j: Job) -> str:
    cfg = j.config or {}
    of = f"base model #{cfg['base_model_id']}" if cfg.get("version_id") is None and cfg.get("base_model_id") \
        else f"version #{cfg.get('version_id')}"
    return f"{of} as {cfg.get('format') or ('merged' if cfg.get('merged') else 'adapter')}"


def _evaluate_what(j: Job) -> str:
    cfg = j.config or {}
    model = f"version #{cfg['version_id']}" if cfg.get("version_id") else f"base model #{cfg.get('base_model_id')}"
    return f"{model} on data set #{cfg.get('dataset_id')}"


def _combine_what(j: Job) -> str:
    cfg = j.config or {}
    parents, weights = cfg.get("parents") or [], cfg.get("weights") or []
    parts = [f"#{p} × {w:g}" for p, w in zip(parents, weights)] if len(weights) == len(parents) else [f"#{p}" for p in parents]
    return f"{cfg.get('combination', 'linear')} of {' + '.join(parts)}"


def _metrics_text(metrics: dict) -> str:
    return " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _evaluations_html(result: dict) -> str:
    items = "".join(f"<li>data set #{e.get('dataset_id')} ({e.get('split', 'eval')}, {e.get('rows', '?')} rows): "
                    f"{html.escape(_metrics_text(e.get('metrics') or {}))}</li>" for e in result.get("evaluations") or [])
    return f"<ul class='job-evals'>{items}</ul>" if items else ""


def _train_result(j: Job) -> str:
    version = (j.result or {}).get("version_id")
    return f"Model version #{version} is ready on the Versions tab." if version else ""


def _export_result(j: Job) -> str:
    r = j.result or {}
    if not r.get("zip"):
        return ""
    speed = f" · {r['ms_per_token']:.3g} ms/token measured on the export" if r.get("ms_per_token") else ""
    check = r.get("fidelity") or {}
    against = "the base model in float32" if r.get("base_model_id") else "the trained model"
    verdict = ("" if not check else f" · verified against {against}" if check.get("verified")
               else f" · <b>not verified</b>: {html.escape(str(check.get('reason')))}")
    fmt, zip_ = html.escape(str(r.get("format", "export"))), html.escape(str(r["zip"]))
    if r.get("base_model_id"):  # a base model as it is: started from the CLI, which unpacks it (--out)
        return (f"The {fmt} export of base model #{r['base_model_id']} is ready in the studio's home: <code>{zip_}"
                f"</code> (<code>studio models export … --out DIR</code> unpacks it){speed}{verdict}")
    return (f"The {fmt} export of version #{r.get('version_id')} is ready to "
            f"download on the Versions tab: <code>{zip_}</code>{speed}{verdict}")


def _evaluate_result(j: Job) -> str:
    evals = _evaluations_html(j.result or {})
    return f"Evaluated (the Versions tab compares versions on it):{evals}" if evals else ""


def _combine_result(j: Job) -> str:
    r = j.result or {}
    if not r.get("version_id"):
        return ""
    evals = _evaluations_html(r)
    kept = f" On each parent's data set:{evals}" if evals else ""
    return f"Combined version #{r['version_id']} is ready on the Versions tab.{kept}"


@dataclass(frozen=True)
class KindView:
    """What the job page shows for one kind of job (studio/jobkinds.py): what it works on, and its result once
    it succeeded (HTML). Kinds that train also get the charts and stats (loss, throughput, system)."""

    what: Callable[[Job], str]
    result: Callable[[Job], str]


def _preflight_what(j: Job) -> str:
    cfg = j.config or {}
    steps = (cfg.get("preflight") or {}).get("steps")
    return (f"pre-flight of {cfg.get('method', '?')} on data set #{cfg.get('dataset_id')}"
            + (f", {steps} measured steps" if steps else ""))


def _preflight_result(j: Job) -> str:
    from studio import preflight

    text = html.escape(preflight.describe(preflight.status_of(j)))
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text).replace("\n\n", "<br>")


VIEWS = {
    "preflight": KindView(_preflight_what, _preflight_result),
    "train": KindView(_train_what, _train_result),
    "evaluate": KindView(_evaluate_what, _evaluate_result),
    "combine": KindView(_combine_what, _combine_result),
    "export": KindView(_export_what, _export_result),
}


def view(kind: str) -> KindView:
    """The kind's view; a kind this tab does not know shows its progress, log and raw result."""
    return VIEWS.get(kind) or KindView(lambda j: j.kind, lambda j: html.escape(str(j.result or "")))


def has_charts(kind: str) -> bool:
    """Whether the job page shows training charts and stats for ``kind``: the kinds that train."""
    return kind in JOB_KINDS and JOB_KINDS[kind].trains


def job_label(j: Job) -> str:
    """The picker's label: the kind, then what it works on ('#12 export · version #4 as merged · Mar 01 10:00')."""
    return f"#{j.id} {j.kind} · {view(j.kind).what(j)} · {j.created_at:%b %d %H:%M}"


def eta_seconds(pace: list | None, step: int, max_steps: int) -> float | None:
    """Remaining time from the pace of the logged steps of the current attempt: ``pace`` is
    [time of its first loss point, its step, time of its latest, its step]."""
    if not pace or not max_steps or step >= max_steps:
        return None
    t0, s0, t1, s1 = pace
    dt, ds = (t1 - t0).total_seconds(), s1 - s0
    return dt / ds * (max_steps - step) if ds > 0 and dt > 0 else None


def _fmt_secs(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _fmt(latest: dict, name: str, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return f"{latest[name] * scale:{spec}}{unit}" if latest.get(name) is not None else "—"


def throughput_stats(latest: dict) -> list[tuple[str, str]]:
    """The latest logging step's speed: real tokens/s (padding excluded), samples/s, step time, and on
    CUDA the model FLOPs utilisation (with HFU beside it when activations are recomputed)."""
    stats = [("tokens/s", _fmt(latest, "tokens_per_s", ",.0f")), ("samples/s", _fmt(latest, "samples_per_s", ".3g")),
             ("step time", _fmt(latest, "step_time_s", ".3g", unit=" s"))]
    if latest.get("mfu") is not None:
        hfu = f" (HFU {100 * latest['hfu']:.1f}%)" if latest.get("hfu") is not None else ""
        stats.append(("MFU", f"{100 * latest['mfu']:.1f}%{hfu}"))
    return stats


def _stats(job: Job, latest: dict, pace: list | None) -> list[tuple[str, str]]:
    """The stat cards: a training job's speed, losses, ETA and memory; any other job's attempt and timing."""
    if not has_charts(job.kind):
        took = ((job.finished_at or utcnow()) - job.started_at).total_seconds() if job.started_at else None
        return [("attempt", f"{job.attempt} of {job.max_attempts}"),
                ("started", f"{job.started_at:%b %d %H:%M:%S}" if job.started_at else "—"),
                ("took" if job.finished_at else "running for", _fmt_secs(took))]
    eta = eta_seconds(pace, job.step, job.max_steps)
    memory = describe_memory(estimate_vs_measured(job.config, job.result))
    if not job.result and latest.get("peak_memory_gb") is not None:  # running: the peak so far
        memory = f"{latest['peak_memory_gb']:.2f} GB so far · {memory}"
    speed = throughput_stats(latest)
    run = (job.result or {}).get("metrics", {}) if job.state == JobState.succeeded else {}
    if run.get("train_tokens_per_s"):  # finished: the run's average, the figure its version records
        speed[0] = ("tokens/s (run average)", f"{run['train_tokens_per_s']:,.0f}")
    return [("learning rate", f"{latest['learning_rate']:.3g}" if "learning_rate" in latest else "—"),
            *speed,
            ("train loss", f"{latest['loss']:.4f}" if "loss" in latest else "—"),
            ("eval loss", f"{latest['eval_loss']:.4f}" if "eval_loss" in latest else "—"),
            ("attempt", f"{job.attempt} of {job.max_attempts}"),
            ("ETA", _fmt_secs(eta) if job.state == JobState.running else "—"),
            ("peak memory", memory)]


def status_html(job: Job, latest: dict | None = None, pace: list | None = None) -> str:
    """The job's head, progress bar, stat cards and, once it succeeded, its result; ``latest`` holds each
    metric's newest value. What the cards and the result say follows the job's kind (``VIEWS``)."""
    frac = job.step / job.max_steps if job.max_steps else 0.0
    cards = "".join(f'<div class="stat"><div class="k">{k}</div><div class="v">{v}</div></div>'
                    for k, v in _stats(job, dict(latest or {}), pace))
    err = f'<div class="job-error">{html.escape(job.error)}</div>' if job.error else ""
    result = view(job.kind).result(job) if job.result else ""
    done = f'<div class="job-done">{result}</div>' if result else ""
    what = html.escape(f"{job.kind}: {view(job.kind).what(job)}")
    return f"""<div class="job-status">
  <div class="job-head"><span class="badge {job.state}">{job.state}</span>
    <span class="job-title">Job #{job.id} · {what}</span>
    <span class="job-msg">{html.escape(job.message or '')}</span></div>
  <div class="bar"><div class="fill" style="width:{100 * frac:.1f}%"></div></div>
  <div class="bar-label">step {job.step} / {job.max_steps or '?'} ({100 * frac:.0f}%){_resumed(job)}</div>
  <div class="stats">{cards}</div>{err}{done}{trackers_html(job)}</div>"""


def trackers_html(job: Job) -> str:
    """Where the job's runs are in MLflow / Weights & Biases (the links worker/tracking.py notes in the attempt's
    history, a retry's too), or why a tracker was left out (unreachable, not installed); "" when none is set."""
    notes = next((a["trackers"] for a in reversed(job.history or []) if a.get("trackers")), None)
    if not notes:
        return ""
    names = {"mlflow": "MLflow", "wandb": "W&amp;B"}
    items = []
    for key, note in notes.items():
        name = names.get(key, key)
        if note.get("error"):
            items.append(f"{name}: <b>not tracked</b> — {html.escape(note['error'])}")
            continue
        ident = html.escape(str(note.get("run_id") or note.get("id")))
        run = f'<a href="{html.escape(note["url"])}" target="_blank">run {ident}</a>' if note.get("url") else f"run {ident}"
        where = (f"in <code>{html.escape(note['uri'])}</code>" if note.get("uri") and not note.get("url")
                 else f"offline in <code>{html.escape(note['dir'])}</code> (<code>wandb sync</code> uploads it)"
                 if note.get("dir") else "")
        items.append(f"{name}: {run} {where}".strip())
    return "<ul class='job-trackers'>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _resumed(job: Job) -> str:
    return f" · attempt {job.attempt} resumed from step {job.resume_step}" if job.resume_step else ""
