"""Shared torch-side pieces of the peft-backed methods: task types, target modules found in the model, the
classification head kept in full, merging. (Presets and list parsing are torch-free: studio/methods/_common.py.)"""
from __future__ import annotations

from studio.methods import MethodError, check_task
from studio.methods._common import TARGET_PRESETS, split_list

from . import _arch


def peft_task_type(method: str, task: str):
    """peft TaskType for a studio task."""
    from peft import TaskType

    check_task(method, task)
    return TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS


def resolve_targets(method: str, model, spec: str) -> list[str]:
    """Map a preset or comma list to peft ``target_modules`` suffixes that exist in ``model``."""
    stack_name, _ = _arch.layer_stack(model)
    linears = _arch.linear_names_in_layers(model)
    spec = (spec or "").strip()
    if spec in TARGET_PRESETS:
        if spec == "attention":
            chosen = [n for n in linears if _arch.is_attention(_arch.in_layer_path(n, stack_name))]
        else:  # attention + MLP is every linear in the blocks; all_linear is the same set by design
            chosen = linears
        if not chosen:
            raise MethodError(f"{method}: preset {spec!r} found no linear layers in {type(model).__name__}.")
        every_linear = [n for n, m in model.named_modules() if _arch.is_linear(m)]
        return _arch.shortest_suffixes(chosen, every_linear)
    wanted = split_list(spec)
    if not wanted:
        raise MethodError(f"{method}: target_modules is empty. Use one of {', '.join(TARGET_PRESETS)} or a list.")
    names = _arch.all_module_names(model)
    missing = [w for w in wanted if not _arch.matches_any(names, w)]
    if missing:
        known = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise MethodError(
            f"{method}: target module(s) {', '.join(missing)} not found in {type(model).__name__}. "
            f"Its linear layers are: {', '.join(known)}. "
            f"Use one of {', '.join(TARGET_PRESETS)} or a comma list of these names."
        )
    return wanted


def modules_to_save(method: str, model, text: str, task: str) -> list[str] | None:
    """User-listed extra fully-trained modules, plus the classification head for seq_cls."""
    wanted = split_list(text)
    names = _arch.all_module_names(model)
    missing = [w for w in wanted if not _arch.matches_any(names, w)]
    if missing:
        raise MethodError(
            f"{method}: modules_to_save names {', '.join(missing)} which are not in {type(model).__name__}. "
            "Use module names from the model, e.g. lm_head or score."
        )
    if task == "seq_cls":  # the new head starts random: it must train (and be saved) in full
        wanted += [h for h in _arch.head_names(model) if h not in wanted]
    return wanted or None


def merge_peft(model):
    """Merge adapter weights into the base and return the plain transformers model."""
    return model.merge_and_unload()

