"""OFT, the torch side: peft's OFTConfig on the chosen linear layers; saved, reloaded and merged as any peft
adapter (spec, with the params and the cost: studio/methods/oft.py)."""
from __future__ import annotations

from studio.methods import MethodError
from studio.methods._common import parse_layers

from . import _arch
from . import _peft_common as common
from .base import implement


def apply(model, params, task: str):
    """Freeze the base and rotate each target layer's input by a trainable block-diagonal orthogonal matrix
    (identity at the start, so the model starts unchanged)."""
    from peft import OFTConfig, get_peft_model

    num_layers = len(_arch.layer_stack(model)[1])
    targets = common.resolve_targets("oft", model, params.target_modules)
    conv1d = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if type(m).__name__ == "Conv1D" and any(_arch.matches_any([n], t) for t in targets)})
    if conv1d:  # peft's OFT wraps nn.Linear (and Conv2d, Embedding) only
        raise MethodError(f"oft: peft's OFT cannot wrap {type(model).__name__}'s Conv1D layers ({', '.join(conv1d)}). "
                          "Use lora, dora or ia3 for this model.")
    config = OFTConfig(
        task_type=common.peft_task_type("oft", task),
        r=0,  # peft derives the block count from the block size
        oft_block_size=params.oft_block_size,
        target_modules=targets,
        module_dropout=params.module_dropout,
        use_cayley_neumann=params.use_cayley_neumann,
        coft=params.coft,
        eps=params.eps,
        block_share=params.block_share,
        bias=params.bias,
        modules_to_save=common.modules_to_save("oft", model, params.modules_to_save, task),
        layers_to_transform=parse_layers("oft", params.layers_to_transform, num_layers),
    )
    return get_peft_model(model, config)


METHOD = implement("oft", apply=apply, merge=common.merge_peft)
