"""Predicates that answer the tree's questions, and the walk that records the path taken.

Each predicate takes the :class:`Context` and returns ``(answer, detail)``: the branch to follow and
the numbers that decided it, in words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.advisor.plan import Hardware, Plan
from studio.advisor.tree import TREE, Leaf, Node, Tree

CROSS_TASK = ("multi_task", "cross_task")


@dataclass
class Context:
    """Everything the predicates look at: the person's answers, the hardware and the memory plans."""

    task: str
    complexity: float
    quality: str
    deploy: str
    latency_ok: bool
    examples: int | None
    hw: Hardware
    plans: dict[str, Plan] = field(default_factory=dict)


@dataclass
class Step:
    """One question answered on the way to a leaf."""

    node: str
    question: str
    answer: str
    detail: str
    rule: str
    source: str
    next: str | None
    proposes: str | None = None

    def to_json(self) -> dict:
        return {"node": self.node, "question": self.question, "answer": self.answer, "detail": self.detail,
                "rule": self.rule, "source": self.source, "next": self.next}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _gb(x: float | None) -> str:
    return "unknown" if x is None else f"{x:g} GB"


def has_gpu(c: Context):
    if c.hw.cpu_only:
        return "no", f"CPU only ({c.hw.describe()})"
    return "yes", c.hw.describe()


def cpu_prompt_task(c: Context):
    """003's CPU row is about zero-shot / creative writing (open generation), not every task on a CPU: an
    instruction or classification task with room for LoRA in RAM gets LoRA."""
    data = "example count unknown" if c.examples is None else f"{c.examples:,} examples"
    return _yes(c.task == "generation"), f"task {c.task}, {data}"


def full_000(c: Context):
    ok = c.complexity > 0.8 and (c.hw.largest or 0) > 32 and c.quality == "high"
    return _yes(ok), f"complexity {c.complexity:g}, largest GPU {_gb(c.hw.largest)}, quality {c.quality}"


def full_003(c: Context):
    big = [g for g in c.hw.gpus if g > 32]
    ok = c.task == "domain" and len(big) >= 2 and c.quality in ("medium", "high")
    return _yes(ok), f"task {c.task}, {len(big)} GPU(s) with > 32 GB, quality {c.quality}"


def data_002(c: Context):
    if c.examples is None:
        return "yes", "example count unknown: not ruled out"
    return _yes(c.examples >= 1000), f"{c.examples:,} examples"


def edge(c: Context):
    return _yes(c.deploy == "edge"), f"deploy to {c.deploy}"


def phone(c: Context):
    return _yes((c.hw.largest or 0) < 8), f"largest GPU {_gb(c.hw.largest)}"


def simple_classification(c: Context):
    ok = c.task == "classification" and c.complexity < 0.6
    return _yes(ok), f"task {c.task}, complexity {c.complexity:g}"


def cross_task_t4(c: Context):
    ok = c.task in CROSS_TASK and c.latency_ok and (c.hw.largest or 0) <= 16
    latency = "acceptable" if c.latency_ok else "not acceptable"
    return _yes(ok), f"task {c.task}, largest GPU {_gb(c.hw.largest)}, extra latency {latency}"


def multi_task(c: Context):
    return _yes(c.task in CROSS_TASK), f"task {c.task}"


def small_memory(c: Context):
    return _yes((c.hw.largest or 0) < 16), f"largest GPU {_gb(c.hw.largest)}"


def low_complexity(c: Context):
    return _yes(c.complexity < 0.6), f"complexity {c.complexity:g}"


def fits(c: Context, method: str):
    plan = c.plans[method]
    if plan.fits:
        how = "; ".join(plan.make_it_fit) or "as is"
        return "yes", f"{method} needs {plan.estimate.total_gb:.1f} GB ({how}); fits {', '.join(plan.fits_on)}"
    return "no", f"{method} needs {plan.estimate.total_gb:.1f} GB at its leanest; {plan.make_it_fit[0]}"


PREDICATES = {f.__name__: f for f in (has_gpu, cpu_prompt_task, full_000, full_003, data_002, edge, phone, simple_classification,
                                       cross_task_t4, multi_task, small_memory, low_complexity)}


def answer(node: Node, ctx: Context) -> tuple[str, str]:
    """Run ``node``'s predicate."""
    if node.checks:
        return fits(ctx, node.checks)
    return PREDICATES[node.test](ctx)


def walk(ctx: Context, tree: Tree = TREE) -> tuple[Leaf, list[Step], list[dict]]:
    """Follow the tree from its root; returns the leaf, the steps, and the rules overridden on the way."""
    steps: list[Step] = []
    overrides: list[dict] = []
    item = tree[tree.root]
    while isinstance(item, Node):
        ans, detail = answer(item, ctx)
        branch = next(b for b in item.branches if b.answer == ans)
        steps.append(Step(item.id, item.question, ans, detail, item.rule, item.source, branch.to, branch.proposes))
        if item.checks and ans == "no":
            proposer = next((s for s in reversed(steps) if s.proposes == item.checks), None)
            if proposer is not None:
                overrides.append(_override(proposer, item, ctx))
        item = tree[branch.to]
    return item, steps, overrides


def _override(led_here: Step, node: Node, ctx: Context) -> dict:
    """The rule that pointed at ``node.checks`` is overridden by the memory arithmetic."""
    plan = ctx.plans[node.checks]
    return {
        "rule": led_here.rule,
        "source": led_here.source,
        "method": node.checks,
        "why": (f"{node.checks} needs {plan.estimate.total_gb:.1f} GB even at its leanest settings and "
                f"the largest {'GPU' if ctx.hw.gpus else 'RAM'} has {_gb(ctx.hw.largest)} "
                f"({plan.over_gb:.1f} GB short); the studio follows the arithmetic"),
    }
