"""Wall-clock timing shared by the benchmarks: warm calls only, so jit compilation is excluded."""

from __future__ import annotations

import time
from typing import Any, Callable


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Wall times in seconds of ``repeat`` calls of ``fn`` after one warm-up call (imports, jit
    compilation, caches), and the last call's result."""
    fn()
    runs, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return runs, out
