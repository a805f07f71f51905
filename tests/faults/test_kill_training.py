"""Fault 1: kill -9 the training process after a checkpoint. Exactly one new attempt starts, it resumes
at that checkpoint's step (optimizer, scheduler, RNG and data position restored), and the final
weights equal those of an uninterrupted run with the same seed."""
import torch

from tests.faults.conftest import kill9


def test_kill9_training_process_resumes_at_last_checkpoint_with_identical_weights(services_studio):
    s = services_studio
    s.start_worker()
    s.start_worker()
    killed = s.submit()
    reference = s.submit()  # the same run, never interrupted (on the other worker)

    pid = s.hold_after_checkpoint(killed)  # still running when killed, however fast this machine is
    kill9(pid)
    resume_at = max(s.complete_steps(killed))  # the newest complete checkpoint when it died

    job = s.wait_state(killed, "succeeded", timeout=180)
    s.wait_state(reference, "succeeded", timeout=180)
    assert job.attempt == 2, job.history  # exactly one new attempt
    first, second = job.history
    assert first["outcome"] == "interrupted" and "killed by signal 9" in first["reason"]
    assert second["outcome"] == "succeeded" and second["resumed_from"] == resume_at
    assert f"resuming from checkpoint-{resume_at}" in s.log(killed)
    # the loss curve continues where it stopped: the second attempt logs from the next step on
    assert s.loss_steps(killed, 2) == list(range(resume_at + 1, 41))

    got, want = s.adapter(killed), s.adapter(reference)
    assert got.keys() == want.keys() and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
