"""Fine-tuning methods, one module each, found through a registry (peft-style, no if-chains).

Importing this package registers every method and stays free of torch/peft/transformers, so the
UI process can build its forms from ``describe_all()``.
"""
from .base import (
    REGISTRY,
    TASKS,
    Method,
    MethodError,
    check_continuation,
    continuation_note,
    convert,
    describe_all,
    get,
    names,
    parse_params,
    register,
    with_context,
)

# One import per method; importing a module runs its register(...) line. This order is the UI order.
from . import full  # noqa: E402,F401  isort: skip
from . import freeze  # noqa: E402,F401  isort: skip
from . import lora  # noqa: E402,F401  isort: skip
from . import qlora  # noqa: E402,F401  isort: skip
from . import adapter  # noqa: E402,F401  isort: skip
from . import prompt_tuning  # noqa: E402,F401  isort: skip
from . import prefix_tuning  # noqa: E402,F401  isort: skip
from . import p_tuning  # noqa: E402,F401  isort: skip
from . import adalora  # noqa: E402,F401  isort: skip
from . import dora  # noqa: E402,F401  isort: skip
from . import ia3  # noqa: E402,F401  isort: skip

__all__ = ["Method", "REGISTRY", "TASKS", "register", "get", "names", "describe_all", "parse_params",
           "with_context", "MethodError", "check_continuation", "continuation_note",
           "convert"]
