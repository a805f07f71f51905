"""LoRA: low-rank updates B·A on chosen linear layers, base frozen; mergeable (peft LoraConfig)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import _peft_common as common
from .base import Method, register, save_pretrained_only

INIT_CHOICES = ("true", "gaussian", "pissa", "olora")
# Chosen by measurement (bench/quality.py, docs/benchmarks.md): on short runs (tens to hundreds of steps)
# a linear decay from the first step beats warm-up + cosine; the advisor adds a short warm-up to long runs.
LORA_TRAINING = {"learning_rate": 2e-4, "warmup_ratio": 0.0, "lr_scheduler_type": "linear"}


@dataclass(frozen=True)
class LoraParams:
    """peft LoraConfig options the studio exposes (names are the CLI --set keys)."""

    r: int = field(default=16, metadata={
        "help": "Rank of the update. <=8 for narrow style/domain tweaks, 16-64 for general tasks, "
                ">=64 approaches full fine-tuning.", "min": 1, "max": 1024})
    lora_alpha: int = field(default=32, metadata={
        "help": "Scale of the update (alpha/r). About 2*r; raise it if updates vanish.", "min": 1, "max": 4096})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "Dropout on the LoRA input. 0 by default: on runs of a few epochs it only slows learning "
                "(measured); 0.05-0.1 fights overfitting when training many epochs on small data.",
        "min": 0.0, "max": 0.9})
    target_modules: str = field(default="all_linear", metadata={
        "help": common.TARGET_HELP + " Default all_linear: more capacity for the same rank (article 001, the "
                "QLoRA paper; measured better than attention only).", **common.TARGETS_META})
    bias: str = field(default="none", metadata={
        "help": "Which biases train: none, all, or lora_only.", "choices": ["none", "all", "lora_only"]})
    use_rslora: bool = field(default=False, metadata={
        "help": "Rank-stabilised LoRA: scale by alpha/sqrt(r), steadier at high ranks."})
    init_lora_weights: str = field(default="true", metadata={
        "help": "Initialisation: true (B=0, standard), gaussian, pissa (principal singular vectors, "
                "converges faster), olora (orthonormal). PiSSA/OLoRA are saved as plain LoRA.",
        "choices": list(INIT_CHOICES)})
    rank_pattern: str = field(default="", metadata={
        "help": "Per-module ranks as regex=int pairs, e.g. q_proj=16,up_proj=8,down_proj=4 (article 001's "
                "layer-wise ranks). Empty: r everywhere."})
    alpha_pattern: str = field(default="", metadata={
        "help": "Per-module alphas as regex=int pairs, e.g. down_proj=8. Empty: lora_alpha everywhere."})
    modules_to_save: str = field(default="", metadata={**common.SAVE_META,
        "help": "Comma list of modules trained in full beside LoRA (the hybrid of article 002), "
                "e.g. lm_head. The classification head is added automatically."})
    layers_to_transform: str = field(default="", metadata={
        "help": "Comma list of layer indices that get LoRA, e.g. 0,1. Empty: every layer."})


def make_check(name: str):
    """Torch-free validation of the string-encoded options, with errors naming method ``name``."""
    def check(params, model_config: dict | None) -> None:
        common.parse_int_map(name, "rank_pattern", params.rank_pattern)
        common.parse_int_map(name, "alpha_pattern", params.alpha_pattern)
        common.parse_layers(name, params.layers_to_transform, common.config_num_layers(model_config))
    return check


def _init_value(text: str):
    return True if text == "true" else text


def lora_config(name: str, model, params, task: str, **extra):
    """Build the peft LoraConfig for ``model``; ``extra`` lets DoRA set use_dora."""
    from peft import LoraConfig

    from . import _arch

    num_layers = len(_arch.layer_stack(model)[1])
    return LoraConfig(
        task_type=common.peft_task_type(name, task),
        r=params.r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=common.resolve_targets(name, model, params.target_modules),
        bias=params.bias,
        use_rslora=params.use_rslora,
        init_lora_weights=_init_value(params.init_lora_weights),
        rank_pattern=common.parse_int_map(name, "rank_pattern", params.rank_pattern),
        alpha_pattern=common.parse_int_map(name, "alpha_pattern", params.alpha_pattern),
        modules_to_save=common.modules_to_save(name, model, params.modules_to_save, task),
        layers_to_transform=common.parse_layers(name, params.layers_to_transform, num_layers),
        **extra,
    )


def wrap(name: str, model, params, task: str, **extra):
    """get_peft_model with the studio's LoRA config; remembers PiSSA/OLoRA's initial adapter."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    peft_model = get_peft_model(model, lora_config(name, model, params, task, **extra))
    if params.init_lora_weights in ("pissa", "olora"):
        # These inits rewrite the base weights; to save a plain LoRA that loads onto the untouched
        # base, peft needs the adapter as it was right after initialisation.
        initial = get_peft_model_state_dict(peft_model)
        peft_model.studio_initial_adapter = {k: v.detach().clone() for k, v in initial.items()}
    return peft_model


def apply(model, params, task: str):
    """Freeze the base and add LoRA adapters (plus the head for seq_cls)."""
    return wrap("lora", model, params, task)


def save(model, out_dir: Path, state_dict: dict | None = None) -> None:
    """save_pretrained as safetensors; PiSSA/OLoRA are converted to a LoRA for the original base."""
    initial = getattr(model, "studio_initial_adapter", None)
    if initial is None:
        save_pretrained_only(model, out_dir, state_dict=state_dict)
        return
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        init_dir = Path(tmp) / "initial"
        init_dir.mkdir()
        save_file(initial, str(init_dir / "adapter_model.safetensors"))
        save_pretrained_only(model, out_dir, state_dict=state_dict,
                             path_initial_model_for_weight_conversion=str(init_dir))


METHOD = register(Method(
    name="lora",
    params=LoraParams,
    summary="Low-rank adapters on chosen linear layers; 0.1-1% of weights train; mergeable.",
    mergeable=True,
    apply=apply,
    save=save,
    merge=common.merge_peft,
    default_training=dict(LORA_TRAINING),
    check=make_check("lora"),
))

