"""Token lengths with a tokenizer.json through the ``tokenizers`` library."""
from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers

from studio.datasets import token_lengths, too_long

from tests.studio.test_datasets_helpers import jsonl, run


def word_tokenizer(tmp_path):
    """A whitespace word-level tokenizer: one token per word, so counts are easy to check."""
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate("a b c d e f hello world".split())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_chat_rows_count_contents_plus_overhead_per_turn(tmp_path):
    rows = [{"instruction": "a b c", "output": "d e"}, {"instruction": "hello", "input": "world", "output": "f"}]
    report = run(tmp_path, "i.jsonl", jsonl(rows))
    lengths = token_lengths(report.canonical_path, word_tokenizer(tmp_path), chat_template_overhead=3)
    assert lengths == [5 + 2 * 3, 3 + 2 * 3]
    assert too_long(lengths, 9) == [1]


def test_text_classification_preference_and_limit(tmp_path):
    tok = word_tokenizer(tmp_path)
    text = run(tmp_path, "t.txt", "a b c\nhello world\nzzz qqq rrr sss\n")
    assert token_lengths(text.canonical_path, tok) == [3, 2, 4]
    assert token_lengths(text.canonical_path, tok, limit=2) == [3, 2]
    pref = run(tmp_path, "p.jsonl", jsonl([{"prompt": "a b", "chosen": "c", "rejected": "d e f"}]))
    assert token_lengths(pref.canonical_path, tok, chat_template_overhead=1) == [2 + 3 + 2]


def test_every_row_too_long(tmp_path):
    rows = [{"text": "a b c d e f"} for _ in range(3)]
    path = tmp_path / "c.jsonl"
    path.write_text(jsonl(rows))
    lengths = token_lengths(path, word_tokenizer(tmp_path))
    assert too_long(lengths, 4) == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[0]) == rows[0]
