"""Fault 9: embedded mode on SQLite with the UI reading and writing, a worker heartbeating and reaping,
and a training process writing metrics, all at once: no "database is locked", nothing lost."""
import threading

from tests.cli import wait_until


def test_sqlite_ui_worker_and_training_write_at_once_without_locking_errors(embedded_studio):
    from studio.operations import cancel_job
    from studio.tabs import jobs as jobs_tab

    s = embedded_studio
    worker = s.start_worker()
    job_id = s.submit(max_steps=40, save_steps=10)
    stop, errors, polls = threading.Event(), [], [0]

    def ui_reader():  # what a browser tab's timer does (every 1.5 s; here 20 times a second), by its handler
        cache = None
        while not stop.wait(0.05):
            try:
                *_, cache = jobs_tab.poll(job_id, cache)  # status, curve, log, attempts and the queue
                polls[0] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

    def ui_writer():  # people submitting and cancelling meanwhile
        while not stop.wait(0.2):
            try:
                cancel_job(s.submit(after=job_id))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=ui_reader) for _ in range(3)] + [threading.Thread(target=ui_writer)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: s.job(job_id).state not in ("queued", "running"), timeout=180, every=0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    job = s.job(job_id)
    assert job.state == "succeeded" and job.attempt == 1, job.error
    assert polls[0] > 20 and s.count_jobs() > 5
    assert s.loss_steps(job_id, 1) == list(range(1, 41))  # every metric point written
    for text in (s.log(job_id), worker.log_path.read_text()):
        assert "database is locked" not in text
