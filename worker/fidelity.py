"""Every export verifies itself: a few fixed prompts from the version's own data (its eval split, else its first
rows) are replayed through the exported files in their own runtime (transformers for safetensors and
bitsandbytes, onnxruntime for ONNX, transformers + the exported adapter for ``adapter``), rendered with the
chat template the export carries, and compared with the trained model before export (float32):

- ``token_agreement``: along the trained model's greedy reply, how often the export's top token is the same
  (teacher-forced over the first ``FIRST_TOKENS`` tokens of each reply);
- ``mean_kl``: the mean KL divergence KL(trained || export) of the next-token distributions at those positions;
- ``stops_at_eos``: the export's end-of-turn ids include the trained model's, and wherever the trained model
  ends its greedy reply (within ``GENERATE_TOKENS``), the export's top token at that point ends it too
  (``export_stopped`` also counts how often the export's own free greedy generation stopped: a lossy format
  may reply differently, and longer, without losing its EOS);
- the chat template: the export's tokenizer renders the prompts to the same token ids.

Beyond its format's tolerance (studio/exports.py ``ExportFormat.fidelity``) the export is "not verified", with the
reason; it is still written (the person decides). A classifier compares its label distributions instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from models_db import Dataset, ModelVersion, session_scope
from studio import exports, store
from worker import data, llama_replay

PROMPTS = 3
FIRST_TOKENS = 16
GENERATE_TOKENS = 32
FALLBACK = ("What is the capital of France?", "Write a haiku about autumn.", "Explain what a neural network is.")


@dataclass
class Reference:
    """The trained model's behaviour on the prompts: their token ids, its greedy reply to each (and whether it
    ended at its EOS), the log-probabilities along that reply; for a classifier its label log-probabilities."""

    task: str
    prompt_ids: list[list[int]]
    replies: list[list[int]] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # numpy arrays [positions, vocab] (a classifier: [labels])
    eos_ids: list[int] = field(default_factory=list)
    chat_template: bool = False


def prompts_for(version: ModelVersion | None) -> list:
    """The fixed prompts: the user's side of the first rows of the version's eval split (else its training rows):
    message lists up to the last user turn, or texts (plain text and classifier data); a few stock questions when
    its data set is gone, and for a base model exported as it is (``version`` None: it has no data of its own)."""
    with session_scope() as db:
        ds = db.get(Dataset, version.dataset_id) if version is not None and version.dataset_id else None
        path = ds.path if ds else None
    rows = []
    if path:
        local = store.local_dataset(path)
        source = data.stored_eval(local) or local
        if Path(source).exists():
            with open(source) as f:
                for line in f:
                    rows.append(json.loads(line))
                    if len(rows) >= PROMPTS:
                        break
    prompts = [_prompt(r) for r in rows]
    prompts = [p for p in prompts if p]
    return prompts or [[{"role": "user", "content": q}] for q in FALLBACK]


def _prompt(row: dict):
    if "messages" in row:
        messages = row["messages"]
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        return messages[: last_user + 1] if last_user is not None else None
    if "prompt" in row:  # preference and feedback rows
        p = row["prompt"]
        return [{"role": "user", "content": p}] if isinstance(p, str) else p
    return row.get("text", "")[:200] or None


def encode(tokenizer, prompt) -> list[int]:
    """A prompt's token ids: chat messages through the tokenizer's chat template (with the assistant's turn
    opened), a text as it is."""
    if isinstance(prompt, list) and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if isinstance(prompt, list):
        prompt = "\n".join(m["content"] for m in prompt)
    return tokenizer(prompt)["input_ids"]


def eos_ids(config) -> list[int]:
    ids = getattr(config, "eos_token_id", None) if not isinstance(config, dict) else config.get("eos_token_id")
    return sorted({ids} if isinstance(ids, int) else set(ids or []))


# --- runtimes --------------------------------------------------------------------------------------------

class TorchRuntime:
    """A transformers model: logits of a sequence, and its own greedy generation (its KV cache, its EOS)."""

    name = "transformers"

    def __init__(self, model, eos: list[int]):
        self.model, self.eos = model.eval(), eos

    def logits(self, ids: list[int]):
        import torch

        with torch.no_grad():
            x = torch.tensor([ids], device=self.model.device)
            return self.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().cpu().numpy()

    def generate(self, ids: list[int], max_new: int) -> list[int]:
        import torch

        with torch.no_grad():
            x = torch.tensor([ids], device=self.model.device)
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                                      eos_token_id=self.eos or None, pad_token_id=(self.eos or [0])[0])
        return out[0, len(ids):].tolist()


class OnnxRuntime:
    """The ONNX graph in onnxruntime: logits of the whole sequence (no KV cache: greedy generation re-reads it)."""

    name = "onnxruntime"

    def __init__(self, folder: Path, eos: list[int]):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.eos = eos

    def logits(self, ids: list[int]):
        import numpy as np

        x = np.asarray([ids], dtype=np.int64)
        return self.session.run(["logits"], {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]

    def generate(self, ids: list[int], max_new: int) -> list[int]:
        out = []
        for _ in range(max_new):
            token = int(self.logits(ids + out)[-1].argmax())
            out.append(token)
            if token in self.eos:
                break
        return out


# --- the reference and the comparison -----------------------------------------------------------------------

def _log_softmax(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference(model, tokenizer, prompts: list, task: str = "causal_lm") -> Reference:
    """Run the prompts through the trained model (before export): greedy replies and their log-probabilities."""
    ref = Reference(task=task, prompt_ids=[encode(tokenizer, p) for p in prompts],
                    chat_template=bool(getattr(tokenizer, "chat_template", None)))
    if task == "seq_cls":
        ref.logprobs = [_log_softmax(_cls_logits(model, ids)) for ids in ref.prompt_ids]
        return ref
    ref.eos_ids = eos_ids(model.generation_config) or eos_ids(model.config) or (
        [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    runtime = TorchRuntime(model, ref.eos_ids)
    for ids in ref.prompt_ids:
        reply = runtime.generate(ids, GENERATE_TOKENS)
        stopped = bool(reply) and reply[-1] in ref.eos_ids
        ref.replies.append(reply)
        ref.stopped.append(stopped)
        positions = _positions(ids, reply)
        ref.logprobs.append(_log_softmax(runtime.logits(ids + reply[:-1] if reply else ids)[positions]))
    return ref


def _cls_logits(model, ids: list[int]):
    import torch

    with torch.no_grad():
        x = torch.tensor([ids], device=model.device)
        return model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().cpu().numpy()


def _positions(prompt: list[int], reply: list[int]) -> list[int]:
    """Where the next-token distributions of the first reply tokens are (the last prompt position onwards)."""
    n = max(1, min(len(reply), FIRST_TOKENS))
    return list(range(len(prompt) - 1, len(prompt) - 1 + n))


def _kl(p_log, q_log) -> float:
    import numpy as np

    return float((np.exp(p_log) * (p_log - q_log)).sum(-1).mean())


def compare(ref: Reference, runtime, tokenizer, tolerance: tuple[float, float]) -> dict:
    """The fidelity record of an export (its ``runtime`` and its own ``tokenizer``) against the reference."""
    import numpy as np

    min_agreement, max_kl = tolerance
    reasons = []
    template = bool(getattr(tokenizer, "chat_template", None))
    agree = total = 0
    kls = []
    exported_stops, same_text, ends = [], 0, []
    for i, ids in enumerate(ref.prompt_ids):
        if ref.task == "seq_cls":
            got = _log_softmax(runtime.logits(ids) if isinstance(runtime, OnnxRuntime) else _cls_logits(runtime.model, ids))
            got = got[-1] if got.ndim > 1 else got
            agree += int(got.argmax() == ref.logprobs[i].argmax())
            total += 1
            kls.append(_kl(ref.logprobs[i], got))
            continue
        reply = ref.replies[i]
        positions = _positions(ids, reply)
        full = runtime.logits(ids + reply[:-1] if reply else ids)
        if ref.stopped[i]:  # where the trained model ends its turn, the export's top token ends it too
            ends.append(int(full[-1].argmax()) in runtime.eos)
        got = _log_softmax(full[positions])
        agree += int((got.argmax(-1) == ref.logprobs[i].argmax(-1)).sum())
        total += len(positions)
        kls.append(_kl(ref.logprobs[i], got))
        own = runtime.generate(ids, GENERATE_TOKENS)
        exported_stops.append(bool(own) and own[-1] in runtime.eos)
        same_text += int(own == reply)
    agreement = agree / max(total, 1)
    mean_kl = float(np.mean(kls)) if kls else 0.0
    record = {"runtime": runtime.name, "prompts": len(ref.prompt_ids), "tokens_compared": total,
              "token_agreement": round(agreement, 4), "mean_kl": float(f"{mean_kl:.3g}"),
              "tolerance": {"min_agreement": min_agreement, "max_kl": max_kl}, "chat_template": template}
    if agreement < min_agreement:
        reasons.append(f"greedy-token agreement {agreement:.1%} is below the {min_agreement:.0%} this format allows")
    if mean_kl > max_kl:
        reasons.append(f"mean KL {mean_kl:.3g} is above the {max_kl:g} this format allows")
    if ref.chat_template and not template:
        reasons.append("the export's tokenizer has lost the chat template")
    if ref.task != "seq_cls":
        missing = sorted(set(ref.eos_ids) - set(runtime.eos))
        record.update({"stops_at_eos": not missing and all(ends), "eos_token_ids": runtime.eos,
                       "reference_stopped": sum(ref.stopped), "ends_turn_where_reference_does": sum(ends),
                       "export_stopped": sum(exported_stops), "identical_generations": same_text})
        if missing:
            reasons.append(f"the export does not stop at token id(s) {missing} (the trained model's end of turn)")
        if not all(ends):
            reasons.append(f"the export would not end its turn where the trained model does on {ends.count(False)} "
                           f"of {len(ends)} prompts")
    record["verified"] = not reasons
    record["reason"] = "; ".join(reasons) or None
    return record


def not_checked(reason: str) -> dict:
    return {"verified": False, "reason": f"not checked: {reason}"}


def check_folder(out: Path, fmt: exports.ExportFormat, ref: Reference, prompts: list, trust,
                 device: str = "cpu") -> dict:
    """Load a merged export (safetensors, bnb or ONNX) in its own runtime and compare it with ``ref``."""
    from transformers import AutoConfig, AutoTokenizer

    from worker.trust import model_code_kwargs, tokenizer_code_kwargs

    if fmt.kind == "gguf":
        return check_gguf(out, fmt, ref, prompts)
    tokenizer = AutoTokenizer.from_pretrained(out, **tokenizer_code_kwargs(trust))
    if not same_prompts(tokenizer, prompts, ref):
        return {"verified": False, "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "reason": "the export's tokenizer renders the prompts to other token ids (its chat template or "
                          "vocabulary changed on the way out)"}
    generation = out / "generation_config.json"
    eos = eos_ids(json.loads(generation.read_text())) if generation.exists() else []
    eos = eos or eos_ids(AutoConfig.from_pretrained(out, **model_code_kwargs(trust)))
    if fmt.kind == "onnx":
        runtime = OnnxRuntime(out, eos)
    else:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        cls = AutoModelForSequenceClassification if ref.task == "seq_cls" else AutoModelForCausalLM
        kwargs = {"device_map": {"": device}} if fmt.kind == "bnb" else {}
        runtime = TorchRuntime(cls.from_pretrained(out, **kwargs, **model_code_kwargs(trust)), eos)
    return compare(ref, runtime, tokenizer, fmt.fidelity)


def same_prompts(tokenizer, prompts: list, ref: Reference) -> bool:
    """Whether the export's tokenizer (its embedded chat template) renders the prompts to the same ids."""
    return [encode(tokenizer, p) for p in prompts] == ref.prompt_ids


def summary(record: dict | None) -> str:
    """One line for the UI and the CLI: verified (agreement, KL, EOS) or not, and why."""
    if not record:
        return ""
    if "token_agreement" not in record:
        return f"Not verified ({record.get('reason')})"
    eos = "" if "stops_at_eos" not in record else (", stops at EOS" if record["stops_at_eos"] else
                                                  ", does not stop at EOS")
    figures = (f"greedy-token agreement {record['token_agreement']:.1%}, mean KL {record['mean_kl']:.2g}{eos} "
               f"over {record['prompts']} prompts in {record['runtime']}")
    if llama := exports.llama_cpp_phrase(record):
        figures += f"; in llama.cpp {llama}"
    return f"Verified: {figures}" if record["verified"] else f"Not verified: {record['reason']} ({figures})"


def check_adapter(out: Path, versions: list[ModelVersion], base, ref: Reference, prompts: list) -> dict:
    """Load the exported adapter the way its README says (the float32 base, its ancestors merged in, then the
    adapter folder through peft or the studio's loader) and compare it with ``ref``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker import lineage, methods
    from worker.errors import UserFacingError
    from worker.trust import model_code_kwargs, tokenizer_code_kwargs

    version = versions[-1]
    tokenizer = AutoTokenizer.from_pretrained(out / "adapter", **tokenizer_code_kwargs(base)) \
        if (out / "adapter" / "tokenizer_config.json").exists() else None
    if tokenizer is None:
        return not_checked("the adapter folder carries no tokenizer")
    if not same_prompts(tokenizer, prompts, ref):
        return {"verified": False, "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "reason": "the adapter's tokenizer renders the prompts to other token ids"}
    if ref.task == "seq_cls":
        from worker.recipes.seq_cls import load_classifier

        model = load_classifier(base.path, version.config["labels"], tokenizer, dtype=torch.float32,
                                **model_code_kwargs(base))
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))
    try:
        if len(versions) > 1:
            model = lineage.load_chain(model, versions[:-1], last="merge")
        model = methods.get(version.method).load(model, out / "adapter", trainable=False)
    except (UserFacingError, methods.MethodError) as e:
        return not_checked(f"the adapter cannot be loaded on its own here ({e})")
    runtime = TorchRuntime(model, ref.eos_ids)
    runtime.name = "transformers + the exported adapter"
    return compare(ref, runtime, tokenizer, exports.FORMATS["adapter"].fidelity)


def card_section(record: dict, prompts: str = "The first rows of the version's eval data",
                 against: str = "the trained model") -> str:
    """The model card's paragraph on the export's own check (a base model's: stock questions, against itself)."""
    return (f"\n\n## Fidelity\n{summary(record)}.\n\n{prompts} were replayed through these files in their own "
            f"runtime and compared with {against} (studio_version.json has the `fidelity` record).\n")


def check_gguf(out: Path, fmt: exports.ExportFormat, ref: Reference, prompts: list) -> dict:
    """A GGUF read back by transformers' GGUF reader (dequantized to float32; the tokenizer and chat template from
    the file itself), and replayed in llama.cpp itself where it is built on this worker (``worker.llama_replay``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = next(p.name for p in out.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    if not same_prompts(tokenizer, prompts, ref):
        return {"verified": False, "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "reason": "the GGUF's embedded tokenizer and chat template render the prompts to other token ids"}
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=name)
    runtime = TorchRuntime(model, eos_ids(model.generation_config) or eos_ids(model.config))
    runtime.name = "transformers' GGUF reader (dequantized)"
    record = compare(ref, runtime, tokenizer, fmt.fidelity)
    if ref.task != "seq_cls":  # and in llama.cpp itself, where it is built on this worker
        replayed = llama_replay.replay(out / name, tokenizer, ref, fmt.fidelity[0], GENERATE_TOKENS)
        record["llama_cpp"] = replayed
        if replayed["ran"] and not replayed["ok"]:
            record["verified"] = False
            record["reason"] = "; ".join(r for r in (record.get("reason"), replayed["reason"]) if r)
    return record
