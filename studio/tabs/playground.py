"""Playground tab: chat with any version (or a base model) through its chat template. Each reply is one
Generation row that the interactive worker streams into; a gr.Timer polls the row (no blocking
generator), so the UI process stays light. A classification version answers each message with its label."""
from __future__ import annotations

import random

import gradio as gr

from models_db import GenerationState, session_scope
from studio import generations, votes
from studio.tab_state import Shell, friendly

POLL_S = 0.4


def model_dropdown(current: str | None = None) -> gr.Dropdown:
    choices = generations.model_choices()
    refs = [c[1] for c in choices]
    return gr.Dropdown(choices=choices, value=current if current in refs else (refs[0] if refs else None))


def on_open(current, picked: bool = False):
    """The newest version when the tab opens, unless the person picked one (kept while it exists)."""
    return model_dropdown(current if picked else None)


def settings_of(max_new_tokens, temperature, top_p, seed) -> dict:
    return {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}


def shown(history: list[dict], reply: str | None = None) -> list[dict]:
    """What the chat box shows: the conversation, plus the reply being written."""
    out = [dict(m) for m in history]
    if reply is not None:
        out.append({"role": "assistant", "content": reply})
    return out


def stats_line(row: dict) -> str:
    """Tokens, decode latency and time to first token of a finished reply."""
    if row.get("probabilities"):
        probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["probabilities"].items(), key=lambda kv: -kv[1]))
        return f"Predicted **{row['output']}** · probabilities: {probs}"
    parts = [f"{row['new_tokens']} new tokens"]
    if row.get("ms_per_token"):
        parts.append(f"**{row['ms_per_token']:.1f} ms/token**")
    if row.get("first_token_ms") is not None:  # from the click: queue wait and model loading included
        waited = f", {row['queued_ms']:.0f} ms of it waiting for the worker" if row.get("queued_ms", 0) >= 1 else ""
        parts.append(f"first token {row['first_token_ms']:.0f} ms after sending{waited}")
    elif row.get("ttft_ms"):
        parts.append(f"first token after {row['ttft_ms']:.0f} ms")
    line = " · ".join(parts)
    if row.get("stopped_at_limit"):
        line += (f"  \n**Stopped at the {row['max_new_tokens']}-token limit**, not at its end: raise "
                 "*Max new tokens* to let the reply finish.")
    return line


@friendly
def send(ref: str | None, message: str, history: list | None, max_new_tokens, temperature, top_p, seed):
    """Queue the reply to ``message`` (the whole conversation is the prompt); the timer streams it in."""
    if not ref:
        raise gr.Error("Pick a version or a base model first.")
    if not (message or "").strip():
        raise gr.Error("Type a message first.")
    history = [*(history or []), {"role": "user", "content": message.strip()}]
    with session_scope() as db:
        task = generations.resolve(db, ref).task
    # a classifier labels each message on its own; a language model reads the whole conversation
    prompt = message.strip() if task == "seq_cls" else history
    [row] = generations.request([ref], [prompt], settings_of(max_new_tokens, temperature, top_p, seed))
    if row["state"] == GenerationState.done:  # asked before with the same settings: the cached reply
        history.append({"role": "assistant", "content": generations.display(row)})
        return shown(history), history, None, "", gr.Timer(active=False), stats_line(row) + " · cached"
    return (shown(history, "…"), history, row["id"], "", gr.Timer(active=True),
            "Waiting for the interactive worker…")


def poll(gen_id: int | None, history: list | None):
    """Timer tick: show the reply as it grows; once finished, add it to the conversation and stop."""
    if not gen_id:
        return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip()
    history = list(history or [])
    [row] = generations.status([gen_id])
    if row["state"] == GenerationState.done:
        history.append({"role": "assistant", "content": generations.display(row)})
        return shown(history), history, None, gr.Timer(active=False), stats_line(row)
    if row["state"] in (GenerationState.failed, generations.GONE):
        # the failed turn leaves the conversation, so the next message is not sent after it
        return (shown(history, generations.display(row)), history[:-1], None, gr.Timer(active=False),
                f"The reply failed: {row.get('error')}")
    what = "Writing…" if row["state"] == GenerationState.running else "Waiting for the interactive worker…"
    return shown(history, (row["output"] or "") + " ▍"), gr.skip(), gr.skip(), gr.skip(), row["note"] or what


@friendly
def regenerate(ref: str | None, history: list | None, max_new_tokens, temperature, top_p, seed):
    """Ask again for the last reply with a new seed, keeping the previous one as answer A; the new one (B)
    streams into the conversation, and the person votes which is better (studio.votes)."""
    history = list(history or [])
    if not ref:
        raise gr.Error("Pick a version or a base model first.")
    if not history or history[-1]["role"] != "assistant":
        raise gr.Error("Send a message and wait for its reply first: 'Another answer' asks again for the last reply.")
    if not float(temperature or 0) > 0:
        raise gr.Error("Temperature 0 is greedy: asking again gives the same answer. Raise the temperature "
                       "(e.g. 0.7) to get another answer to compare.")
    with session_scope() as db:
        if generations.resolve(db, ref).task == "seq_cls":
            raise gr.Error("A classifier answers with a label; preference votes judge written answers.")
    previous, prompt = history[-1], history[:-1]
    first = votes.find_answer(ref, prompt, previous["content"])  # the generation that wrote the last reply
    new_seed = random.randrange(1, 2**31 - 1)
    [row] = generations.request([ref], [prompt], settings_of(max_new_tokens, temperature, top_p, new_seed))
    pair = {"a": first, "b": row["id"]}
    note = (f"**Answer A** (the previous reply) is below; **answer B** (seed {new_seed}) is in the chat. "
            "Which is better?")
    rest = history[:-1]
    if row["state"] == GenerationState.done:
        rest = [*rest, {"role": "assistant", "content": generations.display(row)}]
        return (shown(rest), rest, None, gr.Timer(active=False), stats_line(row) + " · cached", pair,
                gr.Group(visible=True), previous["content"], note)
    return (shown(rest, "…"), rest, row["id"], gr.Timer(active=True), "Waiting for the interactive worker…", pair,
            gr.Group(visible=True), previous["content"], note)


@friendly
def vote(pair: dict | None, choice: str, history: list | None):
    """Record which of the two replies is better; the better one (B on a tie) stays in the conversation."""
    if not pair:
        raise gr.Error("Click 'Another answer' first: it keeps the last reply and asks for a second one to compare.")
    cast = votes.record(pair["a"], pair["b"], choice, source="playground")
    history = list(history or [])
    if cast["winner"] == "a" and history and history[-1]["role"] == "assistant":
        history[-1] = {"role": "assistant", "content": cast["a"]["answer"]}
    kept = "answer A stays in the conversation" if cast["winner"] == "a" else "answer B stays in the conversation"
    return (shown(history), history, None, gr.Group(visible=False),
            f"Vote #{cast['id']} recorded ({votes.WINNERS[cast['winner']]}); {kept}. {votes.summary_line()}")


def clear():
    return [], [], None, gr.Timer(active=False), ""


def render(shell: Shell) -> None:
    history, gen_id = gr.State([]), gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            model = gr.Dropdown(label="Version or base model", elem_id="playground-model")
            chat = gr.Chatbot(label="Chat", height=420, elem_id="playground-chat", buttons=["copy"])
            with gr.Row():
                message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                     elem_id="playground-message")
                send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="playground-send")
            stats = gr.Markdown(elem_id="playground-stats")
            again_btn = gr.Button("Another answer (keep this one and compare)", size="sm", elem_id="playground-again")
            with gr.Group(visible=False, elem_id="playground-vote") as vote_box:
                vote_note = gr.Markdown(elem_id="playground-vote-note")
                previous = gr.Textbox(label="Answer A (the previous reply)", lines=4, interactive=False,
                                      elem_id="playground-previous")
                with gr.Row():
                    vote_buttons = {key: gr.Button(text, size="sm", elem_id=f"playground-vote-{key}") for key, text in
                                    (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("bad", "Both bad"))}
            voted = gr.Markdown(elem_id="playground-voted")
        with gr.Column(scale=1):
            gr.Markdown("**Generation settings**")
            max_new = gr.Slider(1, 1024, value=128, step=1, label="Max new tokens", elem_id="playground-max-new")
            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature (0: greedy)",
                                    elem_id="playground-temperature")
            top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p", elem_id="playground-top-p")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="playground-seed")  # range: studio.generations
            clear_btn = gr.Button("New conversation", elem_id="playground-clear")
            gr.Markdown("Replies run on a worker consuming the `interactive` queue (`studio serve` starts one). "
                        "The same conversation with the same settings and seed is answered from the cache.",
                        elem_classes=["hint"])
    timer = gr.Timer(POLL_S, active=False)
    inputs = [model, message, history, max_new, temperature, top_p, seed]
    outputs = [chat, history, gen_id, message, timer, stats]
    send_btn.click(send, inputs, outputs)
    message.submit(send, inputs, outputs)
    timer.tick(poll, [gen_id, history], [chat, history, gen_id, timer, stats], show_progress="hidden")
    pair = gr.State(None)  # the two replies being compared: {"a": previous generation, "b": the new one}
    again_btn.click(regenerate, [model, history, max_new, temperature, top_p, seed],
                    [chat, history, gen_id, timer, stats, pair, vote_box, previous, vote_note])
    for key, button in vote_buttons.items():
        button.click(vote, [pair, gr.State(key), history], [chat, history, pair, vote_box, voted])
    for event in (clear_btn.click, chat.clear, model.change):  # a new conversation drops the comparison
        event(lambda: (None, gr.Group(visible=False)), None, [pair, vote_box], show_progress="hidden")
    clear_btn.click(clear, None, [chat, history, gen_id, timer, stats])
    chat.clear(clear, None, [chat, history, gen_id, timer, stats])  # the chat box's own bin button
    model.change(clear, None, [chat, history, gen_id, timer, stats])
    picked = gr.State(False)  # the person chose the model: opening the tab keeps it; else the newest version
    model.input(lambda: True, None, picked, show_progress="hidden")
    shell.on_select["playground"] = (on_open, [model, picked], [model])
