"""Parameter counts by module, read from a Hugging Face ``config.json`` dict (no torch).

Each supported family is one small function that lists a layer's linear layers and the
model's embedding, norm and head sizes; :func:`model_shape` picks it by ``model_type`` and
falls back to the Llama layout for unknown decoder-only models.  The counts match
``sum(p.numel() for p in model.parameters())`` of the transformers model class
(``AutoModelForCausalLM`` for decoders, ``AutoModel`` for encoders, i.e. BERT with its pooler).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Linear:
    """One linear layer inside a transformer block."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    kind: str  # "attention" | "mlp"

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelShape:
    """What the estimator needs to know about a model, independent of its family."""

    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    gated_mlp: bool
    encoder: bool
    max_positions: int | None
    linears: tuple[Linear, ...]  # one layer's linears (experts included)
    layer_norm_params: int  # norm parameters inside one layer
    embed: int  # token (+ position, type) embeddings
    embed_norm: int  # embedding LayerNorm (BERT) — counted under "norm"
    final_norm: int
    head: int  # untied LM head (+ bias), or BERT's pooler
    extra_per_layer: int = 0  # e.g. a MoE router
    synthetic: bool = False  # shape guessed from a parameter count only

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        return sum(l.params for l in self.linears) + self.layer_norm_params + self.extra_per_layer

    def total(self) -> int:
        return self.embed + self.embed_norm + self.layers * self.layer_params() + self.final_norm + self.head


def _get(config: dict, *keys, default=None):
    """First present key among ``keys`` (HF families spell the same thing differently)."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def _attention(h, q_dim, kv_dim, qkv_bias, o_bias, names=("q_proj", "k_proj", "v_proj", "o_proj")):
    q, k, v, o = names
    return (
        Linear(q, h, q_dim, qkv_bias, "attention"),
        Linear(k, h, kv_dim, qkv_bias, "attention"),
        Linear(v, h, kv_dim, qkv_bias, "attention"),
        Linear(o, q_dim, h, o_bias, "attention"),
    )


def _gated_mlp(h, i, bias=False):
    return (
        Linear("gate_proj", h, i, bias, "mlp"),
        Linear("up_proj", h, i, bias, "mlp"),
        Linear("down_proj", i, h, bias, "mlp"),
    )


def _plain_mlp(h, i, names=("fc1", "fc2"), bias=True):
    return (Linear(names[0], h, i, bias, "mlp"), Linear(names[1], i, h, bias, "mlp"))


# Families whose config class defaults tie_word_embeddings to True when config.json omits it.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3_text", "gpt2", "bert", "roberta", "distilbert"}
# Llama-layout families with biases on q/k/v (Qwen2 hard-codes them).
_QKV_BIAS = {"qwen2", "qwen2_vl"}
# Extra norms inside each layer beyond the two pre-norms (Gemma2/3 add post-norms).
_EXTRA_LAYER_NORMS = {"gemma2": 2, "gemma3_text": 2}
# Families with a per-head RMSNorm on q and k (head_dim each).
_QK_HEAD_NORM = {"qwen3", "qwen3_moe", "gemma3_text"}


def _llama_like(config: dict, model_type: str) -> ModelShape:
    """Llama, Mistral, Qwen2/3, Gemma, Phi-3, Mixtral, and unknown decoders: RMSNorm + gated MLP."""
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = _get(config, "num_key_value_heads", default=heads)
    hd = _get(config, "head_dim", default=h // heads)
    i = _get(config, "intermediate_size", default=4 * h)
    layers = config["num_hidden_layers"]
    vocab = config["vocab_size"]
    qkv_bias = model_type in _QKV_BIAS or bool(config.get("attention_bias", False))
    o_bias = bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))
    attn = _attention(h, heads * hd, kv * hd, qkv_bias, o_bias)
    experts = _get(config, "num_local_experts", default=1)
    mlp = _gated_mlp(h, i, mlp_bias) * experts
    norms = (2 + _EXTRA_LAYER_NORMS.get(model_type, 0)) * h
    if model_type in _QK_HEAD_NORM:
        norms += 2 * hd
    tied = bool(config.get("tie_word_embeddings", model_type in _TIED_BY_DEFAULT))
    return ModelShape(
        family=model_type or "llama", hidden=h, layers=layers, heads=heads, kv_heads=kv, head_dim=hd,
        intermediate=i, vocab=vocab, tied=tied, gated_mlp=True, encoder=False,
        max_positions=config.get("max_position_embeddings"), linears=attn + mlp,
        layer_norm_params=norms, embed=vocab * h, embed_norm=0, final_norm=h,
        head=0 if tied else vocab * h, extra_per_layer=h * experts if experts > 1 else 0,
    )


def _gpt2(config: dict, model_type: str) -> ModelShape:
    """GPT-2: learned positions, fused c_attn, LayerNorm with bias, GELU MLP, tied head."""
    h = config["n_embd"]
    i = _get(config, "n_inner", default=4 * h)
    heads = config["n_head"]
    vocab = config["vocab_size"]
    positions = _get(config, "n_positions", default=1024)
    tied = bool(config.get("tie_word_embeddings", True))
    linears = (
        Linear("c_attn", h, 3 * h, True, "attention"),
        Linear("c_proj", h, h, True, "attention"),
        Linear("c_fc", h, i, True, "mlp"),
        Linear("mlp.c_proj", i, h, True, "mlp"),
    )
    return ModelShape(
        family="gpt2", hidden=h, layers=config["n_layer"], heads=heads, kv_heads=heads, head_dim=h // heads,
        intermediate=i, vocab=vocab, tied=tied, gated_mlp=False, encoder=False, max_positions=positions,
        linears=linears, layer_norm_params=4 * h, embed=vocab * h + positions * h, embed_norm=0,
        final_norm=2 * h, head=0 if tied else vocab * h,
    )


def _gpt_neox(config: dict, model_type: str) -> ModelShape:
    """GPT-NeoX / Pythia: fused query_key_value, two LayerNorms per layer, untied embed_out."""
    h = config["hidden_size"]
    i = _get(config, "intermediate_size", default=4 * h)
    heads = config["num_attention_heads"]
    vocab = config["vocab_size"]
    bias = bool(config.get("attention_bias", True))
    tied = bool(config.get("tie_word_embeddings", False))
    linears = (
        Linear("query_key_value", h, 3 * h, bias, "attention"),
        Linear("dense", h, h, bias, "attention"),
        Linear("dense_h_to_4h", h, i, True, "mlp"),
        Linear("dense_4h_to_h", i, h, True, "mlp"),
    )
    return ModelShape(
        family="gpt_neox", hidden=h, layers=config["num_hidden_layers"], heads=heads, kv_heads=heads,
        head_dim=h // heads, intermediate=i, vocab=vocab, tied=tied, gated_mlp=False, encoder=False,
        max_positions=config.get("max_position_embeddings"), linears=linears, layer_norm_params=4 * h,
        embed=vocab * h, embed_norm=0, final_norm=2 * h, head=0 if tied else vocab * h,
    )


def _phi(config: dict, model_type: str) -> ModelShape:
    """Phi-1/1.5/2: parallel attention + MLP after one LayerNorm, biases everywhere, LM head with bias."""
    h = config["hidden_size"]
    i = _get(config, "intermediate_size", default=4 * h)
    heads = config["num_attention_heads"]
    kv = _get(config, "num_key_value_heads", default=heads)
    hd = h // heads
    vocab = config["vocab_size"]
    tied = bool(config.get("tie_word_embeddings", False))
    attn = _attention(h, heads * hd, kv * hd, True, True, ("q_proj", "k_proj", "v_proj", "dense"))
    norms = 2 * h + (4 * hd if config.get("qk_layernorm") else 0)
    return ModelShape(
        family="phi", hidden=h, layers=config["num_hidden_layers"], heads=heads, kv_heads=kv, head_dim=hd,
        intermediate=i, vocab=vocab, tied=tied, gated_mlp=False, encoder=False,
        max_positions=config.get("max_position_embeddings"), linears=attn + _plain_mlp(h, i),
        layer_norm_params=norms, embed=vocab * h, embed_norm=0, final_norm=2 * h,
        head=0 if tied else vocab * h + vocab,
    )


def _bert(config: dict, model_type: str) -> ModelShape:
    """BERT/RoBERTa encoders (``AutoModel``: embeddings + layers + pooler, no task head)."""
    h = config["hidden_size"]
    i = _get(config, "intermediate_size", default=4 * h)
    heads = config["num_attention_heads"]
    vocab = config["vocab_size"]
    positions = _get(config, "max_position_embeddings", default=512)
    types = _get(config, "type_vocab_size", default=2)
    attn = _attention(h, h, h, True, True, ("query", "key", "value", "attention.output.dense"))
    mlp = _plain_mlp(h, i, ("intermediate.dense", "output.dense"))
    return ModelShape(
        family=model_type, hidden=h, layers=config["num_hidden_layers"], heads=heads, kv_heads=heads,
        head_dim=h // heads, intermediate=i, vocab=vocab, tied=True, gated_mlp=False, encoder=True,
        max_positions=positions, linears=attn + mlp, layer_norm_params=4 * h,
        embed=(vocab + positions + types) * h, embed_norm=2 * h, final_norm=0, head=h * h + h,
    )


def _distilbert(config: dict, model_type: str) -> ModelShape:
    """DistilBERT (``AutoModel``): no token types, no pooler."""
    h = config["dim"]
    i = _get(config, "hidden_dim", default=4 * h)
    heads = config["n_heads"]
    vocab = config["vocab_size"]
    positions = _get(config, "max_position_embeddings", default=512)
    attn = _attention(h, h, h, True, True, ("q_lin", "k_lin", "v_lin", "out_lin"))
    return ModelShape(
        family="distilbert", hidden=h, layers=config["n_layers"], heads=heads, kv_heads=heads,
        head_dim=h // heads, intermediate=i, vocab=vocab, tied=True, gated_mlp=False, encoder=True,
        max_positions=positions, linears=attn + _plain_mlp(h, i, ("lin1", "lin2")), layer_norm_params=4 * h,
        embed=(vocab + positions) * h, embed_norm=2 * h, final_norm=0, head=0,
    )


_FAMILIES = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "phi": _phi,
    "bert": _bert,
    "roberta": _bert,
    "xlm-roberta": _bert,
    "distilbert": _distilbert,
}


def synthetic_config(params_b: float, vocab: int = 32000) -> dict:
    """A Llama-layout config with about ``params_b`` billion parameters.

    Used when only a size is known.  Depth follows Llama's aspect ratio (layers ≈ hidden/128),
    MLP width 8/3·hidden (so a layer has 12·hidden² weights), full multi-head attention, untied
    32k vocabulary — Llama-2-7B comes out as hidden 4096, 32 layers.
    """
    target = params_b * 1e9
    hidden = 256
    for h in range(256, 32768 + 1, 128):
        if 12 * h * h * (h / 128) + 2 * vocab * h > target:
            break
        hidden = h
    per_layer = 12 * hidden * hidden
    layers = max(1, round((target - 2 * vocab * hidden) / per_layer))
    heads = max(1, hidden // 128)
    return {
        "model_type": "llama", "hidden_size": hidden, "intermediate_size": int(round(hidden * 8 / 3 / 64)) * 64,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
        "vocab_size": vocab, "tie_word_embeddings": False, "max_position_embeddings": 4096,
        "_synthetic": True,
    }


def model_shape(config: dict) -> ModelShape:
    """Normalise an HF config dict (or a multimodal one with ``text_config``) to a :class:`ModelShape`."""
    if "text_config" in config and "hidden_size" not in config:
        outer_tie = config.get("tie_word_embeddings")
        config = dict(config["text_config"])
        if outer_tie is not None:
            config["tie_word_embeddings"] = outer_tie
    model_type = str(config.get("model_type", "llama")).lower()
    build = _FAMILIES.get(model_type, _llama_like)
    try:
        shape = build(config, model_type)
    except KeyError as missing:
        raise ValueError(f"config.json for model_type {model_type!r} lacks {missing}") from None
    if config.get("_synthetic"):
        shape = replace(shape, synthetic=True, family="llama (synthetic from size)")
    return shape


def param_breakdown(config: dict) -> dict:
    """Parameter counts by module group from an HF ``config.json`` dict.

    Returns ``embed``, ``attention``, ``mlp``, ``norm``, ``head`` and ``total`` (tied input/output
    embeddings counted once), plus ``layers``, ``hidden``, ``heads``, ``kv_heads``, ``vocab``,
    ``intermediate``, ``head_dim``, ``tied`` and ``family``.
    """
    s = model_shape(config)
    attention = s.layers * sum(l.params for l in s.linears if l.kind == "attention")
    mlp = s.layers * (sum(l.params for l in s.linears if l.kind == "mlp") + s.extra_per_layer)
    norm = s.layers * s.layer_norm_params + s.embed_norm + s.final_norm
    out = {
        "embed": s.embed, "attention": attention, "mlp": mlp, "norm": norm, "head": s.head,
        "layers": s.layers, "hidden": s.hidden, "heads": s.heads, "kv_heads": s.kv_heads, "vocab": s.vocab,
        "intermediate": s.intermediate, "head_dim": s.head_dim, "tied": s.tied, "family": s.family,
    }
    out["total"] = s.embed + attention + mlp + norm + s.head
    assert out["total"] == s.total()
    return out


def params_billions(config: dict) -> float:
    """Total parameters in billions (for display)."""
    return round(model_shape(config).total() / 1e9, 3)


__all__ = ["Linear", "ModelShape", "model_shape", "param_breakdown", "params_billions", "synthetic_config"]
