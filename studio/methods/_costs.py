"""Shared pieces of the methods' cost terms: which of a block's linear layers a method wraps, at what rank,
and what ``modules_to_save`` and trained biases add. Functions of the advisor's ``ModelShape`` (its
attributes only; no import of the advisor here).

The counts equal peft's on the meta device for the families ``studio/advisor/architecture.py`` knows
(``tests/studio/test_train_tab.py``). What is read from names alone is approximate: rank_pattern regexes
are matched against "layers.{i}.{module}" rather than the full module path, custom freeze part lists are
sized by the words in them, and modules_to_save names not known here count as 0.
"""
from __future__ import annotations

import re

from studio.methods._common import TARGET_PRESETS, parse_int_map, parse_layers, split_list

HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier"})
EMBED_NAMES = frozenset({"embed_tokens", "wte", "word_embeddings", "embed_in"})
FINAL_NORM_NAMES = frozenset({"norm", "ln_f", "final_layernorm", "final_layer_norm"})


def _named(linears, wanted: str) -> list:
    """peft-style suffix match; a longer path (self_attn.q_proj) names the module it ends with."""
    hits = [l for l in linears if l.name == wanted or l.name.endswith("." + wanted)]
    return hits or [l for l in linears if wanted.endswith("." + l.name)]


def targeted(shape, target: str) -> list:
    """A block's linears a preset or a comma list of module names selects (experts included)."""
    if target == "attention":
        return [l for l in shape.linears if l.kind == "attention"]
    if target in TARGET_PRESETS:
        return list(shape.linears)
    chosen = {id(l) for w in split_list(target) for l in _named(shape.linears, w)}
    return [l for l in shape.linears if id(l) in chosen]


def wrapped(shape, method: str, target: str, rank: int, rank_pattern: str = "", layers_to_transform: str = "") -> list:
    """(linear, rank) for every module the method wraps in the whole model; ``rank_pattern`` as peft matches it."""
    patterns = parse_int_map(method, "rank_pattern", rank_pattern)
    layers = parse_layers(method, layers_to_transform, None)
    out = []
    for i in (layers if layers is not None else range(shape.layers)):
        if not 0 <= i < shape.layers:
            continue
        for l in targeted(shape, target):
            r = rank
            for pattern, pr in patterns.items():
                if re.match(rf"(.*\.)?({pattern})$", f"layers.{i}.{l.name}"):
                    r = pr
                    break
            out.append((l, r))
    return out


def saved_modules(shape, modules_to_save: str) -> int:
    """Parameters of the modules peft copies and trains in full for ``modules_to_save`` (0 for unknown names)."""
    total = 0
    for name in split_list(modules_to_save):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in HEAD_NAMES or leaf in EMBED_NAMES:
            total += shape.vocab * shape.hidden
        elif leaf in FINAL_NORM_NAMES:
            total += shape.final_norm
        else:
            total += shape.layers * sum(l.params for l in _named(shape.linears, name))
    return total


def trained_biases(shape, bias: str, modules: list) -> int:
    """peft's ``bias``: "all" trains every linear bias in the blocks, "<method>_only" those of the wrapped modules."""
    if bias == "all":
        return shape.layers * sum(l.out_features for l in shape.linears if l.bias)
    if bias.endswith("_only"):
        return sum(l.out_features for l, _ in modules if l.bias)
    return 0
