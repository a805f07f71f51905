"""Fine-tuning methods, the torch side: one module each, registered by the name of its spec in
``studio.methods`` (which holds the params, flags, defaults and costs). ``get(name)`` returns both as one
object, so ``get("lora").apply(...)`` and ``get("lora").mergeable`` read alike.

Importing this package registers every implementation and stays free of torch/peft/transformers.
"""
from studio.methods import (
    TASKS,
    MethodError,
    check_continuation,
    continuation_note,
    convert,
    describe_all,
    parse_params,
    with_context,
)

from .base import REGISTRY, Method, get, implement, names

# One import per method; importing a module runs its implement(...) line (the order is the specs').
from . import full  # noqa: F401  isort: skip
from . import freeze  # noqa: F401  isort: skip
from . import lora  # noqa: F401  isort: skip
from . import qlora  # noqa: F401  isort: skip
from . import adapter  # noqa: F401  isort: skip
from . import prompt_tuning  # noqa: F401  isort: skip
from . import prefix_tuning  # noqa: F401  isort: skip
from . import p_tuning  # noqa: F401  isort: skip
from . import adalora  # noqa: F401  isort: skip
from . import dora  # noqa: F401  isort: skip
from . import ia3  # noqa: F401  isort: skip
from . import oft  # noqa: F401  isort: skip

__all__ = ["Method", "REGISTRY", "TASKS", "implement", "get", "names", "describe_all", "parse_params",
           "with_context", "MethodError", "check_continuation", "continuation_note", "convert"]
