"""`studio votes`: the preference loop from the command line: judge two generations, list the votes, build the
preference data set from them, train DPO from the preferred version (studio/votes.py)."""
from __future__ import annotations

import sys

from studio import votes
from studio.cli.common import emit
from studio.jobspec import parse_set_args


def register(sub, add, group) -> None:
    g = group("votes", "preference votes between two answers, and the DPO data set they make")
    sp = add(g, "add", cmd_votes_add, "judge two finished generations of the same prompt (ids from "
             "studio versions generate --json): which answer is better")
    sp.add_argument("a", type=int, metavar="GENERATION_A", help="answer A")
    sp.add_argument("b", type=int, metavar="GENERATION_B", help="answer B")
    sp.add_argument("--winner", required=True, help="a (A is better), b (B is better), tie, or bad (both bad)")
    add(g, "list", cmd_votes_list, "the votes so far, newest first, and the pairs they make")
    sp = add(g, "dataset", cmd_votes_dataset, "register the votes' pairs as a preference data set (prompt, chosen, "
             "rejected) with their provenance")
    sp.add_argument("--name", help=f"the data set's name (default: {votes.KIND!r})")
    sp = add(g, "train-dpo", cmd_votes_train, "queue DPO on the votes' data set from the version that won most votes")
    sp.add_argument("--dataset", type=int, help="a data set built from votes (default: build one from the votes now)")
    sp.add_argument("--name", help="the name of the data set built now")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training setting, as for studio train")


def cmd_votes_add(args) -> None:
    vote = votes.record(args.a, args.b, args.winner, source="cli")
    emit(args, vote, f"vote {vote['id']}: {votes.WINNERS[vote['winner']]} "
                     f"(A {vote['a']['model']}, B {vote['b']['model']})")


def cmd_votes_list(args) -> None:
    rows, summary = votes.list_votes(), votes.summary()
    lines = [f"vote {v['id']} [{v['source']}{', blind' if v['blind'] else ''}] {votes.WINNERS[v['winner']]}: "
             f"A {v['a']['model']} · B {v['b']['model']} · {v['prompt'][:60]!r}" for v in rows]
    emit(args, {"votes": rows, "summary": summary}, "\n".join([*lines, votes.summary_line(summary)]))


def cmd_votes_dataset(args) -> None:
    built = votes.build_dataset(name=args.name)
    emit(args, built, built["message"])


def cmd_votes_train(args) -> None:
    out = votes.train_dpo(args.dataset, name=args.name, settings=parse_set_args(args.set or []))
    if not args.json:
        print(out["message"], file=sys.stderr)
    emit(args, out, f"job {out['job']['id']} {out['job']['state']}")
