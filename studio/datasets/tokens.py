"""How one model reads canonical rows — the exact text (chat template applied), the part trained on,
and the token count — with the model's ``tokenizer.json`` (the ``tokenizers`` library) and jinja2,
never transformers. Used for the length histogram, the rendered preview and the too-long check.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .errors import DatasetError
from .messages import as_messages
from .template import ChatTemplate, assistant_spans, read_chat_template, read_tokenizer_config, special_tokens

BATCH = 512
Spans = list[tuple[int, int]]


class ModelText:
    """A model's tokenizer and chat template, applied to canonical rows the way the worker applies them.

    Without a chat template, chat rows are shown as ``role: content`` lines and counted as their
    contents plus ``overhead`` tokens per turn for the role markers (an estimate)."""

    def __init__(self, tokenizer_json: Path, chat_template: str | None = None, tokens: dict[str, str] | None = None,
                 *, overhead: int = 8):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        tokens = dict(tokens or {})
        self.template = ChatTemplate(chat_template, tokens) if chat_template else None
        self.eos = tokens.get("eos_token")
        self.overhead = overhead
        h = hashlib.sha256(Path(tokenizer_json).read_bytes())
        h.update(json.dumps([chat_template, tokens, overhead], sort_keys=True).encode())
        self.key = h.hexdigest()[:16]

    @classmethod
    def from_model_dir(cls, path: Path) -> ModelText:
        """Read ``tokenizer.json``, the chat template and the special tokens saved in a model folder."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise DatasetError(f"{path} has no tokenizer.json (a fast tokenizer); token lengths need one. "
                               "Re-import the model, or leave the model unset to skip the length check.")
        return cls(path / "tokenizer.json", read_chat_template(path), special_tokens(read_tokenizer_config(path)))

    def render(self, row: dict) -> tuple[str, Spans]:
        """The text the model reads for a canonical row, and the character spans it is trained on."""
        return render_row(row, self.template, self.eos)

    def lengths(self, rows: list[dict]) -> list[int]:
        """Token count of each row as the worker tokenises it (text rows get their end-of-text token)."""
        texts, extra = [], []
        for row in rows:
            messages = _messages(row)
            if messages is None:
                texts.append(row["text"])
                extra.append(1 if self.eos and "label" not in row else 0)
            elif self.template is not None:
                texts.append(self.template.render(messages))
                extra.append(0)
            else:
                texts.append("\n".join(m["content"] for m in messages))
                extra.append(self.overhead * len(messages))
        special = bool(rows) and "text" in rows[0] and "label" in rows[0]  # an encoder reads [CLS] text [SEP]
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=special)
        return [len(e.ids) + n for e, n in zip(encodings, extra)]


def render_row(row: dict, template: ChatTemplate | None = None, eos: str | None = None) -> tuple[str, Spans]:
    """A canonical row as text with its trained character spans: through ``template`` when given,
    else chat turns as ``role: content`` lines. Text rows end with ``eos`` (trained on whole);
    classification rows train on their label, so none of their text is highlighted."""
    messages = _messages(row)
    if messages is None:
        if "label" in row:
            return row["text"], []
        text = row["text"] + (eos or "")
        return text, [(0, len(text))]
    if template is not None:
        return assistant_spans(messages, template.render)
    text, spans = "", []
    for m in messages:
        head = f"{m['role']}: "
        if m["role"] == "assistant":
            spans.append((len(text) + len(head), len(text) + len(head) + len(m["content"])))
        text += f"{head}{m['content']}\n"
    return text, spans


def _messages(row: dict) -> list[dict] | None:
    if "messages" in row:
        return row["messages"]
    if "chosen" in row:  # the longer reply decides whether the pair fits
        reply = max(row["chosen"], row["rejected"], key=len)
        return [*as_messages(row["prompt"]), {"role": "assistant", "content": reply}]
    if "completion" in row:  # feedback: the prompt and the answer it rates
        return [*as_messages(row["prompt"]), {"role": "assistant", "content": row["completion"]}]
    return None


@dataclass(frozen=True)
class LengthLimit:
    """The too-long check of the intake: rows over ``max_tokens`` for ``model`` are problems."""

    model: ModelText
    max_tokens: int
    model_name: str

    @property
    def key(self) -> str:
        """What the check depends on (it enters the content hash: it decides which rows are kept)."""
        return f"{self.model.key}:{self.max_tokens}"

    def problem_text(self, where: str, tokens: int) -> str:
        """The message for one row that is too long."""
        return (f"{where} is {tokens} tokens with {self.model_name}'s tokenizer and chat template, over "
                f"max_seq_length {self.max_tokens}; shorten it, raise max_seq_length or drop the row")


def token_lengths(canonical_path: Path, model: ModelText, *, limit: int = 20000) -> list[int]:
    """Token length of each of the first ``limit`` rows of a canonical JSONL file, in file order."""
    lengths: list[int] = []
    with open(canonical_path, encoding="utf-8") as f:
        rows = (json.loads(line) for line in islice(f, limit))
        while batch := list(islice(rows, BATCH)):
            lengths.extend(model.lengths(batch))
    return lengths


def too_long(lengths: list[int], max_seq_length: int) -> list[int]:
    """1-based positions (in the canonical file) of the rows longer than ``max_seq_length``."""
    return [i for i, n in enumerate(lengths, 1) if n > max_seq_length]


def histogram(lengths: list[int], max_seq_length: int | None = None, bins: int = 20) -> list[dict]:
    """About ``bins`` equal-width bins from the shortest to the longest length:
    ``{"tokens": "64-127", "rows": n, "fits": bool}``.

    With ``max_seq_length`` the bins cover the lengths that fit, up to the limit, and every longer row
    goes into one overflow bin ``"> 512"`` (``fits`` False): a few very long rows neither vanish nor
    stretch the bins of the rest."""
    if not lengths:
        return []
    fitting = [n for n in lengths if not max_seq_length or n <= max_seq_length]
    over = len(lengths) - len(fitting)
    out = []
    if fitting:
        low, top = min(fitting), max(fitting)
        width = max(1, -(-(top - low + 1) // bins))
        counts = Counter((n - low) // width for n in fitting)
        for j in range((top - low) // width + 1):
            lo = low + j * width
            hi = min(lo + width - 1, max_seq_length) if max_seq_length else lo + width - 1
            out.append({"tokens": f"{lo}-{hi}", "rows": counts.get(j, 0), "fits": True})
    if over:
        out.append({"tokens": f"> {max_seq_length}", "rows": over, "fits": False})
    return out
