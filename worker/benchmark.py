"""Score a loaded model on a benchmark data set with lm-evaluation-harness (studio/benchmarks.py says what each
format measures).

lm-eval is the engine: the task is its ``ConfigurableTask`` built from studio.benchmarks.task_config, its data
set the stored rows (``custom_dataset``: nothing is fetched from a hub), and the model the studio already
loaded (a version rebuilt from its lineage, or a base) wrapped as its ``HFLM`` (which accepts a model
instance). A model with a chat template is asked through it (lm-eval's ``apply_chat_template``): the question
is the user's turn and a choice or a reply is the assistant's, as the studio trains.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from studio import benchmarks
from studio.datasets.benchmark_rows import LETTERS, final_answer
from worker.errors import UserFacingError

NEEDS_LM_EVAL = ("benchmarks are scored by lm-evaluation-harness: pip install 'finetune-studio[eval]' (lm_eval) "
                 "on the worker")
TASK = "studio_benchmark"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def max_new_tokens(rows: list[dict], tokenizer) -> int:
    """A qa reply's budget: twice the longest reference answer in tokens (a reply may reason a little longer),
    at least 16, at most studio.benchmarks.MAX_NEW_TOKENS."""
    longest = max((len(tokenizer(r["solution"], add_special_tokens=False)["input_ids"]) for r in rows), default=8)
    return max(16, min(benchmarks.MAX_NEW_TOKENS, 2 * longest))


def _extract(resps, docs):
    """lm-eval filter: each generated reply reduced to its final answer ('' when it has none)."""
    return [[final_answer(r) or "" for r in replies] for replies in resps]


def score(model, tokenizer, fmt: str, rows: list[dict], *, batch_size: int = 8, say=print) -> tuple[dict, list[dict]]:
    """Run the benchmark ``rows`` (canonical multiple_choice or qa rows) through ``model``. Returns (metrics,
    examples): ``acc``/``acc_norm`` or ``exact_match`` with their ``*_stderr`` as lm-eval reports them, and one
    entry per question (row, question, target, the model's answer, correct)."""
    try:
        import datasets
        from lm_eval import evaluator
        from lm_eval.api.task import ConfigurableTask
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserFacingError(NEEDS_LM_EVAL) from None
    for name in ("lm-eval", "lm_eval"):  # its per-request progress bars and notices stay out of the job log
        logging.getLogger(name).setLevel(logging.ERROR)
    kind = benchmarks.KINDS[fmt]
    budget = max_new_tokens(rows, tokenizer) if fmt == "qa" else 0
    config = benchmarks.task_config(fmt, TASK, budget)
    docs = [{"question": r["question"], "choices": r.get("choices", []), "answer": r["answer"]} for r in rows]
    config["custom_dataset"] = lambda **_: datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
    if fmt == "qa":
        config["filter_list"] = [{"name": kind.filter, "filter": [{"function": "custom", "filter_fn": _extract},
                                                                 {"function": "take_first"}]}]
    task = ConfigurableTask(config=config)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    chat = bool(getattr(tokenizer, "chat_template", None))
    say(f"lm-evaluation-harness: {len(docs)} {fmt.replace('_', '-')} questions"
        + (f", up to {budget} new tokens each" if budget else "") + (", through the chat template" if chat else ""))
    out = evaluator.evaluate(lm=lm, task_dict={TASK: task}, log_samples=True, apply_chat_template=chat,
                             bootstrap_iters=1000, verbosity="ERROR")
    figures = out["results"][TASK]
    metrics = {}
    for key, _, _ in kind.measures:
        metrics[key] = float(figures[f"{key},{kind.filter}"])
        stderr = figures.get(f"{key}_stderr,{kind.filter}")
        metrics[benchmarks.stderr_key(key)] = float(stderr) if isinstance(stderr, (int, float)) else None
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return metrics, [_example(fmt, kind.headline, s) for s in samples]


def _example(fmt: str, key: str, sample: dict) -> dict:
    """One question's result as stored and listed: 1-based row, question, the right answer, the model's."""
    doc = sample["doc"]
    if fmt == "multiple_choice":
        scores = [float(r[0]) for r in sample["filtered_resps"]]
        picked = max(range(len(scores)), key=scores.__getitem__)
        choices, target = doc["choices"], int(doc["answer"])
        return {"row": sample["doc_id"] + 1, "question": doc["question"],
                "target": f"{LETTERS[target]}. {choices[target]}", "answer": f"{LETTERS[picked]}. {choices[picked]}",
                "correct": bool(sample[key]), "loglikelihoods": [round(x, 4) for x in scores]}
    reply = sample["resps"][0][0] if sample.get("resps") and sample["resps"][0] else ""
    return {"row": sample["doc_id"] + 1, "question": doc["question"], "target": doc["answer"],
            "answer": sample["filtered_resps"][0] if isinstance(sample["filtered_resps"], list) else
            sample["filtered_resps"], "reply": reply, "correct": bool(sample[key])}
