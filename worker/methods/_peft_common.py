"""Shared pieces for the peft-backed methods: task types, target-module presets, list parsing."""
from __future__ import annotations

from . import _arch
from .base import MethodError, check_task, split_list

TARGET_PRESETS = ("attention", "attention_mlp", "all_linear")
# A field naming modules (checked against the model's weights before a job is queued).
TARGETS_META = {"modules": TARGET_PRESETS}
SAVE_META = {"modules": ()}
TARGET_HELP = (
    "Which linear layers get adapters: attention (q/k/v/o projections), attention_mlp (plus the MLP), "
    "all_linear (every linear layer in the blocks), or a comma list of module names such as q_proj,v_proj."
)


def peft_task_type(method: str, task: str):
    """peft TaskType for a studio task."""
    from peft import TaskType

    check_task(method, task)
    return TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS


def parse_int_map(method: str, key: str, text: str) -> dict[str, int]:
    """'q_proj=16,down_proj=4' -> {'q_proj': 16, 'down_proj': 4} (peft rank/alpha patterns)."""
    result = {}
    for item in split_list(text):
        name, sep, value = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = 0
        if not sep or not name.strip() or number < 1:
            raise MethodError(
                f"{method}: {key} must look like 'regex=int,regex=int' with ints >= 1 (got {item!r}). "
                f"Example: --set {key}=q_proj=16,down_proj=4"
            )
        result[name.strip()] = number
    return result


def parse_layers(method: str, text: str, num_layers: int | None) -> list[int] | None:
    """'0,1,5' -> [0, 1, 5]; '' -> None (all layers). Checked against the model's layer count."""
    items = split_list(text)
    if not items:
        return None
    try:
        layers = [int(i) for i in items]
    except ValueError:
        raise MethodError(
            f"{method}: layers_to_transform must be a comma list of layer indices (got {text!r}). "
            "Example: --set layers_to_transform=0,1"
        ) from None
    if num_layers is not None and any(i < 0 or i >= num_layers for i in layers):
        raise MethodError(
            f"{method}: layers_to_transform has an index outside 0..{num_layers - 1} (got {text!r}); "
            f"the model has {num_layers} layers."
        )
    return layers


def config_num_layers(model_config: dict | None) -> int | None:
    """Layer count from a config.json dict, whatever the architecture calls it."""
    if not model_config:
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(model_config.get(key), int):
            return model_config[key]
    return None


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

