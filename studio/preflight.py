"""The measured pre-flight, studio side: queue a few real steps of the advised configuration on a worker that would
run the job (worker/preflight.py), and word what it measured. "Measure" in the Advisor tab and ``studio advise
--measure`` both come here; the job goes through the queue like any other (routing, cancel, the Jobs tab).
"""
from __future__ import annotations

from models_db import Job, JobState, session_scope
from studio.jobspec import SpecError, build_train_spec

DEFAULT_STEPS = 3
MAX_STEPS = 50


def submit(advice: dict, model_id, dataset_id, *, steps: int = DEFAULT_STEPS, budget_gb: float | None = None,
           cost_per_hour: float | None = None) -> Job:
    """Queue a pre-flight of ``advice`` (``Advice.to_json()``: its method and hyperparameters) on the model and data
    set; SpecError (nothing queued) when there is no method, no model or data set, or a bad setting."""
    from studio.operations import submit_train

    if not advice.get("method"):
        raise SpecError("nothing fits this hardware, so there is no configuration to measure: see what would make "
                        "it fit, or give another GPU size")
    if model_id in (None, "") or dataset_id in (None, ""):
        raise SpecError("measuring trains a few real steps on the real data: pick an imported model and a registered "
                        "data set (CLI: --model and --dataset)")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise SpecError(f"pre-flight steps: {steps}; give 1 to {MAX_STEPS} optimizer steps")
    if budget_gb is not None and budget_gb <= 0:
        raise SpecError("the memory budget must be a positive size in GB (leave it out for the worker's device)")
    if cost_per_hour is not None and cost_per_hour < 0:
        raise SpecError("the cost per device-hour cannot be negative")
    from models_db import queries as q

    with session_scope() as db:
        model = q.model_by_ref(db, model_id)
        if model is None:
            raise SpecError(f"model {model_id} does not exist (studio models list)")
        model_id = model.id
    aim = advice.get("objective") or {}  # the objective the advice chose, where it chooses one
    aim = aim if isinstance(aim, dict) else {"name": aim}
    spec = build_train_spec(model_id=model_id, dataset_id=int(dataset_id), method=advice["method"],
                            settings={**(advice.get("hyperparameters") or {}), **(aim.get("params") or {})},
                            objective=aim.get("name"), parent_version_id=aim.get("from_version"))
    job, _ = submit_train(spec, preflight={"steps": int(steps), "budget_gb": budget_gb, "cost_per_hour": cost_per_hour})
    return job


def status(job_id: int) -> dict:
    """The pre-flight job as the UI and the CLI show it: state, step of steps, message, and ``measured`` when done."""
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is None or job.kind != "preflight":
            raise SpecError(f"job {job_id} is not a pre-flight (studio jobs list)")
        return status_of(job)


def status_of(job: Job) -> dict:
    """:func:`status` of a loaded pre-flight job (no database access: the Jobs tab calls it inside its session)."""
    return {"job_id": job.id, "state": job.state, "step": job.step, "max_steps": job.max_steps,
            "message": job.message or "", "error": job.error, "finished": job.state in JobState.finished(),
            "measured": (job.result or {}).get("measured"), "attempts": (job.result or {}).get("attempts", [])}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(st: dict) -> str:
    """A few lines of Markdown: the measured peak against the estimate and the budget, speed, ETA, any shrink."""
    if not st["finished"]:
        return f"Measuring (job #{st['job_id']}): step {st['step']} of {st['max_steps'] or '?'} · {st['message']}"
    if st["state"] != JobState.succeeded.value:
        return f"The pre-flight (job #{st['job_id']}) {st['state']}: {st['error'] or st['message']}"
    m = st["measured"]
    what = "GPU tensors" if m["peak_memory_kind"] == "cuda_allocated" else "process RSS"
    lines = [f"**Measured** (job #{st['job_id']}, {m['steps_measured']} steps on the {m['device'].upper()}): peak "
             f"**{m['peak_memory_gb']:.2f} GB** ({what}) · estimate {m['estimate_gb']:.2f} GB ({m['error_pct']:+.0f} %) "
             f"· budget {m['budget_gb']:.1f} GB: {'fits' if m['fits'] else 'does NOT fit'}",
             f"{m['tokens_per_second'] or 0:,.0f} tokens/s · {m['step_seconds'] or 0:.2f} s per optimizer step · "
             f"whole run ({m['run_steps']} steps) ≈ **{_duration(m['eta_seconds'])}**"
             + (f" · cost ≈ {m['cost']:.2f}" if m.get("cost") is not None else "")]
    if len(st["attempts"]) > 1:
        s = m["settings"]
        lines.append(f"The advised settings measured {st['attempts'][0]['peak_memory_gb']:.2f} GB, over the budget; "
                     f"these fit: micro-batch {s['micro_batch']} × {s['gradient_accumulation_steps']} accumulation, "
                     f"gradient checkpointing {'on' if s['grad_ckpt'] else 'off'}.")
    return "\n\n".join(lines)


def fitted_settings(st: dict) -> dict:
    """The training settings the pre-flight measured last (those that fit, after a shrink), for the Train form."""
    s = (st.get("measured") or {}).get("settings") or {}
    return {"per_device_train_batch_size": s["micro_batch"], "gradient_accumulation_steps":
            s["gradient_accumulation_steps"], "gradient_checkpointing": s["grad_ckpt"]} if s else {}


__all__ = ["submit", "status", "describe", "fitted_settings", "DEFAULT_STEPS"]
