"""What a running job's child process holds: its claim, its folders, and a batched, fenced writer."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from models_db import Job, session_scope
from models_db import jobs as jobq
from studio.settings import get_settings
from worker.tboard import TensorBoardSink


class MetricsWriter:
    """Collects progress and metric points from the training thread and writes them in one fenced
    transaction about twice a second, on its own thread, so training never waits on the database.
    ``sinks`` (e.g. worker/tboard.py's TensorBoard files) get the same points on the same thread."""

    def __init__(self, claim: jobq.Claim, interval: float = 0.5, sinks: tuple = ()):
        self.claim = claim
        self.interval = interval
        self.sinks = sinks
        self._q: queue.Queue = queue.Queue()
        self.stale = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-writer", daemon=True)
        self._thread.start()

    def put(self, metrics: list[tuple[int, str, float]] = (), **fields) -> None:
        self._q.put((list(metrics), fields))

    def _drain(self) -> None:
        metrics, fields = [], {}
        while True:
            try:
                m, f = self._q.get_nowait()
            except queue.Empty:
                break
            metrics.extend(m)
            fields.update(f)  # later progress wins
        if not metrics and not fields:
            return
        for sink in self.sinks:
            try:
                sink.write(metrics)
            except Exception as exc:  # noqa: BLE001 - a side copy of the metrics must never stop training
                print(f"metrics sink {type(sink).__name__} failed: {exc}", flush=True)
        try:
            with session_scope() as db:
                jobq.report(db, self.claim, metrics=metrics, **fields)
        except jobq.StaleFence:
            self.stale.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            time.sleep(self.interval)
            self._drain()

    def close(self) -> None:
        """Write whatever is pending, then stop."""
        self._stop.set()
        self._thread.join()
        self._drain()
        for sink in self.sinks:
            sink.close()


@dataclass
class JobContext:
    job: Job
    claim: jobq.Claim
    writer: MetricsWriter = field(init=False)
    # a measured pre-flight's step limit and run length (worker/preflight.py); None for a job that trains
    preflight: dict | None = None

    def __post_init__(self):
        from worker import distributed

        # one writer per job: with several training processes, rank 0's (worker/distributed.py)
        self.writer = (MetricsWriter(self.claim, sinks=(TensorBoardSink(self.dir / "tensorboard"),))
                       if distributed.is_main() else distributed.NullWriter())

    @property
    def dir(self) -> Path:
        return get_settings().path("jobs", str(self.job.id))

    def say(self, message: str) -> None:
        """Tell the browser what the job is doing now (and the log)."""
        print(message, flush=True)
        self.writer.put(message=message[:500])

    def check(self) -> None:
        if self.writer.stale.is_set():
            raise jobq.StaleFence(f"job {self.job.id}: claim superseded")
