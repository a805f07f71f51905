"""The compare view's "Same prompts, side by side": prompts typed (one per line) or sampled from the
first compared version's eval split, run through every compared version (and optionally the base)
with shared settings; a grid with one column per model fills as the interactive worker streams the
outputs in. Outputs are cached per model, prompt and settings (studio.generations)."""
from __future__ import annotations

import html
import random

import gradio as gr

from models_db import GenerationState
from studio import generations, votes
from studio.tab_state import friendly

POLL_S = 0.6
SEP = " ⏎ "  # a newline inside a prompt, shown on its one line


def _line(prompt: str | list[dict]) -> str:
    """A prompt on one line of the textbox (a conversation shows its last user turn)."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    return text.replace("\n", SEP)


@friendly
def sample(compared: list | None, n) -> tuple[str, list[dict], str]:
    """Fill the prompts box with ``n`` prompts from the first compared version's data set."""
    if not compared:
        raise gr.Error("Pick the versions to compare first: prompts are sampled from the first one's data set.")
    picked, where = generations.sample_prompts(int(compared[0]), int(n if n is not None else 1))
    items = [{"prompt": p.prompt, "reference": p.reference, "raw": p.raw} for p in picked]
    return "\n".join(_line(p.prompt) for p in picked), items, f"{where}; edit them or run as they are."


def prompts_of(text: str, sampled: list[dict] | None) -> tuple[list, list[str], bool]:
    """(prompts, references, raw) to run: the sampled ones while the box still shows them, else its lines."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if sampled and lines == [_line(s["prompt"]).strip() for s in sampled]:
        return [s["prompt"] for s in sampled], [s["reference"] for s in sampled], all(s["raw"] for s in sampled)
    return [line.replace(SEP, "\n") for line in lines], [], False


@friendly
def run(compared: list | None, include_base: bool, text: str, sampled: list | None, max_new_tokens, temperature,
        top_p, seed):
    """Queue every prompt for every compared version (and the base); the grid fills as outputs arrive."""
    ids = [str(i) for i in (compared or [])]
    if len(ids) < 2:
        raise gr.Error("Pick 2 to 4 versions to compare first.")
    prompts, references, raw = prompts_of(text, sampled)
    if not prompts:
        raise gr.Error("Type prompts (one per line) or sample some from the eval split.")
    refs = ids + (list(dict.fromkeys(generations.base_ref_of(i) for i in ids)) if include_base else [])
    rows = generations.request(refs, prompts, {"max_new_tokens": max_new_tokens, "temperature": temperature,
                                               "top_p": top_p, "seed": seed}, raw=raw)
    n = len(prompts)
    grid = {"columns": [rows[c * n]["model"] for c in range(len(refs))],
            "prompts": [_line(p) for p in prompts], "references": references,
            "ids": [[rows[c * n + p]["id"] for c in range(len(refs))] for p in range(n)]}
    table, finished = grid_html(grid)
    return grid, table, gr.Timer(active=not finished)


def poll(grid: dict | None):
    """Timer tick: redraw the grid; stop once every cell finished."""
    if not grid:
        return gr.skip(), gr.Timer(active=False)
    table, finished = grid_html(grid)
    return table, gr.Timer(active=not finished)


def _cell(row: dict) -> str:
    state = row["state"]
    if state == GenerationState.done:
        meta = (f"{row['ms_per_token']:.1f} ms/token · {row['new_tokens']} tokens" if row.get("ms_per_token")
                else "label" if row.get("probabilities") else f"{row['new_tokens']} tokens")
    elif state in (GenerationState.failed, generations.GONE):
        meta = "failed"
    else:
        meta = row["note"] or ("writing…" if state == GenerationState.running else "queued")
    body = html.escape(generations.display(row)) + ("<span class='caret'>▍</span>" if state == GenerationState.running else "")
    return f"<td class='sbs-{state}'><div class='out'>{body}</div><div class='sub'>{html.escape(meta)}</div></td>"


def grid_html(grid: dict) -> tuple[str, bool]:
    """The grid (prompt, reference, one column per model) and whether every cell finished."""
    flat = [i for row in grid["ids"] for i in row]
    by_id = {r["id"]: r for r in generations.status(flat)}
    refs = grid.get("references") or []
    head = "<th>prompt</th>" + ("<th>reference</th>" if refs else "") + "".join(
        f"<th>{html.escape(c)}</th>" for c in grid["columns"])
    body = ""
    for p, ids in enumerate(grid["ids"]):
        ref = f"<td class='ref'>{html.escape(refs[p])}</td>" if refs else ""
        body += (f"<tr><th class='k prompt'>{html.escape(grid['prompts'][p])}</th>{ref}"
                 + "".join(_cell(by_id[i]) for i in ids) + "</tr>")
    finished = all(by_id[i]["state"] in (*generations.FINISHED, generations.GONE) for i in flat)
    done = sum(by_id[i]["state"] == GenerationState.done for i in flat)
    caption = f"<div class='cmp-title'>Same prompts, side by side: {done}/{len(flat)} outputs</div>"
    return f"{caption}<table class='cmp sbs' id='sbs-grid'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", \
        finished


# --- preference votes: judge two answers to one prompt, optionally blind (studio/votes.py) ---------------

CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "bad": "Both bad"}
_order = random.Random()  # which answer a blind pair shows first (tests seed it)


def _judgeable(row: dict) -> bool:
    return row["state"] == GenerationState.done and bool((row.get("output") or "").strip()) \
        and not row.get("probabilities")


def _answer_box(text: str, label: str) -> gr.Textbox:
    return gr.Textbox(value=text, label=label)


@friendly
def next_pair(grid: dict | None, blind: bool):
    """The next two finished answers to one prompt (columns of the grid) that the person has not judged yet:
    shown as A and B, in random order and without their versions when ``blind``."""
    if not grid:
        raise gr.Error("Run prompts side by side first; then judge their answers two at a time.")
    flat = [i for row in grid["ids"] for i in row]
    by_id = {r["id"]: r for r in generations.status(flat)}
    judged = votes.judged_pairs(flat)
    left = []
    for p, ids in enumerate(grid["ids"]):
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                a, b = by_id[ids[i]], by_id[ids[j]]
                if _judgeable(a) and _judgeable(b) and a["output"].strip() != b["output"].strip() \
                        and frozenset((a["id"], b["id"])) not in judged:
                    left.append((p, i, j))
    if not left:
        return (None, "Nothing left to judge here: every pair of finished, different answers has your vote "
                "(identical answers and unfinished ones are skipped).", _answer_box("", "Answer A"),
                _answer_box("", "Answer B"), votes.summary_line(), show_grid())
    p, i, j = left[0]
    if blind and _order.random() < 0.5:
        i, j = j, i
    cols = grid["columns"]
    duel = {"a": grid["ids"][p][i], "b": grid["ids"][p][j], "label_a": cols[i], "label_b": cols[j],
            "blind": bool(blind), "prompt": grid["prompts"][p]}
    hidden = " (versions hidden until you vote)" if blind else ""
    head = f"**Prompt:** {html.escape(duel['prompt'])}  \n{len(left)} pair{'s' if len(left) != 1 else ''} left to judge{hidden}."
    return (duel, head, _answer_box(by_id[duel["a"]]["output"], "Answer A" if blind else f"Answer A · {cols[i]}"),
            _answer_box(by_id[duel["b"]]["output"], "Answer B" if blind else f"Answer B · {cols[j]}"),
            votes.summary_line(), gr.HTML(visible=not blind))  # blind: the grid names every answer's version


@friendly
def vote(duel: dict | None, choice: str):
    """Record the person's judgement of the pair shown, then reveal which version wrote which answer."""
    if not duel:
        raise gr.Error("Click 'Next pair to judge' first: it shows two answers to vote on.")
    cast = votes.record(duel["a"], duel["b"], choice, blind=duel["blind"], source="side_by_side")
    a, b = duel["label_a"], duel["label_b"]
    verdict = {"a": f"you preferred A ({a})", "b": f"you preferred B ({b})", "tie": "a tie",
               "bad": "both bad"}[cast["winner"]]
    reveal = f"Vote #{cast['id']} recorded: {verdict}. A was **{a}**, B was **{b}**. Click 'Next pair to judge' to go on."
    return (None, reveal, _answer_box(cast["a"]["answer"], f"Answer A · {a}"),
            _answer_box(cast["b"]["answer"], f"Answer B · {b}"), votes.summary_line(), show_grid())


def show_grid() -> gr.HTML:
    """The grid again, once no blind pair is waiting for a vote (a blind pair hides it: it names the versions)."""
    return gr.HTML(visible=True)


@friendly
def build_votes(name: str | None):
    """Register the votes' pairs as a preference data set."""
    built = votes.build_dataset(name=(name or "").strip() or None)
    return built["message"] + ". Train on it with DPO below, or from the Train tab.", votes.summary_line()


@friendly
def train_votes(name: str | None):
    """Build the votes' data set (or reuse it) and queue DPO from the version that won most votes."""
    out = votes.train_dpo(name=(name or "").strip() or None)
    return out["message"] + " Follow it in the Jobs tab.", votes.summary_line()


def render(compared: gr.Dropdown) -> None:
    """The section, under the compare view; ``compared`` is the compare view's version picker."""
    sampled, grid = gr.State(None), gr.State(None)
    with gr.Accordion("Same prompts, side by side", open=True, elem_id="sbs-section"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                prompts = gr.Textbox(label="Prompts (one per line)", lines=4, elem_id="sbs-prompts",
                                     placeholder="What is 2 plus 1?\nWrite a haiku about autumn.")
                note = gr.Markdown(elem_id="sbs-note")
            with gr.Column(scale=2):
                # no Gradio minimum/maximum: its check names no field; studio.generations says which and the range
                with gr.Row():
                    n = gr.Number(value=3, precision=0, label="Prompts to sample", elem_id="sbs-n")
                    sample_btn = gr.Button("Sample from the eval split", elem_id="sbs-sample")
                with gr.Row():
                    max_new = gr.Number(value=64, precision=0, label="Max new tokens", elem_id="sbs-max-new")
                    temperature = gr.Number(value=0, label="Temperature (0: greedy)", elem_id="sbs-temperature")
                    top_p = gr.Number(value=1.0, label="Top-p", elem_id="sbs-top-p")
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="sbs-seed")
                include_base = gr.Checkbox(label="Also the base model", elem_id="sbs-base")
                run_btn = gr.Button("Run side by side", variant="primary", elem_id="sbs-run")
        table = gr.HTML(elem_id="sbs-grid-box")
    timer = gr.Timer(POLL_S, active=False)
    sample_btn.click(sample, [compared, n], [prompts, sampled, note])
    run_btn.click(run, [compared, include_base, prompts, sampled, max_new, temperature, top_p, seed],
                  [grid, table, timer])
    timer.tick(poll, grid, [table, timer], show_progress="hidden")
    render_votes(grid, table)
    run_btn.click(show_grid, None, table, show_progress="hidden")


def render_votes(grid: gr.State, table: gr.HTML) -> None:
    """The "Preference votes" section: judge the grid's answers two at a time, build the data set, train DPO."""
    duel = gr.State(None)
    with gr.Accordion("Preference votes", open=False, elem_id="votes-section"):
        with gr.Row():
            blind = gr.Checkbox(value=True, label="Blind: show the two answers in random order, versions hidden "
                                "until I vote", elem_id="votes-blind")
            next_btn = gr.Button("Next pair to judge", elem_id="votes-next")
        head = gr.Markdown(elem_id="votes-prompt")
        with gr.Row():
            answer_a = gr.Textbox(label="Answer A", lines=6, interactive=False, elem_id="votes-a")
            answer_b = gr.Textbox(label="Answer B", lines=6, interactive=False, elem_id="votes-b")
        with gr.Row():
            buttons = {key: gr.Button(text, elem_id=f"votes-{key}") for key, text in CHOICES.items()}
        count = gr.Markdown(elem_id="votes-count")
        with gr.Row():
            name = gr.Textbox(label="Data set name", value=votes.KIND, scale=2, elem_id="votes-name")
            build_btn = gr.Button("Build preference data set", scale=1, elem_id="votes-build")
            train_btn = gr.Button("Train DPO from the preferred version", variant="primary", scale=1,
                                  elem_id="votes-train")
        result = gr.Markdown(elem_id="votes-result")
        gr.Markdown("A pair is a vote that one answer is better; a tie or *both bad* is kept but makes no pair. "
                    "DPO starts from the version that won most votes, on the same base with the same method.",
                    elem_classes=["hint"])
    shown = [duel, head, answer_a, answer_b, count, table]
    next_btn.click(next_pair, [grid, blind], shown)
    for key, button in buttons.items():
        button.click(vote, [duel, gr.State(key)], shown)
    build_btn.click(build_votes, name, [result, count])
    train_btn.click(train_votes, name, [result, count])
