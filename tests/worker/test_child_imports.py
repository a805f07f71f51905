"""A job's training process imports only what its job needs: bitsandbytes (seconds of import, pulled in by
peft whenever it is installed) only for a job that may quantize: qlora, an 8-bit or paged optimizer, a
qlora ancestor, or a job kind other than training."""
from __future__ import annotations

import subprocess
import sys

import pytest

from models_db import Job, ModelVersion, session_scope
from worker.job_process import needs_bitsandbytes


def train_job(**config) -> Job:
    return Job(kind="train", config={"method": "lora", "training": {"optim": "adamw_torch"}, **config})


@pytest.mark.parametrize("job, needed", [
    (train_job(), False),
    (train_job(method="dora", training={}), False),
    (train_job(method="qlora"), True),
    (train_job(training={"optim": "paged_adamw_8bit"}), True),
    (train_job(training={"optim": "adamw_bnb_8bit"}), True),
    (Job(kind="export", config={"version_id": 1, "format": "merged"}), True),
    (Job(kind="evaluate", config={"version_id": 1, "dataset_id": 1}), True),
])
def test_which_jobs_need_bitsandbytes(job, needed):
    assert needs_bitsandbytes(job) is needed


def test_a_qlora_ancestor_needs_bitsandbytes(backend):
    from models_db import BaseModel

    with session_scope() as db:
        base = BaseModel(name="b", path="/x", source="/x")
        db.add(base)
        db.flush()
        qlora = ModelVersion(name="q", base_model_id=base.id, method="qlora")
        db.add(qlora)
        db.flush()
        lora = ModelVersion(name="l", base_model_id=base.id, method="lora", parent_id=qlora.id)
        db.add(lora)
        db.flush()
        ids = qlora.id, lora.id
    assert needs_bitsandbytes(train_job(parent_version_id=ids[1])) is True  # the grandparent quantizes
    with session_scope() as db:
        db.get(ModelVersion, ids[0]).method = "lora"
    assert needs_bitsandbytes(train_job(parent_version_id=ids[1])) is False


CHECK = """
import sys
from models_db import Job
from worker.job_process import skip_bitsandbytes

skip_bitsandbytes(Job(kind="train", config={"method": "lora", "training": {}}))
import peft  # the Trainer imports it; it imports bitsandbytes wherever it may

print(sys.modules.get("bitsandbytes", "unloaded"), peft.import_utils.is_bnb_available())
try:
    import bitsandbytes  # noqa: F401
except ImportError:
    print("refused")
"""


def test_a_lora_training_process_runs_without_bitsandbytes():
    """In its own process (as ``python -m worker.job_process`` runs): peft imports and sees no bitsandbytes, as on
    a machine without it (the fault tests train through such processes)."""
    pytest.importorskip("bitsandbytes")  # installed here: the switch has something to skip
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["None", "False", "refused"], p.stdout
