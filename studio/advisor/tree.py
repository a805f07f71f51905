"""The method-selection decision tree, as data.

Article 003 promises a "selection decision tree" whose figure is lost; this reconstructs it from the
rules the articles state (see ``SEEDS.md``).  Each :class:`Node` asks one question, names the rule
and the article (000–004, or "studio" for the memory arithmetic) it comes from, and names the
predicate in :mod:`studio.advisor.rules` that answers it.  :class:`Leaf` nodes are recommendations.
Nodes whose ``checks`` names a method are arithmetic guards: their "no" overrides the rule that led
there, and the advice says so.

Order matters where articles collide: 003's matrix rows (freeze for simple classification, adapters
for cross-task work on T4-class cards) are asked before 000 §6.1.2's broad "LoRA when memory < 16 GB
or complexity < 0.6", which would otherwise swallow them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Branch:
    """An answer and the node it leads to."""

    answer: str
    to: str
    proposes: str | None = None  # the method this branch's rule recommends (to report overrides)


@dataclass(frozen=True)
class Node:
    """A question in the tree."""

    id: str
    question: str
    label: str  # short text for the picture
    rule: str
    source: str
    test: str  # predicate name in studio.advisor.rules.PREDICATES
    branches: tuple[Branch, ...]
    checks: str | None = None  # the method whose memory estimate this node checks


@dataclass(frozen=True)
class Leaf:
    """A recommendation (``method`` None: nothing fits)."""

    id: str
    method: str | None
    label: str
    rule: str
    source: str
    runner_ups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tree:
    """Nodes and leaves by id, walked from ``root``."""

    root: str
    items: tuple[Node | Leaf, ...]

    def __getitem__(self, node_id: str) -> Node | Leaf:
        for item in self.items:
            if item.id == node_id:
                return item
        raise KeyError(node_id)

    @property
    def nodes(self) -> list[Node]:
        return [i for i in self.items if isinstance(i, Node)]

    @property
    def leaves(self) -> list[Leaf]:
        return [i for i in self.items if isinstance(i, Leaf)]


def yes_no(yes: str, no: str, *, yes_means: str | None = None, no_means: str | None = None):
    """The usual two branches; ``*_means`` names the method that answer's rule recommends."""
    return (Branch("yes", yes, yes_means), Branch("no", no, no_means))


TREE = Tree(root="gpu", items=(
    Node("gpu", "Is there a GPU to train on?", "GPU available?",
         "studio: without a GPU the job trains on the CPU, in the machine's RAM", "studio",
         "has_gpu", yes_no("full_000", "cpu_003")),
    Node("cpu_003", "On the CPU: a zero-shot or creative-writing task (open generation)?",
         "CPU: zero-shot / creative writing?",
         "003 matrix row 6: Prompt tuning · CPU · zero-shot, creative writing; an instruction task with room "
         "for LoRA gets LoRA (001)", "003",
         "cpu_prompt_task", yes_no("fits_prompt", "fits_lora_cpu", yes_means="prompt_tuning")),
    Node("fits_lora_cpu", "Does LoRA fit in the machine's RAM?", "LoRA fits in RAM?",
         "001: LoRA for instruction following; never recommend a method its own estimate says will run out "
         "of memory", "001", "fits", yes_no("leaf_lora", "fits_prompt"), checks="lora"),
    Node("fits_prompt", "Does prompt tuning fit in the machine's RAM?", "prompt tuning fits in RAM?",
         "never recommend a method its own estimate says will run out of memory", "studio",
         "fits", yes_no("leaf_prompt_tuning", "leaf_none"), checks="prompt_tuning"),
    Node("full_000", "Task complexity > 0.8, a GPU with > 32 GB and a high quality requirement?",
         "complexity > 0.8, GPU > 32 GB, quality high?",
         "000 §6.1.1: full fine-tuning when complexity > 0.8 and GPU memory > 32 GB and performance need is high",
         "000", "full_000", yes_no("data_002", "full_003", yes_means="full")),
    Node("full_003", "A specialised domain on an A100-class cluster (2+ GPUs with > 32 GB each)?",
         "specialised domain on an A100-class cluster?",
         "003 matrix row 1: Full fine-tuning · A100 cluster · specialised domain (medical diagnosis)",
         "003", "full_003", yes_no("data_002", "edge_000", yes_means="full")),
    Node("data_002", "Is the data set large enough for full fine-tuning (1,000+ examples, or unknown)?",
         "data set large enough?",
         "002: full fine-tuning needs a large, high-quality domain data set; PEFT when the data set is small",
         "002", "data_002", yes_no("fits_full", "edge_000")),
    Node("fits_full", "Does full fine-tuning fit in GPU memory?", "full fits?",
         "never recommend a method its own estimate says will run out of memory", "studio",
         "fits", yes_no("leaf_full", "edge_000"), checks="full"),
    Node("edge_000", "Must the model run on edge or mobile devices?", "edge / mobile deployment?",
         "000 §6.1.2: LoRA when mobile deployment is required", "000",
         "edge", yes_no("phone_003", "freeze_003", yes_means="lora")),
    Node("phone_003", "Is the training hardware phone-level (largest GPU < 8 GB)?", "phone-level hardware?",
         "003 matrix row 4: QLoRA · phone-level hardware · light deployment (edge OCR)", "003",
         "phone", yes_no("fits_qlora", "fits_lora", yes_means="qlora")),
    Node("freeze_003", "A simple classification task (complexity < 0.6)?", "simple classification?",
         "003 matrix row 2: Freeze-tuning · RTX 3090 · simple classification (news sentiment)", "003",
         "simple_classification", yes_no("fits_freeze", "adapter_003", yes_means="freeze")),
    Node("fits_freeze", "Does freeze-tuning fit in GPU memory?", "freeze fits?",
         "never recommend a method its own estimate says will run out of memory", "studio",
         "fits", yes_no("leaf_freeze", "fits_lora"), checks="freeze"),
    Node("adapter_003", "Several tasks on one base, a T4-class GPU (≤ 16 GB), and extra inference latency acceptable?",
         "cross-task on a T4-class GPU, latency OK?",
         "003 matrix row 5: Adapter · T4 · cross-task (legal documents); adapters add inference latency (004)",
         "003", "cross_task_t4", yes_no("fits_adapter", "multi_003", yes_means="adapter")),
    Node("fits_adapter", "Do bottleneck adapters fit in GPU memory?", "adapter fits?",
         "never recommend a method its own estimate says will run out of memory", "studio",
         "fits", yes_no("leaf_adapter", "fits_lora"), checks="adapter"),
    Node("multi_003", "Several tasks sharing one base?", "several tasks?",
         "003 matrix row 3: LoRA · RTX 4090 · multi-task (multilingual support bot); 002: PEFT when "
         "parameters are shared across tasks", "003", "multi_task", yes_no("fits_lora", "mem_000", yes_means="lora")),
    Node("mem_000", "Is the largest GPU smaller than 16 GB?", "GPU < 16 GB?",
         "000 §6.1.2: LoRA when the memory limit is below 16 GB", "000",
         "small_memory", yes_no("fits_lora", "simple_000", yes_means="lora")),
    Node("simple_000", "Is the task complexity below 0.6?", "complexity < 0.6?",
         "000 §6.1.2: LoRA when task complexity < 0.6; otherwise 002: PEFT unless full fine-tuning's "
         "conditions hold", "000", "low_complexity", yes_no("fits_lora", "fits_lora", yes_means="lora", no_means="lora")),
    Node("fits_lora", "Does LoRA on a 16-bit base fit in GPU memory?", "LoRA 16-bit fits?",
         "001: LoRA hardware; never recommend a method its own estimate says will run out of memory",
         "001", "fits", yes_no("leaf_lora", "fits_qlora"), checks="lora"),
    Node("fits_qlora", "Does QLoRA (4-bit NF4 base) fit in GPU memory?", "QLoRA 4-bit fits?",
         "003 closing advice: constrained resources → QLoRA; 004: QLoRA fits 65B on one 48 GB GPU",
         "004", "fits", yes_no("leaf_qlora", "leaf_none"), checks="qlora"),
    Leaf("leaf_full", "full", "Full fine-tuning",
         "000 §6.1.1 / 003 row 1: every weight trains; best accuracy (000: GLUE 89.2)", "000",
         ("lora", "freeze", "qlora")),
    Leaf("leaf_freeze", "freeze", "Freeze-tuning",
         "003 row 2: train the top layers and the head (5–20 % of parameters)", "003", ("lora", "adapter", "qlora")),
    Leaf("leaf_adapter", "adapter", "Adapter",
         "003 row 5: bottleneck adapters per task on one frozen base; not mergeable", "003", ("lora", "ia3", "qlora")),
    Leaf("leaf_lora", "lora", "LoRA",
         "001/003: low-rank updates on a frozen 16-bit base; mergeable", "001", ("adalora", "dora", "qlora")),
    Leaf("leaf_qlora", "qlora", "QLoRA",
         "003 row 4 / 004: LoRA on a 4-bit NF4 base with a paged optimizer", "004", ("prompt_tuning", "ia3")),
    Leaf("leaf_prompt_tuning", "prompt_tuning", "Prompt tuning",
         "003 row 6: soft prompts (50 tokens), trains on a CPU", "003", ("p_tuning", "lora", "ia3")),
    Leaf("leaf_none", None, "Nothing fits",
         "no method fits the hardware: see what would make one fit", "studio", ()),
))
