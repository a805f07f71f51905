"""IA3: learned per-channel scaling vectors on keys, values and the MLP; tiny and mergeable."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.methods import _costs
from studio.methods._common import SAVE_META, TARGET_PRESETS
from studio.methods.spec import Costs, MethodSpec, register

# peft's IA3 defaults per model_type (peft.utils.constants, under the names studio/advisor/architecture.py gives
# the modules); the MLP ones scale their input, the others their output. Other families: every linear.
_KV_DOWN, _QV_DOWN = ("k_proj", "v_proj", "down_proj"), ("q_proj", "v_proj", "down_proj")
AUTO_TARGETS = {"llama": _KV_DOWN, "mistral": _KV_DOWN, "mixtral": _KV_DOWN, "gemma": _QV_DOWN, "gemma2": _QV_DOWN,
                "gemma3_text": _QV_DOWN, "qwen2": _QV_DOWN, "qwen3": _QV_DOWN, "phi": ("q_proj", "v_proj", "fc2"),
                "gpt2": ("c_attn", "mlp.c_proj"), "gpt_neox": ("query_key_value", "dense_4h_to_h"),
                "bert": ("key", "value", "output.dense"), "roberta": ("key", "value", "output.dense")}


@dataclass(frozen=True)
class IA3Params:
    """peft IA3Config options."""

    target_modules: str = field(default="auto", metadata={"modules": ("auto", *TARGET_PRESETS),
        "help": "auto (peft's choice for the architecture: keys, values, MLP down-projection), "
                "or as in LoRA: attention, attention_mlp, all_linear, or a comma list."})
    modules_to_save: str = field(default="", metadata={**SAVE_META,
        "help": "Comma list of modules trained in full beside IA3. The classification head is added automatically."})


def scaled(shape, p) -> list:
    """A block's linears IA3 scales ("auto": peft's choice for the family, else every linear)."""
    if p.target_modules == "auto":
        names = AUTO_TARGETS.get(shape.family)
        return _costs.targeted(shape, ",".join(names)) if names else list(shape.linears)
    return _costs.targeted(shape, p.target_modules)


def _vector_sizes(shape, p) -> int:
    # feed-forward modules scale their input, the others their output
    return sum(l.in_features if l.kind == "mlp" else l.out_features for l in scaled(shape, p))


COSTS = Costs(added=lambda shape, p: shape.layers * _vector_sizes(shape, p) + _costs.saved_modules(shape, p.modules_to_save),
              extra_activations=_vector_sizes)

SPEC = register(MethodSpec(
    name="ia3",
    params=IA3Params,
    summary="Learned scaling vectors on keys, values and MLP (IA3); ~0.01% of weights; mergeable.",
    mergeable=True,
    suggest_4bit_base=True,
    default_training={"learning_rate": 3e-3, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine"},
    costs=COSTS,
))
