"""param_breakdown against real parameter counts (cross-checked once with transformers on the meta device)."""
import pytest

from studio.advisor import param_breakdown
from studio.advisor.architecture import synthetic_config

SMOLLM2_135M = {
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
    "tie_word_embeddings": True, "max_position_embeddings": 8192,
}


def test_smollm2_135m_exact():
    b = param_breakdown(SMOLLM2_135M)
    assert b["total"] == 134_515_008
    assert b["embed"] == 49152 * 576
    assert b["head"] == 0  # tied: counted once, under embed
    assert b["attention"] == 30 * (576 * 576 * 2 + 576 * 192 * 2)
    assert b["mlp"] == 30 * 3 * 576 * 1536
    assert b["norm"] == 30 * 2 * 576 + 576
    assert (b["layers"], b["hidden"], b["heads"], b["kv_heads"], b["vocab"]) == (30, 576, 9, 3, 49152)


def test_untied_head_counted_separately():
    b = param_breakdown({**SMOLLM2_135M, "tie_word_embeddings": False})
    assert b["head"] == 49152 * 576
    assert b["total"] == 134_515_008 + 49152 * 576


SMALL = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1000)

# Totals from sum(p.numel()) of AutoModelForCausalLM / AutoModel built from these configs.
CASES = [
    ({"model_type": "qwen2", **SMALL}, 257_856),  # q/k/v biases
    ({"model_type": "qwen3", **SMALL, "head_dim": 32}, 294_528),  # q/k head norms
    ({"model_type": "mistral", **SMALL}, 257_472),
    ({"model_type": "mixtral", **SMALL, "num_hidden_layers": 2, "num_local_experts": 4}, 399_168),
    ({"model_type": "gemma", **SMALL, "num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 32}, 166_720),
    ({"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 1000, "n_positions": 128}, 222_272),
    ({"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3,
      "num_attention_heads": 4, "vocab_size": 1000}, 278_080),
    ({"model_type": "phi", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3,
      "num_attention_heads": 4, "vocab_size": 1000}, 278_696),
    # all-MiniLM-L6-v2 (BertModel with pooler): 22.7M
    ({"model_type": "bert", "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
      "num_attention_heads": 12, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2}, 22_713_216),
    ({"model_type": "distilbert", "dim": 64, "hidden_dim": 256, "n_layers": 2, "n_heads": 4, "vocab_size": 1000}, 196_864),
]


@pytest.mark.parametrize("config,expected", CASES, ids=[c[0]["model_type"] for c in CASES])
def test_families_match_transformers(config, expected):
    assert param_breakdown(config)["total"] == expected


def test_parts_sum_to_total():
    for config, _ in CASES:
        b = param_breakdown(config)
        assert b["embed"] + b["attention"] + b["mlp"] + b["norm"] + b["head"] == b["total"]


def test_multimodal_text_config_is_used():
    b = param_breakdown({"model_type": "llava", "text_config": SMOLLM2_135M})
    assert b["total"] == 134_515_008


def test_synthetic_7b_has_llama2_shape():
    b = param_breakdown(synthetic_config(7.0))
    assert b["hidden"] == 4096
    assert 6.5e9 < b["total"] < 7.5e9


def test_missing_key_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks"):
        param_breakdown({"model_type": "llama", "hidden_size": 64})
