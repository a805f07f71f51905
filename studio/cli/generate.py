"""`studio versions generate`: queue prompts on the interactive queue, wait with a progress line on
stderr, print the outputs (or one JSON object with --json)."""
from __future__ import annotations

import sys
import time

from models_db import GenerationState
from studio import generations
from studio.cli.common import CliError, emit


def register(g, add) -> None:
    """`studio versions generate ID|base:MODEL ... --prompt TEXT [--prompt ...]`."""
    sp = add(g, "generate", run_generate, "run prompts through versions or base models (needs a worker on the "
             "interactive queue: studio serve starts one, or studio worker --queues interactive)")
    sp.add_argument("ref", metavar="ID|base:MODEL", nargs="+", help="one or more versions or base models")
    sp.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    sp.add_argument("--max-new-tokens", type=int, default=128)
    sp.add_argument("--temperature", type=float, default=0.0, help="0 (the default) is greedy")
    sp.add_argument("--top-p", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--timeout", type=float, default=600, help="seconds to wait for the outputs")


def run_generate(args) -> None:
    """Queue the prompts for every model, wait for them, print the outputs."""
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                "seed": args.seed}
    rows = generations.request(args.ref, args.prompt, settings)
    done = wait(rows, args.timeout)
    for row, first in zip(done, rows):
        row.update(model=first["model"], ref=first["ref"])
    failed = [r for r in done if r["state"] != GenerationState.done]
    text = "\n\n".join(f"== {r['model']} · prompt {i % len(args.prompt) + 1}"
                       + (f" · {r['ms_per_token']:.1f} ms/token" if r.get("ms_per_token") else "")
                       + f"\n{generations.display(r)}" for i, r in enumerate(done))
    emit(args, {"generations": done}, text)
    if failed:
        raise CliError(f"{len(failed)} of {len(done)} generation(s) did not finish: "
                       + "; ".join(f"#{r['id']}: {r.get('error') or r.get('note') or r['state']}" for r in failed[:3]))


def wait(rows: list[dict], timeout: float, poll: float = 0.5) -> list[dict]:
    """Poll until every row is done or failed (or ``timeout``), drawing one progress line on stderr."""
    ids, end, said, last = [r["id"] for r in rows], time.monotonic() + timeout, "", ""
    while True:
        now = generations.status(ids)
        finished = sum(r["state"] in (*generations.FINISHED, generations.GONE) for r in now)
        chars = sum(len(r.get("output") or "") for r in now)
        note = next((r["note"] for r in now if r.get("note")), "")
        line = f"{finished}/{len(ids)} finished, {chars} characters so far"
        if line != last:  # one line, redrawn only when it changes
            print(f"\r{line}".ljust(60), end="", file=sys.stderr, flush=True)
            last = line
        if note and note != said:
            print(f"\n{note}", file=sys.stderr)
            said = note
        if finished == len(ids) or time.monotonic() > end:
            print(file=sys.stderr)
            return now
        time.sleep(poll)
