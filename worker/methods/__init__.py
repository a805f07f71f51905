"""Fine-tuning methods, one module each, found through a registry (peft-style, no if-chains).

Importing this package registers every method and stays free of torch/peft/transformers, so the
UI process can build its forms from ``describe_all()``.
"""
from .base import (
    REGISTRY, TASKS, Method, MethodError, describe_all, get, names, parse_params, register, with_context,
)

# One import per method module; importing runs its register(...) line. Order = UI order.
from . import full, freeze, lora, qlora, adapter, prompt_tuning, prefix_tuning, p_tuning, adalora, dora, ia3  # noqa: E402,F401,I001

__all__ = ["Method", "REGISTRY", "TASKS", "register", "get", "names", "describe_all", "parse_params",
           "with_context", "MethodError"]
