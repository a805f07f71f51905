"""Benchmark: validate and register a large JSONL instruction file, as the UI process does.

Generates N rows (default 1,000,000; ~0.1% empty outputs, ~0.1% duplicates, a few bad JSON
lines) in a temporary folder and registers it with ``studio.operations.add_dataset`` (intake, a
stored 5% eval split, the upload kept for re-mapping, the database row) into a temporary studio
home with SQLite; prints rows/s and the process's peak RSS. Memory should stay flat in the file
size: compare ``--rows 100000`` with the default.

    .venv/bin/python bench/datasets.py [--rows N] [--eval-split F]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

WORDS = "the quick brown fox jumps over a lazy dog while data sets train models to answer".split()  # noqa: SIM905


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` alpaca-style JSONL rows, streaming (nothing is held in memory)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if i % 100_000 == 99_999:
                f.write('{"instruction": "broken", "output": \n')
                continue
            words = rng.choices(WORDS, k=rng.randint(5, 60))
            row = {"instruction": f"Question {i}: " + " ".join(words[:10]),
                   "input": " ".join(words[10:20]) if i % 3 else "",
                   "output": "" if i % 1000 == 7 else " ".join(words)}
            if i % 1000 == 500:
                row = {"instruction": "Question 0: duplicate", "input": "", "output": "same"}
            f.write(json.dumps(row) + "\n")


def main() -> None:
    """Generate, register, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--eval-split", type=float, default=0.05, help="fraction stored as the eval split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        os.environ["STUDIO_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("STUDIO_DATABASE_URL", None)
        from models_db.migrate import upgrade
        from studio import operations
        from studio.datasets.split import Split

        upgrade()
        src = Path(tmp) / "big.jsonl"
        generate(src, args.rows)
        size_mb = src.stat().st_size / 1e6
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        ds, report, _ = operations.add_dataset(src, drop_bad_rows=True, split=Split(ratio=args.eval_split, seed=0))
        seconds = time.perf_counter() - start
        print(f"rows: {report.total_rows:,} ({size_mb:,.0f} MB), valid: {report.valid_rows:,} "
              f"(dataset {ds.id}: {ds.rows:,} train, {ds.eval_rows:,} eval)")
        print(f"problems: {report.problem_counts}")
        print(f"time: {seconds:.1f} s, {report.total_rows / seconds:,.0f} rows/s, {size_mb / seconds:,.1f} MB/s")
        print(f"peak RSS: {peak_rss_mb():.0f} MiB (before registering: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
