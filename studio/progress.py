"""A progress bar on stderr for the CLI: redrawn in place on a terminal, a line every few seconds otherwise."""
from __future__ import annotations

import sys
import time


class Bar:
    def __init__(self, stream=sys.stderr, width: int = 30, every: float = 5.0):
        self.stream, self.width, self.every = stream, width, every
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self._last = None

    def update(self, done: int, total: int, label: str = "") -> None:
        frac = done / total if total else 0.0
        filled = int(self.width * frac)
        eta = ""
        elapsed = time.monotonic() - self.t0
        if 0 < done < total:
            eta = f" ETA {int(elapsed / done * (total - done))}s"
        line = f"[{'#' * filled}{'-' * (self.width - filled)}] {done}/{total or '?'}{eta} {label}"[:120]
        if self.tty:
            self.stream.write("\r" + line.ljust(120))
            self.stream.flush()
        elif line != self._last and time.monotonic() - self._last_line >= self.every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line = time.monotonic()
        self._last = line

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        elif self._last:
            self.stream.write(self._last + "\n")
        self.stream.flush()
