"""Benchmark: every export format of one LoRA version of the demo model (SmolLM2-135M-Instruct).

Trains a 2-step LoRA version in a scratch studio home (through the real job's child process), then runs
``studio versions export ID --format F --json`` for each format in a process of its own and reports the
wall time, the files' size, the ms/token the export recorded (a few greedy tokens on the reloaded files),
the studio's memory estimate for the merge and the process's measured peak RSS, and the export's own fidelity
check (worker/fidelity.py: greedy-token agreement, mean KL, stops at EOS, verified). Markdown tables go to
stdout, progress to stderr.

    .venv/bin/python bench/exports.py [--home /tmp/bench-exports] [--formats merged,onnx]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perfkit  # noqa: E402  after the path insert above

# Runs the CLI in this child and writes its peak RSS to the file in argv[1], sampled every 20 ms: ru_maxrss
# would not do, Linux carries the parent's resident size at fork through exec into the child's maximum.
PEAK = ("import sys, threading, time, psutil; from studio.cli import main\n"
        "peak = [0]\n"
        "def sample():\n    me = psutil.Process()\n"
        "    while True:\n        peak[0] = max(peak[0], me.memory_info().rss); time.sleep(0.02)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "try:\n    main(sys.argv[2:])\nfinally:\n    open(sys.argv[1], 'w').write(str(peak[0]))")


def lora_version(home: Path) -> int:
    """A 2-step LoRA version of the demo model (reused when the home already has one)."""
    from models_db import ModelVersion, session_scope
    from models_db import queries as q

    model_id, _ = perfkit.demo_model()
    with session_scope() as db:
        done = [v.id for v in q.list_versions(db) if v.method == "lora"]
        if done:
            return done[0]
    rows = [{"instruction": f"What is {i} plus 1?", "input": "", "output": f"The answer is {i + 1}."} for i in range(32)]
    dataset_id, _ = perfkit.add_rows(home, "sums", rows)
    job_id = perfkit.submit(model_id, dataset_id, "lora", {"max_steps": 2, "per_device_train_batch_size": 4,
                                                            "max_seq_length": 64, "eval_split": 0.0})
    perfkit.say(f"training LoRA job {job_id} (2 steps)")
    perfkit.run_child(job_id, home / f"job-{job_id}.log")
    perfkit.finished(job_id)
    with session_scope() as db:
        return db.query(ModelVersion).filter(ModelVersion.job_id == job_id).one().id


def run_format(version_id: int, fmt: str, out: Path, env: dict) -> dict:
    from models_db import BaseModel, ModelVersion, session_scope
    from studio import exports

    with session_scope() as db:
        v = db.get(ModelVersion, version_id)
        base = db.get(BaseModel, v.base_model_id)
        est = (exports.estimate(exports.FORMATS[fmt], Path(base.path), exports.lineage_dirs(v))
               if exports.FORMATS[fmt].merged else None)
    peak_file = out.parent / f"{fmt}.peak"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK, str(peak_file), "versions", "export", str(version_id), "--out",
                        str(out), "--format", fmt, "--json"], capture_output=True, text=True, cwd=ROOT, env=env,
                       check=False)
    wall = time.perf_counter() - started
    if p.returncode:
        return {"format": fmt, "error": p.stderr.strip().splitlines()[-1][:200]}
    result = json.loads(p.stdout)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"format": fmt, "wall_s": wall, "size_mb": size / 2**20, "ms_per_token": result.get("ms_per_token"),
            "estimate_gb": est.needed / 2**30 if est else None,
            "peak_rss_gb": int(peak_file.read_text()) / 2**30, "fidelity": result.get("fidelity") or {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-exports"))
    ap.add_argument("--formats", default="merged,merged-fp16,merged-bf16,bnb-8bit,bnb-4bit,onnx,adapter")
    args = ap.parse_args()
    env = perfkit.use_home(args.home)
    version_id = lora_version(args.home)
    rows = []
    for fmt in args.formats.split(","):
        perfkit.say(f"exporting version {version_id} as {fmt}")
        out = args.home / "out" / fmt
        rows.append(run_format(version_id, fmt, out, env))
        perfkit.say(json.dumps(rows[-1]))

    def cell(x, digits=1):
        return "—" if x is None else f"{x:.{digits}f}"

    print(f"Version {version_id} (LoRA on SmolLM2-135M-Instruct); {perfkit.hardware()}\n")
    print("| format | wall s | size MB | ms/token | estimate GB | peak RSS GB |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['format']} | refused: {r['error']} | | | | |")
            continue
        print(f"| {r['format']} | {cell(r['wall_s'])} | {cell(r['size_mb'])} | {cell(r['ms_per_token'])} | "
              f"{cell(r['estimate_gb'], 2)} | {cell(r['peak_rss_gb'], 2)} |")
    print("\n| format | runtime | token agreement | mean KL | stops at EOS (trained / export) | tolerance | verified |"
          "\n|---|---|---|---|---|---|---|")
    for r in rows:
        f = r.get("fidelity") or {}
        if "token_agreement" not in f:
            print(f"| {r['format']} | {f.get('reason') or r.get('error', '')} | | | | | |")
            continue
        tol = f["tolerance"]
        print(f"| {r['format']} | {f['runtime']} | {f['token_agreement']:.1%} ({f['tokens_compared']} tokens) | "
              f"{f['mean_kl']:.2g} | {f.get('stops_at_eos')} ({f.get('reference_stopped')}/{f.get('export_stopped')} "
              f"of {f['prompts']}) | ≥{tol['min_agreement']:.0%}, ≤{tol['max_kl']:g} | "
              f"{'yes' if f['verified'] else 'no: ' + str(f['reason'])} |")
    replayed = [(r["format"], r["fidelity"]["llama_cpp"]) for r in rows
                if (r.get("fidelity") or {}).get("llama_cpp", {}).get("ran")]
    if replayed:
        print("\n| format | in llama.cpp: replies starting as the trained model's (near ties) | reply text kept before "
              "the first difference | identical replies | ok |\n|---|---|---|---|---|")
        for fmt, f in replayed:
            print(f"| {fmt} | {f.get('first_token_agreement', 0):.0%} ({f.get('first_token_near_ties', 0)}) | "
                  f"{f.get('reply_kept_before_first_difference', 0):.0%} "
                  f"| {f.get('identical_replies', 0)} of {f.get('prompts', 0)} | {'yes' if f['ok'] else 'no: ' + str(f['reason'])} |")


if __name__ == "__main__":
    main()
