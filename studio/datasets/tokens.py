"""Token counts of canonical rows with a model's ``tokenizer.json`` (the ``tokenizers`` library,
never transformers), for the length histogram and the too-long check."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

BATCH = 512


def _texts(row: dict) -> tuple[list[str], int]:
    """The strings of a canonical row that the model reads, and its number of chat turns."""
    if "messages" in row:
        return [m["content"] for m in row["messages"]], len(row["messages"])
    if "chosen" in row:  # the longer reply decides whether the pair fits
        longer = max(row["chosen"], row["rejected"], key=len)
        return [row["prompt"], longer], 2
    return [row["text"]], 0


def token_lengths(canonical_path: Path, tokenizer_json: Path, *, chat_template_overhead: int = 8,
                  limit: int = 20000) -> list[int]:
    """Token length of each of the first ``limit`` rows of a canonical JSONL file.

    Counts the tokens of every content string (no special tokens) and adds
    ``chat_template_overhead`` per chat turn for the template's role markers. Preference rows
    count the prompt plus the longer of chosen/rejected. Rows are taken in file order.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    lengths: list[int] = []
    with open(canonical_path, encoding="utf-8") as f:
        rows = (json.loads(line) for line in islice(f, limit))
        while batch := list(islice(rows, BATCH)):
            lengths.extend(_batch_lengths(tokenizer, batch, chat_template_overhead))
    return lengths


def _batch_lengths(tokenizer, batch: list[dict], overhead: int) -> list[int]:
    texts, owners, extra = [], [], []
    for i, row in enumerate(batch):
        strings, turns = _texts(row)
        texts.extend(strings)
        owners.extend([i] * len(strings))
        extra.append(turns * overhead)
    for owner, enc in zip(owners, tokenizer.encode_batch(texts, add_special_tokens=False)):
        extra[owner] += len(enc.ids)
    return extra


def too_long(lengths: list[int], max_seq_length: int) -> list[int]:
    """1-based positions (in the canonical file) of the rows longer than ``max_seq_length``."""
    return [i for i, n in enumerate(lengths, 1) if n > max_seq_length]
