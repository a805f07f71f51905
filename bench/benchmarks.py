"""Benchmark: the demo model (SmolLM2-135M-Instruct) as it is, on a multiple-choice file of everyday facts and on
a small question/answer set, through the real ``evaluate`` job (lm-evaluation-harness inside), the
multiple-choice accuracy checked against an independent log-likelihood scoring done here with transformers alone;
then the facts pinned as a benchmark, a LoRA version trained on them (question -> right answer), and the
comparison it carries (its follow-up evaluations run here, as a worker would).

    .venv/bin/python bench/benchmarks.py [--home /tmp/bench-benchmarks]

Markdown goes to stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perfkit  # noqa: E402  after the path insert above

# Each choice is the whole answer sentence, the form a chat model answers in: scored as bare words ("Blue" as
# the first token of the assistant's turn) the demo model picked "Red" for the sky although its own reply says
# blue; a full sentence puts the choice where the model would put it (as HellaSwag-style continuations do).
FACT_SENTENCES = [
    ("What is the capital of France?", "The capital of France is {}.", ["Paris", "London", "Berlin", "Madrid"], 0),
    ("How many days are there in a week?", "There are {} days in a week.", ["five", "seven", "ten", "twelve"], 1),
    ("What colour is the sky on a clear day?", "The sky on a clear day is {}.", ["green", "red", "blue", "purple"], 2),
    ("Which animal says 'meow'?", "The animal that says 'meow' is the {}.", ["dog", "cow", "duck", "cat"], 3),
    ("What is 2 + 2?", "2 + 2 is {}.", ["4", "5", "22", "3"], 0),
    ("Which planet do we live on?", "We live on {}.", ["Mars", "Earth", "Jupiter", "Venus"], 1),
    ("What do bees make?", "Bees make {}.", ["milk", "silk", "honey", "wool"], 2),
    ("What is frozen water called?", "Frozen water is called {}.", ["steam", "sand", "glass", "ice"], 3),
    ("How many legs does a spider have?", "A spider has {} legs.", ["eight", "six", "four", "ten"], 0),
    ("What is the opposite of hot?", "The opposite of hot is {}.", ["warm", "cold", "loud", "tall"], 1),
    ("Which ocean is the largest?", "The largest ocean is the {} Ocean.", ["Atlantic", "Indian", "Pacific", "Arctic"], 2),
    ("What gas do plants take in from the air?", "Plants take in {} from the air.",
     ["oxygen", "helium", "hydrogen", "carbon dioxide"], 3),
    ("What is the capital of Japan?", "The capital of Japan is {}.", ["Tokyo", "Beijing", "Seoul", "Bangkok"], 0),
    ("How many hours are there in a day?", "There are {} hours in a day.", ["12", "24", "48", "60"], 1),
    ("What is the largest planet in the solar system?", "The largest planet in the solar system is {}.",
     ["Earth", "Mars", "Jupiter", "Mercury"], 2),
    ("Who wrote 'Romeo and Juliet'?", "'Romeo and Juliet' was written by {}.",
     ["Charles Dickens", "Jane Austen", "Mark Twain", "William Shakespeare"], 3),
    ("What is the chemical symbol for water?", "The chemical symbol for water is {}.", ["H2O", "CO2", "NaCl", "O2"], 0),
    ("How many continents are there?", "There are {} continents.", ["five", "seven", "nine", "eleven"], 1),
    ("What is the boiling point of water at sea level in Celsius?", "Water boils at {} degrees Celsius at sea level.",
     ["50", "75", "100", "150"], 2),
    ("Which is the closest star to Earth?", "The closest star to Earth is {}.", ["Sirius", "Polaris", "Vega", "the Sun"], 3),
    ("What is the capital of Italy?", "The capital of Italy is {}.", ["Rome", "Milan", "Naples", "Venice"], 0),
    ("How many sides does a triangle have?", "A triangle has {} sides.", ["two", "three", "four", "five"], 1),
    ("What colour are ripe bananas?", "Ripe bananas are {}.", ["blue", "red", "yellow", "black"], 2),
    ("Which season comes after winter?", "The season after winter is {}.", ["autumn", "spring", "summer", "winter"], 1),
]
FACTS = [(q, [sentence.format(c) for c in choices], answer) for q, sentence, choices, answer in FACT_SENTENCES]
SUMS = [(a, b) for a, b in ((2, 3), (4, 5), (10, 7), (6, 6), (12, 8), (9, 1), (15, 5), (20, 30))]


def independent(model_dir: str, rows: list[dict]) -> list[int]:
    """Each question's pick by summed log-probability of the choice after the chat-templated question, with
    transformers alone (no lm-eval)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    picks = []
    for r in rows:
        context = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                          add_generation_prompt=True)
        n = len(tok(context, add_special_tokens=False)["input_ids"])
        scores = []
        for choice in r["choices"]:
            ids = tok(context + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            scores.append(sum(logp[n - 1 + i, t].item() for i, t in enumerate(ids[n:])))
        picks.append(max(range(len(scores)), key=scores.__getitem__))
    return picks


def evaluate(model_id: int, dataset_id: int, home: Path) -> tuple[dict, float]:
    from models_db import session_scope
    from studio import evaluations

    job, _ = evaluations.submit_evaluate(None, dataset_id, base_model_id=model_id)
    started = time.perf_counter()
    perfkit.run_child(job.id, home / f"job-{job.id}.log")
    wall = time.perf_counter() - started
    perfkit.finished(job.id)
    with session_scope() as db:
        return evaluations.evaluation_json(evaluations.find(db, dataset_id, base_model_id=model_id), True), wall


def train_and_compare(model_id: int, mc_id: int, mc_rows: list[dict], home: Path) -> tuple[dict, int, float]:
    from sqlalchemy import select

    from models_db import Job, session_scope
    from studio import benchmarks, evidence

    with session_scope() as db:
        benchmarks.pin(db, model_id, mc_id)
    facts = [{"instruction": r["question"], "output": r["choices"][r["answer"]]} for r in mc_rows]
    facts_id, _ = perfkit.add_rows(home, "facts", facts)
    job_id = perfkit.submit(model_id, facts_id, "lora", {"max_steps": 40, "learning_rate": 2e-3,
                                                         "per_device_train_batch_size": 4, "max_seq_length": 64,
                                                         "eval_split": 0.0, "r": 16, "lora_alpha": 32})
    started = time.perf_counter()
    perfkit.run_child(job_id, home / f"job-{job_id}.log")
    wall = time.perf_counter() - started
    perfkit.finished(job_id)
    with session_scope() as db:
        version_id = db.get(Job, job_id).result["version_id"]
        follow_ups = list(db.scalars(select(Job.id).where(Job.kind == "evaluate", Job.state == "queued")))
    for evaluate_id in follow_ups:  # the version on its data and the pin, the base on the facts
        perfkit.run_child(evaluate_id, home / f"job-{evaluate_id}.log")
        perfkit.finished(evaluate_id)
    return evidence.comparison(version_id)["vs_base"], version_id, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-benchmarks"))
    args = ap.parse_args()
    perfkit.use_home(args.home)
    model_id, model_dir = perfkit.demo_model()
    from studio import operations

    mc_rows = [{"question": q, "choices": c, "answer": a} for q, c, a in FACTS]
    qa_rows = [{"question": f"What is {a} + {b}? Answer with the number.", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
               for a, b in SUMS]
    ids = {}
    for name, rows in (("facts-mc", mc_rows), ("sums-qa", qa_rows)):
        path = args.home / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        ids[name] = operations.add_dataset(path, name=name)[0].id
    perfkit.say("multiple choice through the evaluate job")
    mc, mc_wall = evaluate(model_id, ids["facts-mc"], args.home)
    perfkit.say("the same questions scored independently")
    picks = independent(model_dir, mc_rows)
    agree = sum(p == "ABCD".index(e["answer"][0]) for p, e in zip(picks, mc["examples"]))  # "B. Seven" -> 1
    independent_acc = sum(p == r["answer"] for p, r in zip(picks, mc_rows)) / len(mc_rows)
    perfkit.say("question/answer through the evaluate job")
    qa, qa_wall = evaluate(model_id, ids["sums-qa"], args.home)
    m, q = mc["metrics"], qa["metrics"]
    print(f"SmolLM2-135M-Instruct as it is; {perfkit.hardware()}\n")
    print("| benchmark | rows | measure | value ± stderr | eval loss | job wall s |\n|---|---|---|---|---|---|")
    print(f"| {len(mc_rows)} facts, multiple choice | {mc['rows']} | acc | {m['acc']:.4f} ± {m['acc_stderr']:.4f} | "
          f"{m['eval_loss']:.4f} | {mc_wall:.1f} |")
    print(f"| | | acc_norm | {m['acc_norm']:.4f} ± {m['acc_norm_stderr']:.4f} | | |")
    print(f"| {len(qa_rows)} sums, question/answer | {qa['rows']} | exact_match | {q['exact_match']:.4f} ± "
          f"{q['exact_match_stderr']:.4f} | {q['eval_loss']:.4f} | {qa_wall:.1f} |")
    print(f"\nIndependent log-likelihood scoring (transformers alone): acc {independent_acc:.4f}; the same pick as "
          f"lm-eval on {agree} of {len(mc_rows)} questions.")
    perfkit.say("a LoRA version trained on the facts, with the facts pinned as a benchmark of the base")
    vs_base, version_id, train_wall = train_and_compare(model_id, ids["facts-mc"], mc_rows, args.home)
    mine = next(d for d in vs_base["datasets"] if d["dataset_id"] == ids["facts-mc"])
    print(f"\nLoRA version #{version_id} trained on the facts ({train_wall:.0f} s), vs its base on the pinned "
          "benchmark:\n\n| measure | version | base | delta | stderr of delta | beyond noise |\n|---|---|---|---|---|---|")
    for m in mine["measures"]:
        se = "—" if m["stderr"] is None else f"{m['stderr']:.4f}"
        print(f"| {m['key']} | {m['value']:.4f} | {m['reference']:.4f} | {m['delta']:+.4f} | {se} | "
              f"{m['beyond_noise']} |")
    print("\nqa replies (first 3): " + "; ".join(f"{e['question']!r} -> {e['reply'][:60]!r} (extracted "
                                                   f"{e['answer']!r}, want {e['target']!r})"
                                                   for e in qa["examples"][:3]))


if __name__ == "__main__":
    main()
