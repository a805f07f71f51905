"""The advisor: the person's answers + model config + data stats + GPUs → a method, with reasons.

1. Work out the training sequence length, effective batch and LoRA rank from the inputs.
2. Plan every registered method against the hardware (:mod:`studio.advisor.plan`).
3. Walk the decision tree (:mod:`studio.advisor.tree`, answered by :mod:`studio.advisor.rules`).
4. Suggest hyperparameters for the method reached, at its planned settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio import methods, objectives
from studio.advisor import hyperparams as hp
from studio.advisor import objective as objective_tree
from studio.advisor.memory import resolve_shape
from studio.advisor.plan import Hardware, Plan, plan_method
from studio.advisor.rules import Context, Step, walk
from studio.advisor.tree import TREE

TASKS = ("classification", "instruction", "domain", "style", "generation", "multi_task", "cross_task")
QUALITIES = ("low", "medium", "high")
DEPLOYS = ("server", "edge")
_DEPLOY_ALIASES = {"mobile": "edge", "edge/mobile": "edge", "cloud": "server"}


@dataclass
class AdvisorInputs:
    """What the advisor knows: the model (``config`` dict or ``params_b``), the data, the hardware and
    the person's answers.  ``gpu_memory_gb`` has one entry per GPU (GiB); leave it empty and set
    ``cpu_only`` for a CPU machine.  ``batch_size`` is the effective batch (examples per optimizer step)."""

    config: dict | None = None
    params_b: float | None = None
    examples: int | None = None
    seq_len_p95: int | None = None
    seq_len: int | None = None
    gpu_memory_gb: list[float] = field(default_factory=list)
    cpu_only: bool = False
    ram_gb: float | None = None
    task: str = "instruction"
    complexity: float = 0.5
    quality: str = "medium"
    deploy: str = "server"
    latency_ok: bool = True
    batch_size: int | None = None
    data_format: str | None = None  # the data set's format: it decides the objective (studio.advisor.objective)
    sft_version: int | None = None  # the newest SFT version of the base: a preference objective starts from it
    reward_model: int | None = None  # the newest reward-model version of the base: a reward for GRPO


@dataclass
class Advice:
    """The recommendation, the path that led to it, every method's memory plan and the settings to use."""

    method: str | None
    runner_up: str | None
    path: list[Step]
    estimates: dict[str, Plan]
    hyperparameters: dict
    overrides: list[dict]
    nothing_fits: str | None
    reasons: list[str]
    model: dict = field(default_factory=dict)
    objective: dict = field(default_factory=dict)  # name, params, from_version, note (ObjectiveChoice.to_json)

    def to_json(self) -> dict:
        """A JSON-ready dict (the shape ``studio advise --json`` prints)."""
        return {
            "method": self.method,
            "runner_up": self.runner_up,
            "path": [s.to_json() for s in self.path],
            "estimates": {m: p.to_json() for m, p in self.estimates.items()},
            "hyperparameters": self.hyperparameters,
            "overrides": self.overrides,
            "nothing_fits": self.nothing_fits,
            "reasons": self.reasons,
            "model": self.model,
            "objective": self.objective,
        }


def _validate(inputs: AdvisorInputs) -> tuple[str, str]:
    if inputs.config is None and not inputs.params_b:
        raise ValueError("give the model's config (config.json) or its size in billions (params_b)")
    if inputs.task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} (got {inputs.task!r})")
    if inputs.quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)} (got {inputs.quality!r})")
    deploy = _DEPLOY_ALIASES.get(inputs.deploy, inputs.deploy)
    if deploy not in DEPLOYS:
        raise ValueError(f"deploy must be one of {', '.join(DEPLOYS)} (got {inputs.deploy!r})")
    if not 0.0 <= float(inputs.complexity) <= 1.0:
        raise ValueError(f"complexity must be between 0 and 1 (got {inputs.complexity})")
    if any(g <= 0 for g in inputs.gpu_memory_gb):
        raise ValueError("every GPU memory size must be positive")
    return inputs.task, deploy


def hardware(inputs: AdvisorInputs) -> Hardware:
    """GPUs as given; no GPUs (or ``cpu_only``) means the CPU with ``ram_gb``."""
    if inputs.cpu_only or not inputs.gpu_memory_gb:
        return Hardware((), inputs.ram_gb)
    return Hardware(tuple(float(g) for g in inputs.gpu_memory_gb), inputs.ram_gb)


def advise(inputs: AdvisorInputs) -> Advice:
    """Recommend a fine-tuning method (see the module docstring for the steps)."""
    task, deploy = _validate(inputs)
    shape = resolve_shape(inputs.config if inputs.config is not None else inputs.params_b)
    hw = hardware(inputs)
    seq, seq_why = hp.seq_length(inputs.seq_len, inputs.seq_len_p95, shape.max_positions)
    batch = hp.target_batch(inputs.batch_size, inputs.examples)
    r, r_why = hp.lora_rank(task, inputs.complexity, inputs.quality)
    target = hp.lora_targets(r)
    precision = "fp32" if hw.cpu_only else "bf16"
    plans = {m: _plan(shape, m, hw, seq, batch, precision, r, target, task) for m in methods.names()}

    ctx = Context(task, float(inputs.complexity), inputs.quality, deploy, bool(inputs.latency_ok),
                  inputs.examples, hw, plans)
    aim = objective_tree.choose(inputs.data_format, task=task, sft_version=inputs.sft_version,
                                reward_model=inputs.reward_model)
    leaf, steps, overrides = walk(ctx)
    method = leaf.method
    steps.append(Step(leaf.id, "Recommended method", method or "none", leaf.label, leaf.rule, leaf.source, None))
    method, swap = _method_for(aim.name, method, [*leaf.runner_ups, *plans], plans)
    if swap:
        steps.insert(-1, swap)
        steps[-1] = Step(steps[-1].node, "Recommended method", method, steps[-1].detail, steps[-1].rule,
                         steps[-1].source, None)
    steps = [*aim.steps, *steps]
    runner_up = _runner_up([m for m in leaf.runner_ups if _trains(aim.name, m)], method, plans)
    nothing = None if method else _nothing_fits(steps, plans, hw)
    settings = plans[method].settings if method else {}
    hyper = hp.suggest(method, settings, examples=inputs.examples, r=r, target=target, cpu=hw.cpu_only,
                       layers=shape.layers)
    if method and "learning_rate" in hyper and aim.name in objectives.names():
        # a preference loss on top of a trained policy wants a smaller step than SFT (the objective's spec)
        scale = objectives.get(aim.name).learning_rate_scale
        hyper["learning_rate"] = float(f"{hyper['learning_rate'] * scale:.3g}")
    ranked = method is not None and methods.get(method).low_rank
    reasons = _reasons(steps, overrides, method, plans, seq, seq_why, r_why if ranked else None, nothing)
    if aim.note:
        reasons.append(aim.note)
    model = {"family": shape.family, "params": shape.total(), "params_b": round(shape.total() / 1e9, 3),
             "layers": shape.layers, "hidden": shape.hidden, "vocab": shape.vocab, "synthetic": shape.synthetic,
             "seq_len": seq, "effective_batch": batch, "hardware": hw.describe()}
    return Advice(method, runner_up, steps, plans, hyper, overrides, nothing, reasons, model, aim.to_json())


def _trains(objective: str | None, method: str) -> bool:
    """Whether ``objective`` can train with ``method`` (its registry's check; an objective this studio does not
    run yet refuses nothing here, its submit says why)."""
    if objective not in objectives.names():
        return True
    try:
        objectives.check_method(objectives.get(objective), methods.get(method))
    except objectives.ObjectiveError:
        return False
    return True


def _method_for(objective: str | None, method: str | None, candidates, plans) -> tuple[str | None, Step | None]:
    """The tree's method, or, when the objective cannot train with it (DPO with a single-adapter method...), the
    first of the leaf's alternatives (then any method) that trains it and fits, with the step that says why."""
    if method is None or _trains(objective, method):
        return method, None
    for m in dict.fromkeys(candidates):
        if plans[m].fits and _trains(objective, m):
            why = ""
            try:
                objectives.check_method(objectives.get(objective), methods.get(method))
            except objectives.ObjectiveError as e:
                why = str(e).split(":")[0]
            return m, Step("objective_method", f"Can {objective} train with {method}?", "no",
                           f"{why}; {m} is the next that fits and can", "the objective's registry refuses the pair",
                           "studio", None)
    return None, Step("objective_method", f"Can {objective} train with {method}?", "no",
                      "no method that fits this hardware can train it", "the objective's registry refuses the pair",
                      "studio", None)


def _plan(shape, method, hw, seq, batch, precision, r, target, task) -> Plan:
    kwargs = {"lora_r": r, "target": target} if methods.get(method).low_rank else {}
    kwargs["lm_logits"] = task != "classification"
    return plan_method(shape, method, hw, seq_len=seq, target_batch=batch, precision=precision, **kwargs)


def _runner_up(candidates, method, plans) -> str | None:
    """The leaf's first alternative that fits; else the cheapest other method that fits."""
    for m in candidates:
        if m != method and plans[m].fits:
            return m
    fitting = sorted((p.estimate.total_gb, m) for m, p in plans.items() if p.fits and m != method)
    return fitting[0][1] if fitting else None


def _nothing_fits(steps, plans, hw: Hardware) -> str:
    leanest = min(plans.values(), key=lambda p: p.estimate.total_gb)
    checked = [TREE[s.node].checks for s in steps if s.node in {i.id for i in TREE.items} and getattr(TREE[s.node], "checks", None)]
    last = plans[checked[-1]] if checked else leanest
    where = "the largest GPU" if hw.gpus else "RAM"
    return (f"Nothing fits {hw.describe()}: {last.method}, the leanest method the tree reached, needs "
            f"{last.estimate.total_gb:.1f} GB, {last.over_gb:.1f} GB more than {where} holds. "
            f"The leanest of all is {leanest.method} at {leanest.estimate.total_gb:.1f} GB. "
            f"To make it fit: {'; '.join(last.make_it_fit[1:])}; or add GPUs with more memory.")


def _reasons(steps, overrides, method, plans, seq, seq_why, r_why, nothing) -> list[str]:
    out = [f"{s.question} → {s.answer} ({s.detail}) [{s.source}: {s.rule}]" for s in steps[:-1]]
    for o in overrides:
        out.append(f"Overrode {o['source']} ({o['rule']}): {o['why']}.")
    if method:
        p = plans[method]
        how = "; ".join(p.make_it_fit) or "default settings"
        out.append(f"{method} needs about {p.estimate.total_gb:.1f} GB at sequence length {seq} ({seq_why}), "
                   f"micro-batch {p.settings['micro_batch']} ({how}); fits {', '.join(p.fits_on)}.")
        if r_why:
            out.append(f"LoRA rank: {r_why}; lora_alpha = 2·r.")
    if nothing:
        out.append(nothing)
    return out


__all__ = ["AdvisorInputs", "Advice", "advise", "hardware", "TASKS"]
