"""The chaos soak's short form (bench/soak.py): six jobs of every kind on two workers, real Postgres and a
private Redis, while a controller kills workers and training processes, restarts Redis and the studio, and
cancels a job. Every job ends, none twice, none left running, no torn checkpoint, and the UI and the CLI
answer whenever the studio process is up. About a minute; the full soak's figures are in docs/reliability.md."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import PG, REDIS

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_loses_duplicates_and_strands_nothing(tmp_path):
    if not (PG and REDIS):
        pytest.skip("set STUDIO_TEST_POSTGRES_URL and STUDIO_TEST_REDIS_URL to test against real services")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--jobs", "6", "--workers", "2",
                        "--minutes", "5", "--settle", "120", "--faults", "8", "--seed", "1", "--json"],
                       capture_output=True, text=True, timeout=420, check=False)
    assert p.stdout.strip(), p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert (out["lost"], out["duplicated"], out["stuck"], out["torn"]) == (0, 0, 0, 0), (out, p.stderr[-3000:])
    assert p.returncode == 0 and out["jobs"] == 6, p.stderr[-3000:]
    assert out["faults_total"] >= 3, out["faults"]
    assert out["ui"]["unanswered"] == 0 and out["cli"]["unanswered"] == 0, (out["ui"], out["cli"])
