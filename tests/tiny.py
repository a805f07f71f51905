"""Tiny models and tokenizers built in milliseconds, so tests never download anything.

The tokenizer is a real byte-level BPE trained on a few sentences and carries a ChatML chat
template like SmolLM2's, so the same tokenisation code paths run as with the demo model.
"""
from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate to French: hello world. Bonjour le monde.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a haiku about autumn leaves falling slowly.",
    "Instruction input output response answer question user assistant system",
    "0 1 2 3 4 5 6 7 8 9 positive negative neutral label text",
] * 4


def build_tiny_tokenizer(out_dir: Path):
    """Train a ~400-token byte-level BPE and save it as a HF fast tokenizer in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


# 64 wide (not 32): bitsandbytes' 4-bit CPU fast path needs every quantized layer's width to be a multiple
# of its 64-wide block, so the quantized tests run the real path on every CPU (worker/methods/qlora.py).
WIDTH = 64


def build_tiny_llama(out_dir: Path, *, layers: int = 2, hidden: int = WIDTH, seed: int = 0,
                     tied: bool = False) -> Path:
    """Save a random 2-layer Llama (about 125k parameters) plus tokenizer to ``out_dir``.

    ``tied``: the head is the input embedding matrix, as in SmolLM2 (the demo model).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer(out_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_bert(out_dir: Path, *, num_labels: int = 2, seed: int = 0, hidden: int = WIDTH) -> Path:
    """Save a random 2-layer BERT encoder (for sequence classification) plus tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer(out_dir)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def register_tiny_base(model_dir: Path, name: str = "tiny") -> int:
    """Record a tiny Llama built above as a base model row (as an import would, without copying it); its id."""
    import json

    from models_db import BaseModel, session_scope

    with session_scope() as db:
        row = BaseModel(name=name, path=str(model_dir), source=str(model_dir), architecture="LlamaForCausalLM",
                        config=json.loads((Path(model_dir) / "config.json").read_text()))
        db.add(row)
        db.flush()
        return row.id
