"""Find the parts of a transformers model that methods need: the layer stack, head, linear layers.

Works by inspecting modules rather than per-architecture tables, so a Llama, a BERT or a GPT-2
all resolve. Functions take model objects; torch is imported lazily.
"""
from __future__ import annotations

from studio.methods import MethodError

ATTENTION_WORDS = ("attn", "attention")


def layer_stack(model):
    """(dotted name, ModuleList) of the repeated transformer blocks: the longest homogeneous ModuleList."""
    import torch.nn as nn

    best = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise MethodError(f"cannot find the transformer layers in {type(model).__name__}.")
    return best


def head_names(model) -> list[str]:
    """Names of the task head modules: direct children with weights other than the backbone.

    LlamaForCausalLM -> ["lm_head"], BertForSequenceClassification -> ["classifier"],
    LlamaForSequenceClassification -> ["score"].
    """
    backbone = getattr(model, "base_model", None)
    heads = []
    for name, child in model.named_children():
        if child is backbone or child is model:
            continue
        if any(True for _ in child.parameters()):
            heads.append(name)
    return heads


def is_linear(module) -> bool:
    """nn.Linear (incl. bitsandbytes Linear4bit/8bitLt, which subclass it) or GPT-2's Conv1D."""
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D"


def linear_names_in_layers(model) -> list[str]:
    """Full dotted names of the linear layers inside the layer stack (heads excluded)."""
    stack_name, _ = layer_stack(model)
    prefix = stack_name + "."
    return [n for n, m in model.named_modules() if n.startswith(prefix) and is_linear(m)]


def in_layer_path(full_name: str, stack_name: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'self_attn.q_proj' (drop the stack and layer index)."""
    rest = full_name[len(stack_name) + 1:]
    return rest.split(".", 1)[1] if "." in rest else ""


def is_attention(path: str) -> bool:
    """An in-layer path belongs to attention when a component says so (self_attn, attention, attn)."""
    return any(word in part.lower() for part in path.split(".") for word in ATTENTION_WORDS)


def shortest_suffixes(chosen: list[str], every: list[str]) -> list[str]:
    """Shortest dotted suffixes that match all of ``chosen`` and nothing else in ``every``.

    BERT names both attention.output.dense and output.dense "dense"; selecting only the attention
    one needs the longer suffix. peft matches a target when the module name ends with ".suffix".
    """
    chosen_set = set(chosen)

    def matches(name, suffix):
        return name == suffix or name.endswith("." + suffix)

    result = []
    for name in chosen:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if all(n in chosen_set for n in every if matches(n, suffix)):
                if suffix not in result:
                    result.append(suffix)
                break
    return result


def all_module_names(model) -> list[str]:
    """Every named module, for validating user-given module names."""
    return [n for n, _ in model.named_modules() if n]


def matches_any(names: list[str], wanted: str) -> bool:
    """Does ``wanted`` name (as a suffix, peft-style) at least one module?"""
    return any(n == wanted or n.endswith("." + wanted) for n in names)
