"""The method advisor: the articles' decision tree plus a memory estimator (no torch; config.json only).

    from studio.advisor import AdvisorInputs, advise, estimate_memory, param_breakdown, TREE, render_mermaid
"""
from studio.advisor.advise import Advice, AdvisorInputs, advise
from studio.advisor.architecture import param_breakdown
from studio.advisor.memory import MemoryEstimate, estimate_memory
from studio.advisor.mermaid import render_mermaid
from studio.advisor.tree import TREE

__all__ = ["AdvisorInputs", "Advice", "advise", "estimate_memory", "MemoryEstimate", "param_breakdown", "TREE",
           "render_mermaid"]
