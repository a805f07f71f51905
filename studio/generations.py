"""Generations from the studio side (no torch): ask for prompts to be run through versions or base
models, reuse what was already generated, poll the rows the interactive worker streams into, and
sample prompts from a version's data set.

A request is keyed by sha256(base model, version, prompt, canonical settings incl. seed): the same
request returns the same row (done: instantly; queued or running: the one in flight). A row nobody
touched for ``generation_stale_seconds`` is taken for lost (no worker on the interactive queue, or it
died) and sent again on the next request; polling says so meanwhile.

A generation is private to the person who asked (models_db.access filters the rows): a member's key is
scoped to them (``access.scoped_digest``), so the same request by two members makes a row each and
neither sees the other's prompt or output; an admin (and the embedded user) sees every row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from pathlib import Path

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models_db import (
    BaseModel,
    Dataset,
    Generation,
    ModelVersion,
    access,
    session_scope,
)
from models_db import GenerationState, queries as q
from models_db.schema import utcnow
from studio import celery_app
from studio.datasets.split import EVAL_FILE
from studio.jobspec import SpecError
from studio.settings import get_settings

log = logging.getLogger("studio")

# name -> (default, low, high, type): what a person may set; everything else is refused
SETTINGS = {"max_new_tokens": (128, 1, 4096, int), "temperature": (0.0, 0.0, 2.0, float),
            "top_p": (1.0, 0.01, 1.0, float), "seed": (0, 0, 2**31 - 1, int)}
MAX_PROMPTS, MAX_PROMPT_CHARS = 64, 20_000
FINISHED = tuple(GenerationState.finished())
GONE = "gone"  # shown for a generation whose row was deleted meanwhile (not a stored state)


class GenerationError(SpecError):
    """A generation request the studio refuses; the message says why and what to do."""


@dataclass(frozen=True)
class ModelRef:
    """A version (``version_id`` set) or a base model (``version_id`` None) to generate with."""
    base_model_id: int
    version_id: int | None
    label: str
    task: str = "causal_lm"

    @property
    def ref(self) -> str:
        return str(self.version_id) if self.version_id is not None else f"base:{self.base_model_id}"


def resolve(db: Session, ref: str | int) -> ModelRef:
    """``12``, ``#12`` or ``v:12`` (a version), ``base:NAME`` or ``base:ID`` (a base model)."""
    text = str(ref).strip()
    if text.startswith("base:"):
        base = q.model_by_ref(db, text[5:].strip())
        if base is None:
            raise GenerationError(f"base model {text[5:]!r} does not exist (studio models list)")
        return ModelRef(base.id, None, f"base · {base.name}")
    digits = text.removeprefix("v:").removeprefix("#")
    if not digits.isdigit():
        raise GenerationError(f"{text!r} is neither a version id (e.g. 12) nor a base model (base:NAME)")
    v = db.get(ModelVersion, int(digits))
    if v is None:
        raise GenerationError(f"version {digits} does not exist (studio versions list)")
    return ModelRef(v.base_model_id, v.id, f"#{v.id} {v.name}", v.config.get("task") or "causal_lm")


def canonical_settings(settings: dict | None) -> dict:
    """Every known setting with its default, type-checked and in range; unknown names are refused."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS) - {"mode"})
    if unknown:
        raise GenerationError(f"unknown generation setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    out = {}
    for name, (default, low, high, kind) in SETTINGS.items():
        raw = settings.get(name)
        try:
            value = kind(default if raw is None or raw == "" else raw)
        except (TypeError, ValueError):
            raise GenerationError(f"{name}: {raw!r} is not a number") from None
        if not low <= value <= high:
            raise GenerationError(f"{name} {value} is out of range: choose {low} to {high}")
        out[name] = round(value, 6) if kind is float else value
    return out


def normalize_prompt(prompt: str | list[dict], raw: bool = False) -> tuple[str, str]:
    """(stored prompt, mode): a user turn as text ("chat"), a conversation as JSON ("messages"), or
    text to continue without the chat template ("raw")."""
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                                 and isinstance(m.get("content"), str) for m in prompt):
            raise GenerationError("a conversation is a list of {role: system|user|assistant, content: text}")
        if prompt[-1]["role"] != "user":
            raise GenerationError("a conversation must end with the user's turn")
        if len(prompt) == 1:
            return normalize_prompt(prompt[0]["content"], raw)
        text, mode = json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt], ensure_ascii=False), "messages"
    else:
        text, mode = str(prompt), "raw" if raw else "chat"
    if not text.strip():
        raise GenerationError("a prompt is empty; type something")
    if len(text) > MAX_PROMPT_CHARS:
        raise GenerationError(f"a prompt is {len(text)} characters; keep it under {MAX_PROMPT_CHARS}")
    return text, mode


def cache_key(base_model_id: int, version_id: int | None, prompt: str, settings: dict) -> str:
    """sha256 of everything the output depends on, scoped to the member asking (models_db.access)."""
    blob = json.dumps({"base": base_model_id, "version": version_id, "prompt": prompt, "settings": settings},
                      sort_keys=True, ensure_ascii=False)
    return access.scoped_digest(hashlib.sha256(blob.encode()).hexdigest())


def request(model_refs: list[str | int], prompts: list[str | list[dict]], settings: dict | None = None, *,
            raw: bool = False) -> list[dict]:
    """Run every prompt through every model (refs as :func:`resolve` reads them). Returns one row per
    (model, prompt), model-major, as :func:`row_json`; only rows not cached already are sent."""
    if not model_refs:
        raise GenerationError("pick at least one version or base model")
    if not prompts:
        raise GenerationError("give at least one prompt")
    if len(prompts) > MAX_PROMPTS:
        raise GenerationError(f"{len(prompts)} prompts; at most {MAX_PROMPTS} at a time")
    s = canonical_settings(settings)
    items = [normalize_prompt(p, raw) for p in prompts]
    out, to_send = [], []
    with session_scope() as db:
        refs = [resolve(db, r) for r in model_refs]
    for ref in refs:
        for prompt, mode in items:
            row_settings = {**s, "mode": mode}
            row, must_send = _get_or_create(ref, prompt, row_settings)
            if must_send:
                to_send.append(row["id"])
            out.append({**row, "model": ref.label, "ref": ref.ref})
    for gid in to_send:
        send(gid)
    return out


def _get_or_create(ref: ModelRef, prompt: str, settings: dict) -> tuple[dict, bool]:
    """The row for this request and whether its task must be sent (new, failed before, or lost)."""
    key = cache_key(ref.base_model_id, ref.version_id, prompt, settings)
    stale = utcnow() - timedelta(seconds=get_settings().generation_stale_seconds)
    for _ in range(2):  # a concurrent request may insert the same key between our select and insert
        try:
            with session_scope() as db:
                row = db.scalar(select(Generation).where(Generation.cache_key == key))
                if row is None:  # the owner is stamped from the viewer (models_db.access)
                    row = Generation(cache_key=key, base_model_id=ref.base_model_id, version_id=ref.version_id,
                                     prompt=prompt, settings=settings, state=GenerationState.queued.value)
                    db.add(row)
                    db.flush()
                    return row_json(row), True
                if row.state == GenerationState.done:
                    return row_json(row), False
                if row.state == GenerationState.failed or row.updated_at < stale:
                    # retry a failure (the person may have fixed its cause); re-send a lost one
                    n = db.execute(update(Generation).where(Generation.id == row.id, Generation.state == row.state,
                                                            Generation.updated_at == row.updated_at)
                                   .values(state=GenerationState.queued.value, output="", error=None, worker_id=None, updated_at=utcnow())
                                   .execution_options(synchronize_session=False)).rowcount
                    db.refresh(row)
                    return row_json(row), n == 1
                return row_json(row), False
        except IntegrityError:
            continue
    raise GenerationError("could not store the generation request; try again")


def send(generation_id: int) -> bool:
    """Send the task to the interactive queue. With the broker down the row stays queued; the next
    request for it (after ``generation_stale_seconds``) sends it again."""
    from kombu.exceptions import OperationalError as BrokerUnreachable


    try:
        celery_app.enqueue("generate", generation_id, queue=get_settings().interactive_queue)
        return True
    except (BrokerUnreachable, OSError) as e:
        log.warning("generation %s is queued but could not be sent (%s)", generation_id, e)
        return False


def row_json(g: Generation, busy: bool = False) -> dict:
    """A generation as the UI and `--json` show it, with ``note`` when it seems stuck (``busy``: the
    interactive worker is alive, writing another generation)."""
    result = (g.settings or {}).get("result", {})
    return {"id": g.id, "state": g.state, "output": g.output, "error": g.error, "new_tokens": g.new_tokens,
            "ms_per_token": g.ms_per_token, "ttft_ms": result.get("ttft_ms"),
            "first_token_ms": result.get("first_token_ms"), "queued_ms": result.get("queued_ms"),
            "max_new_tokens": (g.settings or {}).get("max_new_tokens"),
            "stopped_at_limit": g.state == GenerationState.done and not result.get("probabilities")
            and bool((g.settings or {}).get("max_new_tokens")) and g.new_tokens >= g.settings["max_new_tokens"],
            "probabilities": result.get("probabilities"), "version_id": g.version_id,
            "base_model_id": g.base_model_id, "prompt": g.prompt, "mode": (g.settings or {}).get("mode", "chat"),
            "note": stuck_note(g, busy)}


def stuck_note(g: Generation, busy: bool = False) -> str:
    """Why a queued or running row has not moved for a while, and what to do; "" when it is fine."""
    if g.state in FINISHED or g.updated_at is None:
        return ""
    limit = get_settings().generation_stale_seconds
    idle = (utcnow() - g.updated_at).total_seconds()
    if idle < limit:
        return ""
    queue = get_settings().interactive_queue
    if g.state == GenerationState.queued and busy:
        return "waiting for the interactive worker to finish the generations before it"
    if g.state == GenerationState.queued:
        return (f"no worker has picked this up for {idle:.0f} s: start one on the {queue!r} queue "
                f"(studio worker --queues {queue}; studio serve starts one), then ask again")
    return (f"the worker stopped updating this {idle:.0f} s ago ({g.worker_id}); it was probably lost. "
            "Ask again to re-run it.")


def status(ids: list[int]) -> list[dict]:
    """The rows, in the order asked (a missing id gives state "gone", with whose it is when it is someone
    else's)."""
    ids = [int(i) for i in ids]
    fresh = utcnow() - timedelta(seconds=get_settings().generation_stale_seconds)
    with session_scope() as db:
        # is the interactive worker writing anyone's generation? (says nothing of whose, so unfiltered)
        busy = db.scalar(select(Generation.id).where(Generation.state == GenerationState.running, Generation.updated_at >= fresh)
                         .limit(1).execution_options(**{access.UNFILTERED: True})) is not None
        rows = {g.id: row_json(g, busy) for g in db.scalars(select(Generation).where(Generation.id.in_(ids)))}
        for i in set(ids) - set(rows):
            rows[i] = {"id": i, "state": GONE, "output": "", "note": "",
                       "error": access.hidden_reason(db, Generation, i) or "this generation was deleted"}
    return [rows[i] for i in ids]


def display(row: dict) -> str:
    """The answer as a person reads it: the text, a label with its probability, or why it failed."""
    if row["state"] in (GenerationState.failed, GONE):
        return f"⚠ {row.get('error') or 'failed'}"
    if row.get("probabilities"):
        p = row["probabilities"].get(row["output"])
        return f"{row['output']}" + (f" (p={p:.2f})" if p is not None else "")
    return row["output"]


def median_ms_per_token(db: Session, version_id: int, limit: int = 200) -> float | None:
    """Median decode latency over the version's latest finished generations (None if it has none).

    Everyone's generations count: the caller already holds the version (so may see it), and a latency
    says nothing about whose prompts produced it."""
    values = list(db.scalars(select(Generation.ms_per_token).where(
        Generation.version_id == version_id, Generation.state == GenerationState.done, Generation.ms_per_token.is_not(None))
        .order_by(Generation.id.desc()).limit(limit).execution_options(**{access.UNFILTERED: True})))
    return float(np.median(values)) if values else None


# --- prompts from a data set ------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampled:
    """A prompt taken from a data set row, and the row's own answer (to read beside the outputs)."""
    prompt: str | list[dict]
    reference: str
    raw: bool = False  # a plain-text row: continue the text, no chat template


def row_prompt(row: dict) -> Sampled | None:
    """The prompt part of a canonical row, per format; None when it has none."""
    if "messages" in row:  # instruction and chat: the conversation up to the last assistant turn
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
        head = msgs[:last]
        if not head or head[-1]["role"] != "user":
            return None
        ref = msgs[last]["content"] if last < len(msgs) else ""
        return Sampled(head[0]["content"] if len(head) == 1 else head, ref)
    if "chosen" in row:  # preference: the prompt, and the preferred answer
        return Sampled(row["prompt"], row["chosen"])
    if "completion" in row:  # feedback: the prompt, and the answer when it was rated desirable
        return Sampled(row["prompt"], row["completion"] if row["label"] else "")
    if "label" in row:  # classification: the text, and its label
        return Sampled(row["text"], str(row["label"]))
    if "text" in row:  # plain text: the first half (at most 40 words) to continue
        words = row["text"].split()
        if len(words) < 2:
            return None
        cut = min(max(1, len(words) // 2), 40)
        return Sampled(" ".join(words[:cut]), " ".join(words[cut:]), raw=True)
    return None


def sample_prompts(version_id: int, n: int, seed: int = 0) -> tuple[list[Sampled], str]:
    """``n`` prompts drawn from the version's data set eval split (its training rows when it has none),
    and a sentence saying where they came from."""
    if not 1 <= int(n) <= MAX_PROMPTS:
        raise GenerationError(f"sample 1 to {MAX_PROMPTS} prompts, not {n}")
    with session_scope() as db:
        v = db.get(ModelVersion, int(version_id))
        if v is None:
            raise GenerationError(f"version {version_id} does not exist (studio versions list)")
        ds = db.get(Dataset, v.dataset_id) if v.dataset_id else None
        if ds is None:
            raise GenerationError(f"version {version_id} has no data set on record to sample prompts from; type them")
        rows_path, name = get_settings().home_abs / ds.path, f"#{ds.id} {ds.name}"
    eval_path = rows_path.with_name(EVAL_FILE)
    path, where = (eval_path, f"the eval split of data set {name}") if eval_path.is_file() else \
        (rows_path, f"the training rows of data set {name} (it has no eval split)")
    if not path.is_file():
        raise GenerationError(f"the rows of data set {name} are missing ({path}); re-upload it")
    picked = _reservoir(path, int(n), seed)
    if not picked:
        raise GenerationError(f"no row of {where} has a prompt to sample")
    return picked, f"{len(picked)} prompt(s) from {where}"


def _reservoir(path: Path, n: int, seed: int, limit: int = 200_000) -> list[Sampled]:
    """``n`` rows chosen uniformly (by ``seed``) from the first ``limit`` rows, in file order."""
    rng, picked = random.Random(seed), []
    with open(path, encoding="utf-8") as f:
        seen = 0
        for line in islice(f, limit):
            item = row_prompt(json.loads(line)) if line.strip() else None
            if item is None:
                continue
            if len(picked) < n:
                picked.append((seen, item))
            else:
                j = rng.randint(0, seen)
                if j < n:
                    picked[j] = (seen, item)
            seen += 1
    return [item for _, item in sorted(picked, key=lambda p: p[0])]


def model_choices() -> list[tuple[str, str]]:
    """Every version, then every base model, as (label, ref) for a dropdown."""
    with session_scope() as db:
        out = [(f"#{v.id} {v.name} ({v.method})", str(v.id)) for v in q.list_versions(db)]
        out += [(f"base · {m.name}", f"base:{m.id}") for m in q.list_models(db)]
    return out


def base_ref_of(version_id: int) -> str:
    """The base model a version was trained from, as a ref."""
    with session_scope() as db:
        v = db.get(ModelVersion, int(version_id))
        base = db.get(BaseModel, v.base_model_id) if v else None
        if base is None:
            raise GenerationError(f"version {version_id} does not exist (studio versions list)")
        return f"base:{base.id}"
