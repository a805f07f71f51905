"""A job's metrics as TensorBoard event files in its folder (``jobs/<id>/tensorboard``), so people can
open them with the tools they already use (``tensorboard --logdir``), written by ``tensorboardX``
(light: numpy and protobuf) on the metrics writer's thread; and a small reader for them (tests,
scripts), since tensorboardX has none and the ``tensorboard`` package is heavy."""
from __future__ import annotations

import struct
from pathlib import Path

# metric name prefix -> TensorBoard section; everything else is "train/<name>"
SECTIONS = (("eval_", "eval/"), ("sys_", "system/"))
PERF = {"tokens_per_s", "samples_per_s", "step_time_s", "peak_memory_gb", "mfu", "hfu", "tokens_seen"}


def tag(name: str) -> str:
    """The TensorBoard tag of a metric: eval_loss -> eval/loss, sys_cpu_pct -> system/cpu_pct, ..."""
    for prefix, section in SECTIONS:
        if name.startswith(prefix):
            return section + name[len(prefix):]
    return ("perf/" if name in PERF else "train/") + name


class TensorBoardSink:
    """Writes metric points as scalars; the event file is created with the first point (a job that
    logs nothing, like an export, leaves no folder behind)."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self._writer = None

    def write(self, points: list[tuple[int, str, float]]) -> None:
        if not points:
            return
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.logdir), flush_secs=10)
        for step, name, value in points:
            self._writer.add_scalar(tag(name), value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``logdir``: ``{tag: [(step, value), ...]}`` in file order.

    Reads the TFRecord framing directly (length, its CRC, the record, its CRC; CRCs not checked)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
