"""Fault 8: kill the training process while it writes a checkpoint. The torn checkpoint (no completion
marker) is ignored: the retry resumes from the last complete one, removes the torn folder, and
finishes with only complete checkpoints on disk."""
import os
import signal
import time

from worker.checkpoints import COMPLETE


def kill_mid_save(ckpts, pid: int, timeout: float = 120) -> tuple[int, int]:
    """Watch the checkpoint folder; once a complete checkpoint exists, freeze the process as soon as a
    newer folder exists without its marker, and kill it if the marker is still missing once frozen
    (else let it go on and try the next save). Returns (torn step, newest complete step)."""
    end = time.monotonic() + timeout
    passed: set[str] = set()
    while time.monotonic() < end:
        names = os.listdir(ckpts) if ckpts.exists() else []
        for name in names:
            if name in passed or not name.startswith("checkpoint-"):
                continue
            if (ckpts / name / COMPLETE).exists() or not passed:
                passed.add(name)  # the first one is left alone: the retry must have one to resume from
                continue
            os.kill(pid, signal.SIGSTOP)
            if not (ckpts / name / COMPLETE).exists() and (ckpts / name).exists():
                os.kill(pid, signal.SIGKILL)
                done = [int(n.split("-")[1]) for n in os.listdir(ckpts) if (ckpts / n / COMPLETE).exists()]
                return int(name.split("-")[1]), max(done, default=0)
            os.kill(pid, signal.SIGCONT)
            passed.add(name)
        time.sleep(0.001)
    raise AssertionError("never caught a checkpoint mid-write")


def test_kill_during_a_checkpoint_write_resumes_from_the_last_complete_one(services_studio):
    s = services_studio
    s.start_worker()
    job_id = s.submit(save_steps=2, max_steps=30)
    pid = s.current_pid(job_id, attempt=1)
    torn, resume_at = kill_mid_save(s.checkpoints(job_id), pid)
    assert 0 < resume_at < torn and not (s.checkpoints(job_id) / f"checkpoint-{torn}" / COMPLETE).exists()

    job = s.wait_state(job_id, "succeeded", timeout=180)
    assert job.attempt == 2 and job.history[1]["resumed_from"] == resume_at
    log = s.log(job_id)
    assert f"removed checkpoint-{torn}: its save never finished" in log
    assert f"resuming from checkpoint-{resume_at}" in log
    left = [p for p in s.checkpoints(job_id).iterdir() if p.name.startswith("checkpoint-")]
    assert left and all((p / COMPLETE).exists() for p in left)
