"""Worker-side data: tokenisation agrees with the studio's preview, the stored split wins over the job's
eval_split, and packing gives the same loss as padded batches without examples seeing each other."""
from __future__ import annotations

import json

import pytest
import torch

from studio.datasets.tokens import ModelText
from worker import data

CHATS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "The capital of France is Paris."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "hello world"}, {"role": "user", "content": "Translate: dog"},
                  {"role": "assistant", "content": "chien"}]},
    {"messages": [{"role": "user", "content": "Write a haiku about autumn leaves."},
                  {"role": "assistant", "content": "Leaves falling slowly, the quick brown fox jumps over."}]},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def encode(tokenizer, rows: list[dict], max_len: int = 256) -> list[dict]:
    batch = {"messages": [r["messages"] for r in rows]} if "messages" in rows[0] else {"text": [r["text"] for r in rows]}
    out = data.tokenize_fn(tokenizer, max_len)(batch)
    return [{"input_ids": i, "labels": lab} for i, lab in zip(out["input_ids"], out["labels"])]


def test_the_studio_preview_counts_and_marks_what_the_worker_trains(tokenizer, tiny_llama_dir):
    studio = ModelText.from_model_dir(tiny_llama_dir)
    texts = [{"text": "The quick brown fox."}, {"text": "0 1 2 3 label text"}]
    for rows in (CHATS, texts):
        encoded = encode(tokenizer, rows)
        assert studio.lengths(rows) == [len(e["input_ids"]) for e in encoded]
        for row, e in zip(rows, encoded):
            text, spans = studio.render(row)
            trained = tokenizer.decode([t for t in e["labels"] if t != data.IGNORE])
            assert trained == "".join(text[a:b] for a, b in spans)


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_stored_split_wins_over_eval_split(tokenizer, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": f"It is {i}."}]}
            for i in range(12)]
    version = tmp_path / "v1"
    version.mkdir()
    write_rows(version / "rows.jsonl", rows[:9])
    write_rows(version / "eval.jsonl", rows[9:])
    train, evals, report = data.build_sft(version / "rows.jsonl", tokenizer, max_len=64, eval_split=0.5, seed=1,
                                          cache_dir=tmp_path / "cache", key="v1")
    assert (len(train), len(evals), report.eval_source) == (9, 3, "the data set's stored split")
    assert tokenizer.decode(evals[0]["input_ids"]).count("What is 9?") == 1
    assert report.summary().startswith("12 rows: 9 train, 3 eval (the data set's stored split)")
    # without a stored split, the job's eval_split holds rows out, the same ones for the same seed
    plain = tmp_path / "v2"
    plain.mkdir()
    write_rows(plain / "rows.jsonl", rows)
    picks = []
    for key in ("a", "b"):
        train, evals, report = data.build_sft(plain / "rows.jsonl", tokenizer, max_len=64, eval_split=0.25, seed=3,
                                              cache_dir=tmp_path / "cache", key=key)
        picks.append(evals["input_ids"])
        assert (len(train), len(evals), report.eval_source) == (9, 3, "eval_split 0.25 of the rows, seed 3")
    assert picks[0] == picks[1]


def test_packing_gives_the_loss_of_padded_batches_and_restarts_positions(tokenizer, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    features = encode(tokenizer, CHATS)
    padded = data.collator(tokenizer)(features)
    packed = data.collator(tokenizer, packing=True, model=model)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    assert packed["use_cache"] is False  # with a KV cache, transformers would not separate the examples
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    positions = packed["position_ids"][0].tolist()
    assert [positions[s] for s in starts] == [0, 0, 0] and positions[starts[1] - 1] == lengths[0] - 1
    assert all(packed["labels"][0, s] == data.IGNORE for s in starts)  # no example predicts the next one's start
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_packed = model(**packed).loss
        # the same packed row with positions running on: examples would attend across boundaries
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"]).loss
    assert torch.allclose(loss_packed, loss_padded, atol=1e-5), (loss_packed, loss_padded)
    assert not torch.allclose(leaky, loss_padded, atol=1e-4)


def test_a_trainer_trains_on_packed_batches(tokenizer, tiny_llama_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=3, learning_rate=1e-2,
                             report_to=[], use_cpu=True, remove_unused_columns=False, logging_steps=1,
                             include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(encode(tokenizer, CHATS)),
                      data_collator=data.collator(tokenizer, packing=True, model=model))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert trainer.state.num_input_tokens_seen == 3 * sum(len(e["input_ids"]) for e in encode(tokenizer, CHATS))


def test_packing_refuses_prompt_learning(tokenizer, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    from worker import methods
    from worker.errors import UserFacingError

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    method = methods.get("prompt_tuning")
    model = method.apply(model, methods.parse_params("prompt_tuning", {}), "causal_lm")
    with pytest.raises(UserFacingError, match="packing cannot be used with prompt_tuning"):
        data.collator(tokenizer, packing=True, model=model)
    assert data.collator(tokenizer, packing=False, model=model) is not None


def _one_at_a_time(model, features):
    """Loss and gradients of the examples run one by one (no packing), weighted as one batch's mean."""
    model.zero_grad()
    counts = [sum(label != data.IGNORE for label in f["labels"][1:]) for f in features]
    total = torch.zeros(())
    for f, n in zip(features, counts):
        out = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]))
        part = out.loss * n / sum(counts)
        part.backward()
        total += part.detach()
    return total, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("boundaries", ["cu_seq_lens", "position_ids"])
def test_packed_sdpa_gives_the_loss_and_gradients_of_examples_run_alone(tokenizer, tiny_llama_dir, monkeypatch,
                                                                        boundaries):
    from transformers import AutoModelForCausalLM

    from worker import machine_defaults, packed_attention

    def no_dense_mask(**kw):
        raise AssertionError("a dense mask was built for a packed row")

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    features = encode(tokenizer, CHATS * 2)
    want_loss, want_grads = _one_at_a_time(model, features)
    assert machine_defaults.packed_attention(model) and model.config._attn_implementation == packed_attention.NAME
    batch = data.collator(tokenizer, packing=True, model=model)(features)
    assert batch["cu_seq_lens_q"].tolist()[-1] == batch["input_ids"].shape[1]
    if boundaries == "position_ids":  # a caller without the collator's boundaries: found from the position ids
        batch = {k: v for k, v in batch.items() if not k.startswith(("cu_seq_lens", "max_length"))}
    monkeypatch.setattr(packed_attention, "sdpa_mask", no_dense_mask)
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_packed_sdpa_falls_back_to_the_dense_mask_for_padded_batches(tokenizer, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    from worker import machine_defaults

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    padded = data.collator(tokenizer)(encode(tokenizer, CHATS))
    assert padded["attention_mask"].min() == 0  # there is padding
    with torch.no_grad():
        want = model(**padded).logits
        assert machine_defaults.packed_attention(model)
        got = model(**padded).logits
    real = padded["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager")
    assert not machine_defaults.packed_attention(eager)  # only models on SDPA are switched


def test_covering_length_holds_99_percent_of_rows_in_a_multiple_of_64():
    assert data.covering_length([10] * 99 + [5000], cap=4096)[0] == 64  # one outlier does not set the length
    length, why = data.covering_length(list(range(1, 301)), cap=4096)
    assert length == 320 and why == "max_seq_length 320 from the data: 99% of the rows are at most 297 tokens"
    assert data.covering_length([9000] * 10, cap=2048) == (
        2048, "max_seq_length 2048 from the data: 99% of the rows are at most 9000 tokens (capped at 2048)")


def test_max_seq_length_0_is_chosen_from_the_data_and_cuts_the_rest(tokenizer, tmp_path):
    short = [{"messages": [{"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": f"It is {i}."}]}
             for i in range(199)]
    long = [{"messages": [{"role": "user", "content": "Tell me."},
                          {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog. " * 40}]}]
    write_rows(tmp_path / "rows.jsonl", short + long)
    train, evals, report = data.build_sft(tmp_path / "rows.jsonl", tokenizer, max_len=0, eval_split=0, seed=1,
                                          cache_dir=tmp_path / "cache", key="auto")
    assert report.max_seq_length == 64 and report.truncated == 1 and len(train) == 200 and evals is None
    assert max(len(ids) for ids in train["input_ids"]) == 64
    assert "max_seq_length 64 from the data: 99% of the rows are at most" in report.summary()
    assert "1 longer than 64 tokens were truncated" in report.summary()
