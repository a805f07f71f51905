"""Tokenisation for training, on the worker: chat template applied, loss on the responses only.

Rows are the canonical JSONL written by dataset intake (``{"messages": [...]}`` or ``{"text": ...}``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IGNORE = -100
OK, TRUNCATED, DROPPED = 0, 1, 2


@dataclass
class DataReport:
    rows: int
    train_rows: int
    eval_rows: int
    truncated: int
    dropped: int
    max_seq_length: int

    def summary(self) -> str:
        parts = [f"{self.rows} rows: {self.train_rows} train, {self.eval_rows} eval"]
        if self.truncated:
            parts.append(f"{self.truncated} longer than {self.max_seq_length} tokens were truncated")
        if self.dropped:
            parts.append(f"{self.dropped} dropped because their prompt alone exceeds {self.max_seq_length} "
                         "tokens (raise max_seq_length to keep them)")
        return "; ".join(parts)


def _assistant_spans(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation with the chat template and find the character spans of each
    assistant turn (content and end-of-turn marker), which are the only parts trained on."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(upto) or not upto.startswith(before):
            raise ValueError("this chat template renders a prefix of the conversation differently from the "
                             "whole; the studio cannot find the response tokens")
        spans.append((len(before), len(upto)))
    return text, spans


def _encode_chat(messages: list[dict], tokenizer, max_len: int) -> tuple[list[int], list[int], int]:
    text, spans = _assistant_spans(messages, tokenizer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for tok, (start, _end) in zip(ids, enc["offset_mapping"]):
        trained = any(a <= start < b for a, b in spans)
        labels.append(tok if trained else IGNORE)
    return _fit(ids, labels, max_len)


def _encode_text(text: str, tokenizer, max_len: int) -> tuple[list[int], list[int], int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return _fit(ids, list(ids), max_len)


def _fit(ids: list[int], labels: list[int], max_len: int) -> tuple[list[int], list[int], int]:
    """Truncate to max_len; a row with nothing left to learn from is dropped (and counted)."""
    status = OK
    if len(ids) > max_len:
        ids, labels, status = ids[:max_len], labels[:max_len], TRUNCATED
    if all(label == IGNORE for label in labels):
        return [], [], DROPPED
    return ids, labels, status


def tokenize_fn(tokenizer, max_len: int):
    def fn(batch: dict) -> dict:
        out = {"input_ids": [], "attention_mask": [], "labels": [], "status": []}
        rows = batch.get("messages") or batch.get("text")
        for row in rows:
            if isinstance(row, str):
                ids, labels, status = _encode_text(row, tokenizer, max_len)
            else:
                ids, labels, status = _encode_chat(row, tokenizer, max_len)
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
            out["status"].append(status)
        return out
    return fn


def cache_key(dataset_hash: str, tokenizer, max_len: int) -> str:
    """Tokenised data is reused across jobs with the same content, tokenizer, template and length."""
    h = hashlib.sha256()
    for part in (dataset_hash, tokenizer.name_or_path, str(len(tokenizer)), tokenizer.chat_template or "", str(max_len)):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build_sft(path: Path, tokenizer, *, max_len: int, eval_split: float, seed: int, cache_dir: Path, key: str):
    """Load, tokenise, split. Returns (train, eval or None, DataReport)."""
    import datasets

    raw = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache_dir / "raw"))
    columns = raw.column_names
    tok = raw.map(tokenize_fn(tokenizer, max_len), batched=True, batch_size=256, remove_columns=columns,
                  cache_file_name=str(cache_dir / f"tok-{key}.arrow"), desc="tokenising")
    status = tok["status"]
    truncated, dropped = status.count(TRUNCATED), status.count(DROPPED)
    kept = tok.filter(lambda s: [x != DROPPED for x in s], input_columns="status", batched=True,
                      cache_file_name=str(cache_dir / f"kept-{key}.arrow")).remove_columns("status")
    if len(kept) == 0:
        from worker.errors import UserFacingError

        raise UserFacingError(
            f"No usable rows: all {len(tok)} rows have a prompt longer than max_seq_length={max_len} tokens "
            "or no response. Raise max_seq_length or shorten the prompts.")
    train, evals = kept, None
    if eval_split > 0 and len(kept) >= 4:
        parts = kept.train_test_split(test_size=eval_split, seed=seed)
        train, evals = parts["train"], parts["test"]
    report = DataReport(len(tok), len(train), len(evals) if evals is not None else 0, truncated, dropped, max_len)
    return train, evals, report
