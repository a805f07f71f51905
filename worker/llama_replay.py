"""A GGUF export replayed in llama.cpp itself, where the worker has it built (``python -m worker llama-cpp --build``
compiles ``llama-simple`` beside ``llama-quantize``): each fixed prompt, as the trained model's chat template
rendered it, is greedy-decoded by llama.cpp's own runtime, and its reply is compared with the trained model's.

transformers' GGUF reader (``worker.fidelity.check_gguf``) dequantizes the file and runs it in torch; this runs it
the way Ollama and llama.cpp users will, with llama.cpp's own tokenizer reading the embedded vocabulary. A broken
conversion or a lost template shows in the first reply token, so that is what the format's tolerance applies to;
how far each reply stays identical is reported beside it (greedy decoding of a quantized file may part ways with
the trained model's later in a reply without being wrong).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from worker import gguf

TIMEOUT_S = 120  # one prompt's load + prefill + GENERATE tokens on a small CPU takes seconds
# A first token other than the trained model's top one still agrees when the trained model itself nearly tied the
# two: on the demo model's q8_0 export llama.cpp answered "The" where the trained model's top was "1", 0.04 nats
# apart (quantization flips such ties; a broken conversion does not land within a tie).
NEAR_TIE_NATS = 0.1


def binary() -> Path | None:
    """llama.cpp's ``llama-simple`` (greedy decoding of one prompt), where it is built on this worker."""
    path = gguf.llama_cpp_dir() / "build" / "bin" / "llama-simple"
    return path if path.exists() else None


def generate(program: Path, model: Path, prompt: str, tokens: int) -> str:
    """The text llama.cpp prints for ``prompt``: the prompt's own pieces, then the greedy reply (it stops at the
    model's end of generation without printing it). Arguments, never a shell."""
    done = subprocess.run([str(program), "-m", str(model), "-n", str(tokens), prompt], capture_output=True,
                          timeout=TIMEOUT_S, check=False)
    if done.returncode:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"llama-simple exited with {done.returncode}: {tail[0]}")
    return done.stdout.decode(errors="replace")


def reply_text(tokenizer, printed: str, prompt_ids: list[int]) -> str | None:
    """The reply: what follows the prompt in llama.cpp's output; None when the output does not hold the prompt.
    Compared as text, not re-tokenized: a reply's text need not tokenize back to the ids that made it (eight
    newline tokens read back as three multi-newline ones)."""
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    at = printed.find(prompt)  # a beginning-of-text piece may come first
    return None if at < 0 else printed[at + len(prompt):]


def near_tie(tokenizer, reply: str, logprobs) -> bool:
    """Whether ``reply``'s first token was within :data:`NEAR_TIE_NATS` of the trained model's top choice there
    (``logprobs``: the trained model's log-probabilities at the reply's first position)."""
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"][:1]
    if logprobs is None or not ids or ids[0] >= len(logprobs):
        return False
    return float(logprobs.max() - logprobs[ids[0]]) <= NEAR_TIE_NATS


def same_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def replay(model: Path, tokenizer, ref, min_agreement: float, tokens: int) -> dict:
    """The llama.cpp record for an export: replies starting with the trained model's first token, or one it nearly
    tied with (the share of prompts; the ties counted apart), the share of each reference reply's text reproduced before the first difference, identical replies,
    and ``ok`` with the reason when the first tokens agree less than ``min_agreement``."""
    program = binary()
    if program is None:
        return {"ran": False, "reason": f"llama.cpp's llama-simple is not built on this worker "
                                        f"(`{gguf.FETCH} --build` builds it)"}
    first = identical = ties = 0
    kept = []
    for i, (ids, reply) in enumerate(zip(ref.prompt_ids, ref.replies)):
        want_ids = [t for t in reply if t not in ref.eos_ids][:tokens]
        want = tokenizer.decode(want_ids, skip_special_tokens=False)
        prompt = tokenizer.decode(ids, skip_special_tokens=False)
        full = reply_text(tokenizer, generate(program, model, prompt, tokens + 1), ids)  # it prints n - 1 tokens
        if full is None:
            return {"ran": True, "ok": False, "reason": "llama.cpp printed a prompt other than the one it was given"}
        got = full[:len(want)]
        start = tokenizer.decode(want_ids[:1], skip_special_tokens=False)
        if got.startswith(start) if start else not full:
            first += 1
        elif len(ref.logprobs) > i and len(ref.logprobs[i]) and near_tie(tokenizer, full, ref.logprobs[i][0]):
            first, ties = first + 1, ties + 1
        identical += int(got == want)
        kept.append(same_prefix(got, want) / max(len(want), 1))
    prompts = len(ref.prompt_ids)
    record = {"ran": True, "runtime": f"llama.cpp ({program.name}, greedy)", "prompts": prompts,
              "first_token_agreement": round(first / max(prompts, 1), 4),
              "reply_kept_before_first_difference": round(sum(kept) / max(len(kept), 1), 4),
              "first_token_near_ties": ties, "identical_replies": identical}
    record["ok"] = record["first_token_agreement"] >= min_agreement
    record["reason"] = None if record["ok"] else (
        f"in llama.cpp the first reply token differs from the trained model's on {prompts - first} of {prompts} "
        f"prompts")
    return record
