"""Live curves for the browser: metric points arrive a few at a time (the Jobs tab reads only new ones on
each tick), a retry's points replace the ones its attempt resumed over, and a long curve is thinned to
at most ``max_points`` per series with min/max buckets, so a spike (a loss blow-up, a memory peak)
stays visible however long the run and the browser never receives more than a few thousand rows.

Memory is bounded too: a series is thinned again whenever it doubles past ``max_points``, so a job
with a million points costs the UI process a few thousand per series."""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MAX_POINTS = 2000


def downsample(y, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of ``y`` (in order): the first, the last, and the minimum and
    the maximum of each of ``max_points // 2 - 1`` equal buckets between them."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(max_points // 2 - 1, 1)
    inner = np.arange(1, n - 1)
    bucket = (inner - 1) * buckets // (n - 2)
    order = inner[np.lexsort((y[inner], bucket))]  # by bucket, then by value
    b = bucket[order - 1]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    keep = np.unique(np.r_[0, order[starts], order[ends], n - 1])
    return keep


@dataclass
class LiveCurves:
    """Per metric name: x, value and attempt lists, in x order, newest attempt winning."""

    max_points: int = MAX_POINTS
    series: dict[str, tuple[list, list, list]] = field(default_factory=dict)

    def add(self, name: str, x: float, value: float, attempt: int = 1) -> None:
        xs, ys, attempts = self.series.setdefault(name, ([], [], []))
        if attempts and attempt > attempts[-1]:  # a retry resumed at a checkpoint: its points replace the rest
            cut = bisect_left(xs, x)
            del xs[cut:], ys[cut:], attempts[cut:]
        elif attempts and attempt < attempts[-1]:
            return  # a superseded attempt's late point
        if xs and x == xs[-1] and attempt == attempts[-1]:  # the same step logged again: the later value wins
            ys[-1] = value
            return
        xs.append(x), ys.append(value), attempts.append(attempt)
        if len(xs) > 2 * self.max_points:
            self._thin(name)

    def _thin(self, name: str) -> None:
        xs, ys, attempts = self.series[name]
        keep = downsample(ys, self.max_points)
        self.series[name] = ([xs[i] for i in keep], [ys[i] for i in keep], [attempts[i] for i in keep])

    def latest(self, name: str) -> float | None:
        s = self.series.get(name)
        return s[1][-1] if s and s[1] else None

    def frame(self, names, expected=(), x: str = "step", x_type: str = "int64") -> pd.DataFrame:
        """Rows (x, value, series) of ``names``, each thinned to ``max_points``. Every name in ``expected``
        gets at least a blank (NaN) row once any point exists: the chart fixes its legend's domain from the
        first frame it draws, so a curve that starts later would otherwise never be drawn."""
        parts = []
        for name in names:
            xs, ys, _ = self.series.get(name, ([], [], []))
            if not xs:
                continue
            keep = downsample(ys, self.max_points)
            parts.append(pd.DataFrame({x: np.asarray(xs)[keep], "value": np.asarray(ys, dtype=float)[keep],
                                       "series": name}))
        if parts:
            first = parts[0][x].iloc[0]
            present = {p["series"].iloc[0] for p in parts}
            parts += [pd.DataFrame({x: [first], "value": [float("nan")], "series": [name]})
                      for name in expected if name not in present]
            df = pd.concat(parts, ignore_index=True)
        else:
            df = pd.DataFrame({x: [], "value": [], "series": []})
        # explicit dtypes: an empty or object-typed frame makes the chart treat values as categories
        return df[[x, "value", "series"]].astype({x: x_type, "value": "float64"})
