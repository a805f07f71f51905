"""Tokenisation for training, on the worker: chat template applied, loss on the responses only; the
stored train/eval split; and the collator (padded batches, or padding-free packing).

Rows are the canonical JSONL written by dataset intake (``{"messages": [...]}`` or ``{"text": ...}``)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from studio.datasets.split import EVAL_FILE
from studio.datasets.template import assistant_spans

IGNORE = -100
COVERAGE = 0.99  # the share of rows the data-derived max_seq_length holds whole
MAX_AUTO_LENGTH = 4096  # the longest data-derived max_seq_length (longer: ask for it)
LENGTH_STEP = 64
OK, TRUNCATED, DROPPED = 0, 1, 2


@dataclass
class DataReport:
    rows: int
    train_rows: int
    eval_rows: int
    truncated: int
    dropped: int
    max_seq_length: int
    eval_source: str = ""  # where the eval rows come from, e.g. "the data set's stored split"
    length_source: str = ""  # how a data-derived max_seq_length was chosen

    def summary(self) -> str:
        parts = [f"{self.rows} rows: {self.train_rows} train, {self.eval_rows} eval"
                 + (f" ({self.eval_source})" if self.eval_source else "")]
        if self.length_source:
            parts.append(self.length_source)
        if self.truncated:
            parts.append(f"{self.truncated} longer than {self.max_seq_length} tokens were truncated")
        if self.dropped:
            parts.append(f"{self.dropped} dropped because their prompt alone exceeds {self.max_seq_length} "
                         "tokens (raise max_seq_length to keep them)")
        return "; ".join(parts)


def _encode_chat(messages: list[dict], tokenizer, max_len: int) -> tuple[list[int], list[int], int]:
    # the same span finder as the studio's preview, with transformers' own renderer
    text, spans = assistant_spans(messages, lambda m, gen: tokenizer.apply_chat_template(
        m, tokenize=False, add_generation_prompt=gen))
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


def stored_eval(path: Path) -> Path | None:
    """The eval rows stored with a dataset version (``eval.jsonl`` beside its rows), if it has a split."""
    candidate = Path(path).with_name(EVAL_FILE)
    return candidate if candidate.is_file() else None


def build_sft(path: Path, tokenizer, *, max_len: int, eval_split: float, seed: int, cache_dir: Path, key: str,
              cap: int = MAX_AUTO_LENGTH):
    """Load and tokenise the training rows and pick the eval rows. Returns (train, eval or None, DataReport).

    Which eval rows: a split stored with the dataset version wins — its ``eval.jsonl`` is the eval
    set and the job's ``eval_split`` is not used. Only for a version without a stored split are
    ``eval_split`` of the rows held out here, by ``seed``. ``max_len`` 0: the length that holds 99 % of
    the rows whole (a multiple of 64, at most ``cap``: the model's context or the studio's limit)."""
    import datasets

    def tokenise(file: Path, name: str):
        raw = datasets.load_dataset("json", data_files=str(file), split="train", cache_dir=str(cache_dir / "raw"))
        tok = raw.map(tokenize_fn(tokenizer, max_len), batched=True, batch_size=256, remove_columns=raw.column_names,
                      cache_file_name=str(cache_dir / f"tok-{name}.arrow"), desc="tokenising")
        kept = tok.filter(lambda s: [x != DROPPED for x in s], input_columns="status", batched=True,
                          cache_file_name=str(cache_dir / f"kept-{name}.arrow")).remove_columns("status")
        return list(tok["status"]), kept

    auto = not max_len  # 0: the length that covers the data (COVERAGE of the rows), up to the cap
    if auto:
        max_len = cap
    status, kept = tokenise(path, key)
    eval_file = stored_eval(path)
    eval_status, evals = tokenise(eval_file, f"{key}-eval") if eval_file else ([], None)
    chosen = ""
    if auto and len(kept):
        max_len, chosen = covering_length([len(ids) for ids in kept["input_ids"]], cap)
        status, kept = shorten(status, kept, max_len)
        if evals is not None:
            eval_status, evals = shorten(eval_status, evals, max_len)
    if len(kept) == 0:
        from worker.errors import UserFacingError

        raise UserFacingError(
            f"No usable rows: all {len(status)} rows have a prompt longer than max_seq_length={max_len} tokens "
            "or no response. Raise max_seq_length or shorten the prompts.")
    train, source = kept, "the data set's stored split" if eval_file else ""
    if eval_file is None and eval_split > 0 and len(kept) >= 4:
        parts = kept.train_test_split(test_size=eval_split, seed=seed)
        train, evals, source = parts["train"], parts["test"], f"eval_split {eval_split} of the rows, seed {seed}"
    if evals is not None and len(evals) == 0:
        evals = None
    statuses = status + eval_status
    report = DataReport(len(statuses), len(train), len(evals) if evals is not None else 0, statuses.count(TRUNCATED),
                        statuses.count(DROPPED), max_len, source, chosen)
    return train, evals, report


def covering_length(lengths: list[int], cap: int) -> tuple[int, str]:
    """The shortest multiple of 64 that holds ``COVERAGE`` of the rows whole, at most ``cap``; and why."""
    ordered = sorted(lengths)
    at = ordered[max(0, math.ceil(COVERAGE * len(ordered)) - 1)]
    length = min(cap, max(LENGTH_STEP, math.ceil(at / LENGTH_STEP) * LENGTH_STEP))
    why = (f"max_seq_length {length} from the data: {COVERAGE:.0%} of the rows are at most {at} tokens"
           + (f" (capped at {cap})" if length == cap and at > cap else ""))
    return length, why


def shorten(status: list[int], rows, max_len: int):
    """Rows tokenised at a longer cap, cut to ``max_len``; statuses updated (a row with nothing left to
    learn from is dropped, as ``_fit`` does)."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    if max(lengths, default=0) <= max_len:
        return status, rows

    def cut(batch):
        out = {k: [v[:max_len] for v in batch[k]] for k in ("input_ids", "attention_mask", "labels")}
        out["keep"] = [any(x != IGNORE for x in labels) for labels in out["labels"]]
        return out
    cut_rows = rows.map(cut, batched=True, keep_in_memory=True)
    keep = cut_rows["keep"]
    kept = cut_rows.filter(lambda k: k, input_columns="keep", keep_in_memory=True).remove_columns("keep")
    # the statuses of the kept rows, in order: truncated or dropped now where they were too long
    updated, it = [], iter(zip(lengths, keep))
    for st in status:
        if st == DROPPED:
            updated.append(st)
            continue
        n, ok = next(it)
        updated.append(DROPPED if not ok else (TRUNCATED if n > max_len else st))
    return updated, kept


def collator(tokenizer, *, packing: bool = False, model=None):
    """How examples become batches. Padded batches by default; with ``packing``, padding-free: each
    batch is one row of concatenated examples whose position ids restart at 0 per example, and the first
    label of each example is masked, so no example attends to or predicts another: packed SDPA and
    FlashAttention take the boundaries (``cu_seq_lens``) and run each example alone; plain SDPA gets a
    block-diagonal mask built from the position ids. Prompt-learning methods prepend virtual tokens per
    row and drop position ids: no packing."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if not packing:
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
    peft_config = getattr(model, "active_peft_config", None)
    if getattr(peft_config, "is_prompt_learning", False):
        from worker.errors import UserFacingError

        raise UserFacingError(f"packing cannot be used with {peft_config.peft_type.value.lower()} (its virtual tokens "
                              "would be shared by all the packed examples); turn packing off.")

    class Packed(DataCollatorWithFlattening):
        def __call__(self, features, return_tensors=None, separator_id=None):
            # transformers derives the per-example mask from the position ids only when no KV cache is
            # passed (masking_utils), and models build one whenever use_cache is on, as configs default
            # to: training never reads it, so it is switched off per batch (not in the saved config).
            return {**super().__call__(features, return_tensors, separator_id), "use_cache": False}

    # The examples' boundaries go with the batch when the attention reads them (packed SDPA, FlashAttention):
    # no per-layer search of the position ids, and no dense block-diagonal mask (worker/packed_attention.py).
    from worker.packed_attention import takes_boundaries

    return Packed(return_position_ids=True, separator_id=IGNORE, return_flash_attn_kwargs=takes_boundaries(model))
