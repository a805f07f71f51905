"""Fine-tuning methods as the studio sees them without torch: one spec per method, found through a registry
(peft-style, no if-chains). A spec holds the method's params (the Train form is generated from them), the
facts other code reads instead of testing names (mergeable, packable, trains_base...), its default training
values and advisor params, and its cost terms for the estimator. The torch side of each method (apply, save,
load, merge) is ``worker.methods``, registered under the same name. Adding a method: docs/adding-a-method.md.

Stdlib only: importing this package registers every spec and pulls in no torch, peft or transformers.
"""
from studio.methods.params import convert, describe, describe_all, parse_params, with_context
from studio.methods.spec import (
    REGISTRY,
    TASKS,
    AdvisorChoices,
    Costs,
    MethodError,
    MethodSpec,
    check_continuation,
    check_task,
    continuation_note,
    get,
    names,
    register,
)

# One import per method; importing a module runs its register(...) line. This order is the UI order.
from studio.methods import full  # noqa: F401  isort: skip
from studio.methods import freeze  # noqa: F401  isort: skip
from studio.methods import lora  # noqa: F401  isort: skip
from studio.methods import qlora  # noqa: F401  isort: skip
from studio.methods import adapter  # noqa: F401  isort: skip
from studio.methods import prompt_tuning  # noqa: F401  isort: skip
from studio.methods import prefix_tuning  # noqa: F401  isort: skip
from studio.methods import p_tuning  # noqa: F401  isort: skip
from studio.methods import adalora  # noqa: F401  isort: skip
from studio.methods import dora  # noqa: F401  isort: skip
from studio.methods import ia3  # noqa: F401  isort: skip
from studio.methods import oft  # noqa: F401  isort: skip

__all__ = ["MethodSpec", "Costs", "AdvisorChoices", "REGISTRY", "TASKS", "register", "get", "names", "describe",
           "describe_all", "parse_params", "with_context", "MethodError", "check_continuation", "check_task",
           "continuation_note", "convert"]
