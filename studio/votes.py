"""The preference loop (no torch): a person judges two answers to the same prompt (side by side, optionally
blind, or an answer and its regenerated twin in the Playground); the votes become a preference data set
version (prompt / chosen / rejected) with its provenance; one call trains DPO on it from the version that won
most votes, through the normal submission path (it queues, routes and records its lineage like any job).

A vote's **A** is the answer shown first (left, or first in a blind pair's random order), **B** the other;
``winner`` is ``a`` or ``b`` (one pair: the winner's answer chosen, the other rejected), ``tie`` or ``bad``
(both bad): kept and counted, but they make no pair (DPO needs one answer better than the other). When a
person judges the same two answers to the same prompt again, the later vote replaces the earlier one.

Votes are private to whoever cast them, like the generations they judge (models_db.access.PRIVATE): a
member builds a data set from their own votes; an admin (and the embedded user) from everyone's.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from models_db import BaseModel, Dataset, Generation, GenerationState, ModelVersion, access, session_scope
from models_db.schema import PreferenceVote
from studio.datasets import versions as dataset_versions
from studio.jobspec import SpecError
from studio.settings import get_settings

WINNERS = {"a": "A is better", "b": "B is better", "tie": "a tie", "bad": "both bad"}
ALIASES = {"both_bad": "bad", "both bad": "bad", "both": "bad", "=": "tie"}
SOURCES = ("side_by_side", "playground", "cli")
KIND = "preference votes"  # provenance["kind"] of a data set built here
BASE_LABEL = "base · "  # the label of a base model's answer (studio.generations.resolve)
FILE_NAME = "preference-votes.jsonl"


class VoteError(SpecError):
    """A vote, build or training the studio refuses; the message says why and what to do."""


def parse_winner(winner: str) -> str:
    """``a``, ``b``, ``tie`` or ``bad`` (both bad), in any case; anything else is refused."""
    text = str(winner or "").strip().lower()
    text = ALIASES.get(text, text)
    if text not in WINNERS:
        raise VoteError(f"winner {winner!r}: choose a (A is better), b (B is better), tie, or bad (both bad)")
    return text


# --- recording a vote -----------------------------------------------------------------------------------

def record(generation_a: int, generation_b: int, winner: str, *, blind: bool = False,
           source: str = "side_by_side") -> dict:
    """Record that the person judged answer ``generation_a`` (A, shown first) against ``generation_b`` (B).

    Refused, with the reason: an answer the person cannot see (someone else's generation), one not finished
    or failed, a classifier's label, an empty answer, two answers to different prompts, the same answer twice
    or two identical answers (nothing to prefer)."""
    winner = parse_winner(winner)
    if source not in SOURCES:
        raise VoteError(f"source {source!r}: one of {', '.join(SOURCES)}")
    if int(generation_a) == int(generation_b):
        raise VoteError(f"A and B are the same answer (generation {generation_a}); pick two different answers")
    with session_scope() as db:
        a, b = _answer(db, generation_a, "A"), _answer(db, generation_b, "B")
        if (a.prompt, _mode(a)) != (b.prompt, _mode(b)):
            raise VoteError(f"answers A (generation {a.id}) and B (generation {b.id}) reply to different prompts; "
                            "a vote compares two answers to the same prompt")
        if a.output.strip() == b.output.strip():
            raise VoteError(f"answers A (generation {a.id}) and B (generation {b.id}) are identical: there is "
                            "nothing to prefer. Ask again with another seed or a temperature above 0.")
        vote = PreferenceVote(prompt=a.prompt, mode=_mode(a), generation_a_id=a.id, generation_b_id=b.id,
                              version_a_id=a.version_id, version_b_id=b.version_id, base_a_id=a.base_model_id,
                              base_b_id=b.base_model_id, label_a=_label(db, a), label_b=_label(db, b),
                              answer_a=a.output, answer_b=b.output, winner=winner, blind=bool(blind), source=source)
        db.add(vote)  # the owner is stamped from the viewer (models_db.access)
        db.flush()
        return vote_json(vote)


def find_answer(ref: str, prompt: str | list[dict], output: str) -> int:
    """The newest finished generation of model ``ref`` for ``prompt`` that wrote ``output`` (the Playground's
    last reply, which the chat keeps as text); refused when the person has none on record."""
    from studio import generations

    text, _ = generations.normalize_prompt(prompt)
    with session_scope() as db:
        model = generations.resolve(db, ref)
        which = Generation.version_id == model.version_id if model.version_id is not None else \
            (Generation.version_id.is_(None)) & (Generation.base_model_id == model.base_model_id)
        found = db.scalar(select(Generation.id).where(which, Generation.prompt == text, Generation.output == output,
                                                      Generation.state == GenerationState.done)
                          .order_by(Generation.id.desc()).limit(1))
    if found is None:
        raise VoteError("the last reply is no longer on record (its version was deleted, or the model was changed "
                        "since); send the message again, then ask for another answer")
    return found


def _answer(db, generation_id, side: str) -> Generation:
    """The generation shown as ``side``, if the person may judge it."""
    g = db.get(Generation, int(generation_id))
    if g is None:
        raise VoteError(access.hidden_reason(db, Generation, int(generation_id))
                        or f"answer {side}: generation {generation_id} does not exist")
    if g.state == GenerationState.failed:
        raise VoteError(f"answer {side} (generation {g.id}) failed ({g.error}); ask again, then vote")
    if g.state != GenerationState.done:
        raise VoteError(f"answer {side} (generation {g.id}) is still being written; vote once it has finished")
    if ((g.settings or {}).get("result") or {}).get("probabilities"):
        raise VoteError(f"answer {side} (generation {g.id}) is a classifier's label; preference votes judge "
                        "written answers of a language model")
    if not g.output.strip():
        raise VoteError(f"answer {side} (generation {g.id}) is empty: nothing to judge. Ask again, e.g. with more "
                        "max new tokens")
    return g


def _mode(g: Generation) -> str:
    return (g.settings or {}).get("mode", "chat")


def _label(db, g: Generation) -> str:
    if g.version_id is not None:
        v = db.get(ModelVersion, g.version_id)
        return f"#{v.id} {v.name}" if v else f"#{g.version_id}"
    row = db.get(BaseModel, g.base_model_id)
    return f"{BASE_LABEL}{row.name if row else g.base_model_id}"


def prompt_text(prompt: str, mode: str) -> str:
    """The prompt on one line as a person reads it (a conversation: its last user turn)."""
    if mode == "messages":
        try:
            return json.loads(prompt)[-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return prompt
    return prompt


def vote_json(v: PreferenceVote) -> dict:
    """A vote as ``studio votes list --json`` shows it."""
    return {"id": v.id, "prompt": prompt_text(v.prompt, v.mode), "mode": v.mode, "winner": v.winner,
            "blind": v.blind, "source": v.source,
            "a": {"generation_id": v.generation_a_id, "version_id": v.version_a_id, "model": v.label_a,
                  "answer": v.answer_a},
            "b": {"generation_id": v.generation_b_id, "version_id": v.version_b_id, "model": v.label_b,
                  "answer": v.answer_b},
            "created_at": v.created_at.isoformat() if v.created_at else None}


def list_votes(limit: int = 500) -> list[dict]:
    """The votes the person may see, newest first."""
    with session_scope() as db:
        rows = db.scalars(select(PreferenceVote).order_by(PreferenceVote.id.desc()).limit(limit))
        return [vote_json(v) for v in rows]


def judged_pairs(generation_ids: list[int]) -> set[frozenset]:
    """The pairs among ``generation_ids`` the person acting has already voted on (their own votes only: an
    admin judges alice's pairs for themself)."""
    ids = [int(i) for i in generation_ids]
    if not ids:
        return set()
    viewer = access.current()
    mine = PreferenceVote.owner_id == viewer.id if isinstance(viewer, access.Viewer) else \
        PreferenceVote.owner_id.is_(None)
    with session_scope() as db:
        rows = db.execute(select(PreferenceVote.generation_a_id, PreferenceVote.generation_b_id).where(
            mine, PreferenceVote.generation_a_id.in_(ids), PreferenceVote.generation_b_id.in_(ids)))
        return {frozenset(r) for r in rows}


# --- from votes to pairs -------------------------------------------------------------------------------

@dataclass
class Pair:
    """One preference row and the votes behind it."""
    prompt: str
    mode: str
    chosen: str
    rejected: str
    votes: list[int] = field(default_factory=list)

    def row(self) -> dict:
        prompt = json.loads(self.prompt) if self.mode == "messages" else self.prompt
        return {"prompt": prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass
class Tally:
    """What the visible votes make: the pairs, what was left out, and each model's wins and losses."""
    pairs: list[Pair]
    votes: int  # every visible vote
    ties: int
    both_bad: int
    replaced: int  # earlier votes on the same two answers, replaced by the later one
    blind: int  # decisive votes cast blind
    wins: Counter = field(default_factory=Counter)  # ref -> decisive votes won against another model
    losses: Counter = field(default_factory=Counter)
    played: Counter = field(default_factory=Counter)  # ref -> decisive votes with an answer of it (one per vote)
    labels: dict = field(default_factory=dict)  # ref -> label
    prompts: list[str] = field(default_factory=list)


def _ref(version_id: int | None, base_id: int, label: str) -> str | None:
    """A model as :func:`studio.generations.resolve` reads it; None for a version deleted since the vote."""
    if version_id is not None:
        return str(version_id)
    return f"base:{base_id}" if label.startswith(BASE_LABEL) else None


def tally(db) -> Tally:
    """Count the visible votes: the latest vote per person on the same two answers counts; a/b votes make pairs
    (identical pairs from several votes are one row, with every vote id)."""
    votes = list(db.scalars(select(PreferenceVote).order_by(PreferenceVote.id)))
    latest: dict[tuple, PreferenceVote] = {}
    for v in votes:
        latest[(v.owner_id, v.prompt, v.mode, frozenset((v.answer_a.strip(), v.answer_b.strip())))] = v
    counted = sorted(latest.values(), key=lambda v: v.id)
    t = Tally([], len(votes), sum(v.winner == "tie" for v in counted), sum(v.winner == "bad" for v in counted),
              len(votes) - len(counted), 0)
    rows: dict[tuple, Pair] = {}
    for v in counted:
        if v.winner not in ("a", "b"):
            continue
        sides = [(v.answer_a, _ref(v.version_a_id, v.base_a_id, v.label_a), v.label_a),
                 (v.answer_b, _ref(v.version_b_id, v.base_b_id, v.label_b), v.label_b)]
        (chosen, win_ref, win_label), (rejected, lose_ref, lose_label) = sides if v.winner == "a" else sides[::-1]
        key = (v.prompt, v.mode, chosen.strip(), rejected.strip())
        if key not in rows:
            rows[key] = Pair(v.prompt, v.mode, chosen, rejected)
        rows[key].votes.append(v.id)
        t.blind += v.blind
        for ref, label in {win_ref: win_label, lose_ref: lose_label}.items():
            if ref is not None:
                t.played[ref] += 1
                t.labels[ref] = label
        if win_ref != lose_ref:  # two answers of one model (a Playground regenerate) say no model is better
            if win_ref is not None:
                t.wins[win_ref] += 1
            if lose_ref is not None:
                t.losses[lose_ref] += 1
        text = prompt_text(v.prompt, v.mode)
        if text not in t.prompts:
            t.prompts.append(text)
    t.pairs = list(rows.values())
    return t


def preferred(t: Tally) -> dict | None:
    """The model that won most decisive votes against another model (ties: the higher share of those votes
    won, then the more pairs with its answers, then the newer version), with a sentence saying why; with only
    answers of one model judged against each other (Playground regenerates), that model. None when no pair's
    model is still on record."""
    refs = set(t.played)
    if not refs:
        return None

    def rank(ref: str):
        against = t.wins[ref] + t.losses[ref]
        return (t.wins[ref], t.wins[ref] / against if against else 0.0, t.played[ref], ref.isdigit(),
                int(ref) if ref.isdigit() else 0)

    best = max(refs, key=rank)
    against = t.wins[best] + t.losses[best]
    if against:
        others = sorted((r for r in refs if r != best and t.wins[r] + t.losses[r]), key=rank, reverse=True)
        rest = "; ".join(f"{t.labels[r]} won {t.wins[r]}" for r in others[:3])
        why = (f"{t.labels[best]} won {t.wins[best]} of the {against} decisive vote{'s' if against != 1 else ''} "
               f"against another model{f' ({rest})' if rest else ''}")
    else:
        why = (f"no vote compared two models; {t.labels[best]} wrote the answers of {t.played[best]} "
               f"pair{'s' if t.played[best] != 1 else ''}, more than any other")
    return {"ref": best, "label": t.labels[best], "wins": t.wins[best], "votes": t.played[best], "why": why}


def summary() -> dict:
    """Counts for the UI and `studio votes list`: votes, pairs they make, ties, both bad, the preferred model."""
    with session_scope() as db:
        t = tally(db)
    return {"votes": t.votes, "pairs": len(t.pairs), "ties": t.ties, "both_bad": t.both_bad,
            "replaced": t.replaced, "preferred": preferred(t)}


def summary_line(s: dict | None = None) -> str:
    """The counts in one sentence."""
    s = s or summary()
    if not s["votes"]:
        return "No preference votes yet: judge two answers (A is better / B is better) to start a preference data set."
    best = f" Preferred so far: {s['preferred']['why']}." if s["preferred"] else ""
    return (f"{s['votes']} vote{'s' if s['votes'] != 1 else ''}: {s['pairs']} preference pair"
            f"{'s' if s['pairs'] != 1 else ''}, {s['ties']} tie{'s' if s['ties'] != 1 else ''}, "
            f"{s['both_bad']} both bad.{best}")


# --- a preference data set from the votes ----------------------------------------------------------------

def build_dataset(*, name: str | None = None) -> dict:
    """Register the visible votes' pairs as a preference data set version (the same pairs again reuse the
    version they made). Its stats keep the provenance: the votes, the prompts, each model's wins and losses,
    and the preferred model. Refused when no vote makes a pair."""
    with session_scope() as db:
        t = tally(db)
    if not t.pairs:
        made = (f" ({t.votes} vote{'s' if t.votes != 1 else ''} so far: {t.ties} tie(s), {t.both_bad} both bad, "
                "which make no pair)") if t.votes else ""
        raise VoteError(f"no usable votes yet{made}: a preference pair needs a vote that one answer is better. "
                        "Judge answers in the side-by-side view or the Playground (A is better / B is better), "
                        "then build again.")
    best = preferred(t)
    provenance = {
        "kind": KIND, "pairs": len(t.pairs), "votes": sorted(i for p in t.pairs for i in p.votes),
        "ties": t.ties, "both_bad": t.both_bad, "replaced": t.replaced, "blind_votes": t.blind,
        "rows": [{"row": i + 1, "votes": p.votes} for i, p in enumerate(t.pairs)],
        "versions": [{"ref": r, "label": t.labels[r], "wins": t.wins[r], "losses": t.losses[r], "pairs": t.played[r]}
                     for r in sorted(t.labels, key=lambda r: (-t.wins[r], r))],
        "prompts": t.prompts, "preferred": best,
    }
    with tempfile.TemporaryDirectory(dir=get_settings().path("tmp")) as tmp:
        path = Path(tmp) / FILE_NAME
        path.write_text("".join(json.dumps(p.row(), ensure_ascii=False) + "\n" for p in t.pairs), encoding="utf-8")
        ds, report, reused = dataset_versions.register(path, original_name=FILE_NAME, name=name or KIND,
                                                       format="preference")
    with session_scope() as db:
        row = db.get(Dataset, ds.id)
        if (row.stats or {}).get("provenance") != provenance:
            row.stats = {**(row.stats or {}), "provenance": provenance}
        out = dataset_versions.dataset_json(row)
    return {"dataset": out, "pairs": len(t.pairs), "reused": reused, "provenance": provenance,
            "message": f"data set #{out['id']} {'already holds' if reused else 'registered with'} {len(t.pairs)} "
                       f"preference pair{'s' if len(t.pairs) != 1 else ''} from {len(provenance['votes'])} "
                       f"vote{'s' if len(provenance['votes']) != 1 else ''}"}


def provenance_of(dataset_id: int) -> dict:
    """The provenance of a data set built from votes; refused for one that was not."""
    with session_scope() as db:
        ds = db.get(Dataset, int(dataset_id))
        if ds is None:
            raise VoteError(access.hidden_reason(db, Dataset, int(dataset_id))
                            or f"dataset {dataset_id} does not exist (studio dataset list)")
        prov = (ds.stats or {}).get("provenance") or {}
    if prov.get("kind") != KIND:
        raise VoteError(f"dataset {dataset_id} was not built from preference votes, so no version is preferred in "
                        f"it; train it with studio train --dataset {dataset_id} --objective dpo --from-version V")
    return prov


# --- DPO from the preferred version ----------------------------------------------------------------------

def train_dpo(dataset_id: int | None = None, *, name: str | None = None, settings: dict | None = None) -> dict:
    """Queue a DPO job on the votes' data set (``dataset_id``, or built now from the visible votes) from the
    model that won most votes in it: its version as ``--from-version`` (same base, same method), or its base
    model when the base won. Goes through ``operations.submit_train``: queued, routed, lineage recorded."""
    from studio import operations
    from studio.jobspec import build_train_spec

    if dataset_id is None:
        built = build_dataset(name=name)
        dataset_id, prov = built["dataset"]["id"], built["provenance"]
    else:
        prov = provenance_of(dataset_id)
    best = prov.get("preferred")
    if not best:
        raise VoteError(f"no vote in data set {dataset_id} compared two models still on record, so none is "
                        f"preferred; train it with studio train --dataset {dataset_id} --objective dpo")
    parent = None
    if best["ref"].startswith("base:"):
        model_id, method, start = int(best["ref"][5:]), "lora", f"base model {best['label'][len(BASE_LABEL):]}"
    else:
        with session_scope() as db:
            v = db.get(ModelVersion, int(best["ref"]))
            if v is None:
                raise VoteError(access.hidden_reason(db, ModelVersion, int(best["ref"]))
                                or f"version {best['ref']}, the one the votes preferred, was deleted; train with "
                                   f"studio train --dataset {dataset_id} --objective dpo --from-version V")
            model_id, method, parent, start = v.base_model_id, v.method, v.id, f"version #{v.id}"
    spec = build_train_spec(model_id=model_id, dataset_id=int(dataset_id), method=method, settings=settings or {},
                            parent_version_id=parent, objective="dpo")
    job, created = operations.submit_train(spec)
    return {"job": operations.job_json(job), "created": created, "dataset_id": int(dataset_id),
            "pairs": prov["pairs"], "preferred": best, "from_version": parent,
            "message": f"job #{job.id} {'queued' if created else 'already queued'}: DPO from {start} on data set "
                       f"#{dataset_id} ({prov['pairs']} pairs). Why {start}: {best['why']}."}
