"""Advice in words and tables: the CLI's text form and the Advisor tab's panels share these."""
from __future__ import annotations

from studio import methods
from studio.advisor.advise import Advice
from studio.advisor.memory import PARTS

PART_TITLES = {"weights": "weights", "trainable_state": "trainable state", "activations": "activations",
               "logits": "logits/loss", "objective": "objective (reference, pairs, generations)",
               "overhead": "overhead"}
SHORT_TITLES = {"weights": "weights", "trainable_state": "grads+optim", "activations": "activations",
                "logits": "logits/loss", "objective": "objective", "overhead": "overhead"}
PATH_HEADERS = ["#", "question", "answer", "the numbers", "rule", "article"]
MEMORY_HEADERS = ["method", *(f"{PART_TITLES[p]} GB" for p in PARTS), "total GB", "fits", "what makes it fit"]
HYPER_HEADERS = ["setting", "value"]


def _gb(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:.2f}"


def path_rows(advice: Advice) -> list[list]:
    """One row per question answered, the recommendation last."""
    return [[i, s.question, s.answer, s.detail or "", s.rule, s.source] for i, s in enumerate(advice.path, 1)]


def memory_rows(advice: Advice) -> list[list]:
    """One row per method: the estimate split into parts at its planned settings, and where it fits."""
    rows = []
    for method, plan in advice.estimates.items():
        parts = plan.estimate.parts_gb()
        fits = ("yes: " + ", ".join(plan.fits_on)) if plan.fits else f"no: {plan.over_gb:.1f} GB short"
        how = "; ".join(plan.make_it_fit[1:] if not plan.fits else plan.make_it_fit) or "default settings"
        rows.append([method, *(_gb(parts[p]) for p in PARTS), _gb(plan.estimate.total_gb), fits, how])
    return rows


def hyper_rows(advice: Advice) -> list[list]:
    return [[k, str(v)] for k, v in advice.hyperparameters.items()]


def _method_line(advice: Advice, method: str | None, title: str) -> str:
    if not method:
        return f"{title}: none"
    plan = advice.estimates[method]
    merge = "mergeable into the base" if methods.get(method).mergeable else "not mergeable: ships as base + adapter"
    return (f"{title}: {method} — about {plan.estimate.total_gb:.1f} GB, fits {', '.join(plan.fits_on)}; "
            f"{plan.estimate.trainable_params:,} trainable parameters; {merge}")


def objective_words(advice: Advice) -> str:
    """"objective dpo from version #3 (reward=...)" for the headline; empty when the advice has none."""
    aim = advice.objective or {}
    if not aim.get("name"):
        return ""
    start = f" from version #{aim['from_version']}" if aim.get("from_version") else ""
    params = ", ".join(f"{k}={v}" for k, v in (aim.get("params") or {}).items())
    return f"objective {aim['name']}{start}" + (f" ({params})" if params else "")


def cli_command(advice: Advice) -> str:
    """The ``studio train`` options that follow the advice (method, objective, start)."""
    aim = advice.objective or {}
    parts = [f"--method {advice.method}"]
    if aim.get("name"):
        parts.append(f"--objective {aim['name']}")
    if aim.get("from_version"):
        parts.append(f"--from-version {aim['from_version']}")
    parts += [f"--set {k}={v}" for k, v in (aim.get("params") or {}).items()]
    return "studio train " + " ".join(parts)


def summary_markdown(advice: Advice, where: dict | None = None) -> str:
    """The recommendation, the runner-up and every reason, for the Advisor tab."""
    lines = []
    aim = objective_words(advice)
    if advice.method:
        lines.append(f"### Recommended: **{advice.method}**" + (f" · {aim}" if aim else "") +
                     (f" · runner-up: **{advice.runner_up}**" if advice.runner_up else " · no runner-up fits"))
        lines.append(f"- {_method_line(advice, advice.method, 'Recommended')}")
        if advice.runner_up:
            lines.append(f"- {_method_line(advice, advice.runner_up, 'Runner-up')}")
    else:
        lines.append("### Nothing fits")
    lines.append("")
    lines.append("**Why**")
    lines += [f"- {r}" for r in advice.reasons]
    if advice.overrides:
        lines.append("")
        lines.append("**Article rules overridden by the memory arithmetic**")
        lines += [f"- {o['source']} ({o['rule']}): {o['why']}" for o in advice.overrides]
    if where:
        lines.append("")
        lines.append("**What the advice is based on**: " + "; ".join(f"{k}: {v}" for k, v in where.items()))
    return "\n".join(lines)


def advice_text(advice: Advice, where: dict | None = None) -> str:
    """The CLI's readable form: recommendation, path, memory table, settings."""
    out = []
    if advice.method:
        runner = f"   (runner-up: {advice.runner_up})" if advice.runner_up else ""
        aim = objective_words(advice)
        out.append(f"Recommended: {advice.method}{f', {aim}' if aim else ''}{runner}")
    else:
        out.append("Nothing fits.")
    for k, v in (where or {}).items():
        out.append(f"  {k}: {v}")
    out.append("\nHow the tree decided:")
    for i, s in enumerate(advice.path, 1):
        out.append(f"  {i}. {s.question} -> {s.answer}" + (f"  ({s.detail})" if s.detail else ""))
        out.append(f"     rule [{s.source}]: {s.rule}")
    for o in advice.overrides:
        out.append(f"  ! overrode {o['source']} ({o['rule']}): {o['why']}")
    if advice.nothing_fits:
        out.append(f"\n{advice.nothing_fits}")
    out.append("\nEstimated peak memory per GPU (GB):")
    width = max(len(m) for m in advice.estimates)
    heads = "  ".join(f"{SHORT_TITLES[p]:>11}" for p in PARTS)
    out.append(f"  {'method':<{width}}  {heads}        total  fits")
    for row in memory_rows(advice):
        cells = "  ".join(f"{c:>11}" for c in row[1:6])
        out.append(f"  {row[0]:<{width}}  {cells}  {row[6]:>11}  {row[7]}")
    if advice.hyperparameters:
        out.append(f"\nSuggested settings ({cli_command(advice)} --set KEY=VALUE):")
        out += [f"  {k}={v}" for k, v in advice.hyperparameters.items()]
    return "\n".join(out)


__all__ = ["path_rows", "memory_rows", "hyper_rows", "summary_markdown", "advice_text", "PATH_HEADERS",
           "MEMORY_HEADERS", "HYPER_HEADERS"]
