"""estimate_memory against hand-computed cases (the arithmetic is spelled out in each test)."""
import pytest

from studio import methods
from studio.advisor import estimate_memory
from studio.advisor.memory import GIB, NF4_BYTES

# hidden 64, MLP 128, 2 layers, 4 heads = 4 KV heads (head_dim 16), vocab 1000, untied head.
# params: embed 64,000 + 2 × (attention 4·64·64 = 16,384 + MLP 3·64·128 = 24,576 + norms 128)
#         + final norm 64 + head 64,000 = 210,240
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000, "tie_word_embeddings": False}
P = 210_240
CONTEXT = 0.5 * GIB


def test_full_bf16_by_hand():
    e = estimate_memory(TINY, "full", precision="bf16", micro_batch=1, seq_len=10)
    assert e.total_params == e.trainable_params == P
    assert e.parts["weights"] == P * 4  # trainable weights kept in fp32 (mixed precision)
    assert e.parts["trainable_state"] == P * 12  # fp32 grad 4 + AdamW m, v 8
    # per layer per token: norms 2·(2·64) + attention 2·64 + 2·64 + SwiGLU 3·128 + linear inputs 2·64 + 128
    per_layer = 256 + 256 + 384 + 256
    assert e.parts["activations"] == (2 * per_layer + 3 * 64) * 10 * 2
    assert e.parts["logits"] == 1 * 10 * 1000 * 4 * 2
    live = P * 16 + (2 * per_layer + 192) * 20 + 80_000
    assert e.parts["overhead"] == pytest.approx(CONTEXT + 0.05 * live)
    assert e.total_gb == pytest.approx((live + e.parts["overhead"]) / GIB)


def test_lora_with_checkpointing_by_hand():
    e = estimate_memory(TINY, "lora", micro_batch=2, seq_len=8, grad_ckpt=True, lora_r=4, target="attention")
    added = 2 * 4 * 4 * (64 + 64)  # layers × modules (q,k,v,o) × r·(in + out)
    assert e.trainable_params == added == 4096
    assert e.parts["weights"] == P * 2 + added * 4  # frozen bf16 base + fp32 adapters
    assert e.parts["trainable_state"] == added * 12
    # frozen layer keeps 256 + 256 + 384; LoRA adds each wrapped input (dropout copy) + r: 4·(64 + 4)
    per_layer = 896 + 272
    # checkpointing: every layer's input (64) + one layer recomputed, + final norm / head input (3·64)
    assert e.parts["activations"] == (2 * 64 + per_layer + 192) * 16 * 2
    assert e.parts["logits"] == 2 * 8 * 1000 * 8


def test_qlora_weights_by_hand():
    e = estimate_memory(TINY, "qlora", lora_r=4, target="attention")
    linears = 2 * (16_384 + 24_576)
    assert pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256)) == NF4_BYTES
    # NF4 linears; everything else upcast to fp32 by prepare_model_for_kbit_training; fp32 adapters
    assert e.parts["weights"] == pytest.approx(linears * NF4_BYTES + (P - linears) * 4 + 4096 * 4)
    assert e.settings["quant"] == "nf4"


def test_eight_bit_optimizer_and_sharding():
    adamw = estimate_memory(TINY, "full")
    eight = estimate_memory(TINY, "full", optimizer="paged_adamw_8bit")
    assert adamw.parts["trainable_state"] - eight.parts["trainable_state"] == P * 6
    sharded = estimate_memory(TINY, "full", shards=4)
    assert sharded.parts["trainable_state"] == adamw.parts["trainable_state"] / 4


def test_freeze_trains_top_layers_only():
    e = estimate_memory(TINY, "freeze", freeze_layers=1)
    layer = 16_384 + 24_576 + 128
    assert e.trainable_params == layer + 64 + 64_000  # top layer + final norm + untied head
    assert e.parts["weights"] == P * 4  # the worker loads full/freeze models in fp32
    full = estimate_memory(TINY, "full")
    assert e.parts["activations"] < full.parts["activations"]


def test_prompt_tuning_lengthens_sequence():
    e = estimate_memory(TINY, "prompt_tuning", seq_len=10, num_virtual_tokens=5)
    assert e.trainable_params == 5 * 64
    assert e.parts["logits"] == 15 * 1000 * 8


def test_adalora_counts_its_rank_allocators_importance_scores():
    # init_r 6 on the attention's four 64x64 projections of 2 layers: A, B and E per module =
    # 6·(64 + 64) + 6 = 774 elements, 8 modules = 6,192 scored elements (the trainable adapter itself);
    # the allocator keeps importance + two moving averages of each and one temporary: 4 fp32 copies
    params = {"init_r": 6, "target_r": 4, "target_modules": "attention"}
    e = estimate_memory(TINY, "adalora", params=params)
    assert e.trainable_params == 6_192
    assert e.parts["trainable_state"] == 6_192 * (4 + 8) + 6_192 * 4 * 4


def test_cpu_has_no_cuda_context_and_classifier_no_logits():
    e = estimate_memory(TINY, "lora", device="cpu", lm_logits=False)
    assert e.parts["logits"] == 0
    # the CPU runtime, plus the heap glibc keeps from the previous step's activations (one more set of them)
    assert e.parts["overhead"] == CONTEXT + e.parts["activations"]


def test_cpu_overhead_counts_the_retained_heap_not_the_logits():
    small = estimate_memory(TINY, "full", device="cpu", precision="fp32", seq_len=64)
    long = estimate_memory(TINY, "full", device="cpu", precision="fp32", seq_len=128)
    assert long.parts["overhead"] - small.parts["overhead"] == long.parts["activations"] - small.parts["activations"]
    gpu = estimate_memory(TINY, "full", device="cuda", seq_len=64)
    assert gpu.parts["overhead"] == pytest.approx(CONTEXT + 0.05 * sum(v for k, v in gpu.parts.items() if k != "overhead"))


def test_article_003_qlora_7b_weights_about_3_5_gb():
    llama7b = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
               "num_attention_heads": 32, "vocab_size": 32000}
    e = estimate_memory(llama7b, "qlora")
    assert 3.3 < e.parts["weights"] / 1e9 < 4.8  # 003: 7B 28 GB → 3.5 GB (+ fp32 embeddings/head here)
    assert estimate_memory(llama7b, "lora", precision="fp32").parts["weights"] / 1e9 == pytest.approx(27, abs=0.5)


def test_article_004_qlora_65b_fits_one_48gb_gpu():
    llama65b = {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 22016, "num_hidden_layers": 80,
                "num_attention_heads": 64, "vocab_size": 32000}
    e = estimate_memory(llama65b, "qlora", grad_ckpt=True, lora_r=16, seq_len=512)
    assert e.total_gb < 48
    assert estimate_memory(llama65b, "lora", grad_ckpt=True).total_gb > 48


def test_params_b_works_and_bad_inputs_fail():
    assert estimate_memory(1.0, "lora").total_params == pytest.approx(1e9, rel=0.05)
    with pytest.raises(ValueError):
        estimate_memory(TINY, "full", quant="nf4")
    with pytest.raises(ValueError):
        estimate_memory(TINY, "nope")
    with pytest.raises(ValueError):
        estimate_memory(TINY, "lora", precision="int3")


@pytest.mark.parametrize("method", methods.names())  # every registered method
def test_every_method_estimates_and_ckpt_helps(method):
    off = estimate_memory(TINY, method, micro_batch=4, seq_len=256)
    on = estimate_memory(TINY, method, micro_batch=4, seq_len=256, grad_ckpt=True)
    assert set(off.parts) == {"weights", "trainable_state", "activations", "logits", "objective", "overhead"}
    if method != "freeze":  # freeze trains one layer here: checkpointing one layer saves nothing
        assert on.parts["activations"] < off.parts["activations"]
    assert 0 < off.trainable_params <= off.total_params or method == "full"


# --- the objective's terms (issue 18): reference model, sequences per row, GRPO's generations ---

def test_preference_pair_doubles_activations_and_logits():
    sft = estimate_memory(TINY, "lora", micro_batch=2, seq_len=16, lora_r=4, target="attention")
    dpo = estimate_memory(TINY, "lora", micro_batch=2, seq_len=16, lora_r=4, target="attention", objective="dpo")
    assert dpo.parts["activations"] == 2 * sft.parts["activations"]  # chosen and rejected in one forward
    assert dpo.parts["logits"] == 2 * sft.parts["logits"]
    # the reference: TRL keeps a frozen copy of the starting adapter, fp32, beside the trained one
    assert dpo.parts["objective"] == sft.trainable_params * 4 and sft.parts["objective"] == 0
    assert dpo.settings["sequences_per_row"] == 2


def test_full_dpo_has_no_reference_copy():
    # full/freeze: the reference log-probabilities are computed before training, no second model is held
    dpo = estimate_memory(TINY, "full", micro_batch=1, seq_len=16, objective="dpo")
    assert dpo.parts["objective"] == 0
    assert dpo.parts["logits"] == 2 * 16 * 1000 * 4 * 2


def test_objectives_without_reference_add_only_sequences():
    orpo = estimate_memory(TINY, "lora", micro_batch=1, seq_len=16, objective="orpo")
    sft = estimate_memory(TINY, "lora", micro_batch=1, seq_len=16, objective="sft")
    assert orpo.parts["objective"] == 0 and orpo.parts["activations"] == 2 * sft.parts["activations"]
    with pytest.raises(ValueError, match="unknown objective"):
        estimate_memory(TINY, "lora", objective="nope")


def test_grpo_terms_read_by_attribute():
    from studio.advisor.memory import ObjectiveTerms

    class Params:  # GRPO-like params: read by attribute, whatever objective module defines them
        num_generations, max_completion_length, beta = 4, 24, 0.0

    terms = ObjectiveTerms.of("sft", Params())
    assert (terms.sequences, terms.extra_tokens, terms.generations) == (1, 24, 4)
    from studio import objectives

    assert "grpo" in objectives.names()
    g = estimate_memory(TINY, "lora", micro_batch=4, seq_len=16, lora_r=4, target="attention", objective="grpo",
                        objective_params={"num_generations": 4, "max_completion_length": 24})
    sft = estimate_memory(TINY, "lora", micro_batch=4, seq_len=16 + 24, lora_r=4, target="attention")
    assert g.parts["activations"] == sft.parts["activations"]  # prompt + completion per completion in the batch
    kv = 4 * 40 * 2 * 2 * 64 * 2  # generated together x tokens x layers x (k, v) x kv_dim x bf16
    assert g.parts["objective"] >= kv


def test_job_estimate_uses_the_objective():
    from studio.advisor.jobcost import job_estimate

    spec = {"method": "lora", "method_params": {}, "training": {"per_device_train_batch_size": 4}, "max_seq_length": 2048}
    sft = job_estimate(TINY, {**spec, "objective": "sft"})
    dpo = job_estimate(TINY, {**spec, "objective": "dpo"})
    assert dpo["parts"]["logits"] == pytest.approx(2 * sft["parts"]["logits"], rel=0.01)
    assert "objective" in dpo["parts"] and dpo["total_gb"] > sft["total_gb"]
