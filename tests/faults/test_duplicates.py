"""Fault 6: fifty concurrent identical submissions (a double click, a retried request) make one job
and send one task."""
import threading

import pytest
import redis

from tests.backends import REDIS


@pytest.mark.parametrize("studio", ["services_studio", "embedded_studio"])
def test_fifty_concurrent_identical_submissions_make_one_job(studio, request):
    s = request.getfixturevalue(studio)
    go, results, errors = threading.Barrier(50), [], []

    def submit():
        try:
            go.wait()
            results.append(s.submit(key="form-nonce-1"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 50 and len(set(results)) == 1
    assert s.count_jobs() == 1
    if studio == "services_studio":  # exactly one task message waits in the job's queue
        assert redis.Redis.from_url(REDIS).llen(s.env["STUDIO_WORKER_QUEUES"]) == 1
