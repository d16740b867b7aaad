"""The one timing loop behind ``sparsenet demo``/``bench``, the reproductions and
the results script: medians, since the machines these run on are shared."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def median_seconds(model: Callable[[np.ndarray], Any], x: np.ndarray, min_time: float, max_runs: int,
                   min_runs: int = 3, warmup: int = 1,
                   progress: Callable[[int, float], None] | None = None) -> float:
    """Median wall time of ``model(x)``: at least ``min_runs`` runs and ``min_time``
    seconds, at most ``max_runs`` runs, after ``warmup`` untimed calls (first
    touch of buffers, thread-pool start, the auto backend's one-off choice).
    ``progress(runs, median)`` is called after every run."""
    for _ in range(warmup):
        model(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
        if progress is not None:
            progress(len(times), float(np.median(times)))
    return float(np.median(times))
