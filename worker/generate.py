"""Generation for the playground and the side-by-side compare, in the interactive worker's own process.

One ``Generation`` row is one prompt through one version (or the base) with given settings. The worker
claims the row (queued -> running, one conditional UPDATE, so a redelivered message does nothing), loads
the model (kept in a small LRU cache: loading is the slow part, a chat should not reload per turn),
applies the chat template and streams tokens into ``output`` every ~0.3 s, then records the new-token
count and the decode latency. A classification version answers with its predicted label instead.

No child process here (unlike training): a generation is short, and the loaded model must outlive it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from models_db import BaseModel, Generation, GenerationState, session_scope
from models_db.schema import utcnow
from worker import lineage
from worker.errors import UserFacingError, humanize
from worker.supervisor import WORKER_ID
from worker.trust import model_code_kwargs, tokenizer_code_kwargs

log = logging.getLogger("studio.worker")

FLUSH_S = 0.3  # how often the growing output is written to the row
MODES = ("chat", "messages", "raw")  # prompt is a user turn | a JSON list of messages | text continued as is


@dataclass
class Loaded:
    """A model ready for inference, its tokenizer, and what kind of answer it gives."""
    model: Any
    tokenizer: Any
    task: str  # "causal_lm" or "seq_cls"
    labels: list[str] | None = None


class ModelCache:
    """The last few loaded models, least recently used evicted first (``STUDIO_GENERATE_CACHE``, default 2)."""

    def __init__(self, size: int | None = None):
        self.size = size or int(os.environ.get("STUDIO_GENERATE_CACHE", "2"))
        self._items: OrderedDict[tuple, Loaded] = OrderedDict()
        self.loads = 0  # how many times a model was actually loaded (tests and logs)

    def get(self, key: tuple, load) -> Loaded:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        while len(self._items) >= self.size:
            self._items.popitem(last=False)
            _free_device_memory()
        self._items[key] = load()
        self.loads += 1
        return self._items[key]

    def clear(self) -> None:
        self._items.clear()
        _free_device_memory()


CACHE = ModelCache()


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype():
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


_threads_set = False


def _set_threads() -> None:
    """On CPU, leave cores to the training worker beside this one (``STUDIO_GENERATE_THREADS`` overrides)."""
    global _threads_set
    if _threads_set:
        return
    import torch

    n = int(os.environ.get("STUDIO_GENERATE_THREADS") or max(1, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(n)
    _threads_set = True


# --- loading -----------------------------------------------------------------------------------------

def load(base_model_id: int, version_id: int | None) -> Loaded:
    """The base model, or a version rebuilt through its lineage, in eval mode on the device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from a worker
    with session_scope() as db:
        base = db.get(BaseModel, base_model_id)
        if base is None:
            raise UserFacingError(f"base model {base_model_id} no longer exists (studio models list).")
        versions = lineage.chain(db, version_id) if version_id is not None else []
        if version_id is not None and not versions:
            raise UserFacingError(f"version {version_id} no longer exists (studio versions list).")
        db.expunge_all()
    _check_files(base, versions)
    version = versions[-1] if versions else None
    tokenizer = AutoTokenizer.from_pretrained(lineage.artifact(version) if version else base.path,
                                              **tokenizer_code_kwargs(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {"dtype": _dtype(), **model_code_kwargs(base)}
    if version is not None and version.config.get("task") == "seq_cls":
        from worker.recipes.seq_cls import load_classifier

        labels = list(version.config["labels"])
        model = lineage.load_chain(load_classifier(base.path, labels, tokenizer, **kwargs), versions, last="inference")
        return Loaded(model.to(_device()).eval(), tokenizer, "seq_cls", labels)
    model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    if versions:
        model = lineage.load_chain(model, versions, last="inference")
    return Loaded(model.to(_device()).eval(), tokenizer, "causal_lm")


def _check_files(base: BaseModel, versions: list) -> None:
    """Say which files are gone before transformers says it in its own words."""
    from pathlib import Path

    if not Path(base.path).exists():
        raise UserFacingError(f"the files of base model {base.name!r} are missing ({base.path}); re-import it "
                              "(studio models import).")
    for v in versions:
        path = lineage.artifact(v) if v.artifacts.get("adapter") else None
        if path is None or not path.exists():
            raise UserFacingError(f"the files of version {v.id} ({v.name}) are missing"
                                  f"{f' ({path})' if path else ''}: they were deleted or moved, so it cannot be "
                                  "loaded. Train it again, or pick another version.")


# --- prompts -----------------------------------------------------------------------------------------

def fallback_render(messages: list[dict]) -> str:
    """For a tokenizer without a chat template: ``role: content`` lines, as the studio's preview shows
    such rows (studio.datasets.tokens.render_row), then the assistant's cue."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def messages_of(prompt: str, mode: str) -> list[dict] | None:
    """The conversation a row asks for (None for a raw continuation)."""
    if mode == "raw":
        return None
    if mode == "messages":
        return json.loads(prompt)
    return [{"role": "user", "content": prompt}]


def encode(tokenizer, prompt: str, mode: str) -> dict:
    """Input ids for the prompt: through the tokenizer's chat template, its fallback, or as raw text."""
    messages = messages_of(prompt, mode)
    if messages is not None and tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)
    text = prompt if messages is None else fallback_render(messages)
    return tokenizer(text, return_tensors="pt")


def generate_kwargs(settings: dict, tokenizer) -> dict:
    """transformers' generate arguments for the canonical settings (temperature 0 means greedy)."""
    sample = float(settings.get("temperature", 0)) > 0
    kwargs = {"max_new_tokens": int(settings["max_new_tokens"]), "do_sample": sample,
              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    if sample:
        kwargs.update(temperature=float(settings["temperature"]), top_p=float(settings.get("top_p", 1.0)), top_k=0)
    return kwargs


# --- the row -----------------------------------------------------------------------------------------

def claim(generation_id: int, worker_id: str) -> bool:
    """queued -> running in one conditional UPDATE; False when another delivery got there first."""
    with session_scope() as db:
        n = db.execute(update(Generation).where(Generation.id == generation_id, Generation.state == GenerationState.queued)
                       .values(state=GenerationState.running.value, worker_id=worker_id, output="", error=None, updated_at=utcnow())
                       .execution_options(synchronize_session=False)).rowcount
    return n == 1


def write(generation_id: int, worker_id: str, **values) -> None:
    """Update the row while this worker still holds it (a stale worker's late writes are dropped)."""
    with session_scope() as db:
        db.execute(update(Generation).where(Generation.id == generation_id, Generation.worker_id == worker_id,
                                            Generation.state == GenerationState.running)
                   .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))


def run_generation(generation_id: int, worker_id: str = WORKER_ID) -> str:
    """Claim and run one generation to its end. Returns what happened (for logs and tests)."""
    if not claim(generation_id, worker_id):
        log.info("generation %s: not claimed (done, running elsewhere, or gone)", generation_id)
        return "skipped"
    with session_scope() as db:
        row = db.get(Generation, generation_id)
        base_id, version_id, prompt, settings = row.base_model_id, row.version_id, row.prompt, dict(row.settings)
        # time in the queue before this worker took it: part of what the person waits for the first token
        queued_ms = max(0.0, (utcnow() - row.created_at.replace(tzinfo=None)).total_seconds() * 1000)
    try:
        _set_threads()
        start = time.perf_counter()
        loaded = CACHE.get((base_id, version_id), lambda: load(base_id, version_id))
        load_s = time.perf_counter() - start
        if loaded.task == "seq_cls":
            output, stats = classify(loaded, prompt, settings.get("mode", "chat"))
        else:
            output, stats = stream(loaded, prompt, settings,
                                   lambda text: write(generation_id, worker_id, output=text))
        stats["load_s"] = round(load_s, 3)
        stats["queued_ms"] = round(queued_ms, 1)
        if stats.get("ttft_ms") is not None:  # from the click, as the person experiences it
            stats["first_token_ms"] = round(queued_ms + 1000 * load_s + stats["ttft_ms"], 1)
        write(generation_id, worker_id, state=GenerationState.done.value, output=output, new_tokens=stats.pop("new_tokens"),
              ms_per_token=stats.pop("ms_per_token"), settings={**settings, "result": stats})
        return GenerationState.done.value
    except Exception as e:
        log.exception("generation %s failed", generation_id)
        write(generation_id, worker_id, state=GenerationState.failed.value, error=humanize(e).replace(" The log below has the details.", ""))
        return GenerationState.failed.value


def classify(loaded: Loaded, prompt: str, mode: str) -> tuple[str, dict]:
    """The predicted label; the probabilities of every label go into the stats."""
    import torch

    text = prompt if mode != "messages" else "\n".join(m["content"] for m in json.loads(prompt))
    enc = loaded.tokenizer(text, return_tensors="pt", truncation=True).to(loaded.model.device)
    start = time.perf_counter()
    with torch.no_grad():
        probs = torch.softmax(loaded.model(**enc).logits.float()[0], -1).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    return loaded.labels[best], {"new_tokens": 0, "ms_per_token": None, "forward_ms": round(1000 * (time.perf_counter() - start), 2),
                                 "probabilities": {label: round(p, 6) for label, p in zip(loaded.labels, probs)}}


def stream(loaded: Loaded, prompt: str, settings: dict, flush) -> tuple[str, dict]:
    """Generate in a thread while this one relays the growing text to ``flush`` every FLUSH_S seconds.

    Returns the final text (decoded from the generated ids, so it is exactly what a non-streamed
    ``generate`` gives) and the timings: ms per new token counts decoding only (from the first new
    token to the last), the prompt's processing shows as time to first token."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    enc = encode(tok, prompt, settings.get("mode", "chat")).to(model.device)
    streamer = timed_streamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
    result: dict = {}

    def work():
        try:
            torch.manual_seed(int(settings.get("seed", 0)))
            with torch.no_grad():
                result["ids"] = model.generate(**enc, **generate_kwargs(settings, tok), streamer=streamer)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = e
            streamer.end()

    start = time.perf_counter()
    thread = threading.Thread(target=work, name="generate", daemon=True)
    thread.start()
    text, last = "", time.perf_counter()
    for piece in streamer:
        text += piece
        if time.perf_counter() - last >= FLUSH_S:
            flush(text)
            last = time.perf_counter()
    thread.join()
    if "error" in result:
        raise result["error"]
    new_ids = result["ids"][0, enc["input_ids"].shape[1]:]
    n, times = len(new_ids), streamer.token_times
    decode_ms = 1000 * (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    if decode_ms is None and n:  # one token (or none streamed): its whole time, prefill included, is the figure
        decode_ms = 1000 * (time.perf_counter() - start) / n
    return tok.decode(new_ids, skip_special_tokens=True), {
        "new_tokens": n, "ms_per_token": round(decode_ms, 3) if decode_ms is not None else None,
        "ttft_ms": round(1000 * (times[0] - start), 2) if times else None,
        "prompt_tokens": int(enc["input_ids"].shape[1]), "device": str(model.device)}


@functools.cache
def _timed_streamer_class():
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        """A TextIteratorStreamer that also notes when each new token arrived (the first ``put`` is the prompt)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.token_times: list[float] = []
            self._prompt_seen = False

        def put(self, value):
            if self._prompt_seen:
                self.token_times.append(time.perf_counter())
            self._prompt_seen = True
            super().put(value)

    return TimedStreamer


def timed_streamer(*args, **kwargs):
    """A streamer that notes token times; its class is built lazily (transformers only loads when generating)."""
    return _timed_streamer_class()(*args, **kwargs)
