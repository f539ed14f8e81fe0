"""Step grids at which pre-training is checkpointed.

Grids are strictly increasing integer step counts. Step 0 (the initialisation) is allowed.
"""

from __future__ import annotations

import numpy as np

from . import validation as _v

__all__ = ["log_checkpoints", "linear_checkpoints"]


def log_checkpoints(total_steps: int, n: int, first: int = 1) -> np.ndarray:
    r"""``n`` distinct, roughly log-spaced step counts from ``first`` to ``total_steps`` inclusive.

    Points are :math:`\mathrm{round}(\text{first}\cdot(\text{total}/\text{first})^{k/(n-1)})`, pushed up
    by one where rounding would repeat a step, so exactly ``n`` steps are returned
    (``n <= total_steps - first + 1`` required).

    Examples:
      >>> import linoverfit as lo
      >>> lo.log_checkpoints(1000, 5)
      array([   1,    6,   32,  178, 1000])
    """
    total_steps = _v.positive_int(total_steps, "total_steps")
    n = _v.positive_int(n, "n")
    first = _v.positive_int(first, "first")
    if first > total_steps:
        raise ValueError(f"first ({first}) must be <= total_steps ({total_steps})")
    if n > total_steps - first + 1:
        raise ValueError(f"n ({n}) is more than the {total_steps - first + 1} distinct steps in [{first}, {total_steps}]")
    if n == 1:
        return np.array([total_steps], dtype=np.int64)
    raw = np.round(np.geomspace(first, total_steps, n)).astype(np.int64)
    out = raw.copy()
    for i in range(1, n):
        out[i] = max(out[i], out[i - 1] + 1)
    # pushing up can overshoot the end; pull the tail back down to keep total_steps last
    out[-1] = total_steps
    for i in range(n - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    return out


def linear_checkpoints(total_steps: int, n: int, include_zero: bool = False) -> np.ndarray:
    """``n`` evenly spaced step counts ending at ``total_steps`` (starting at 0 with ``include_zero``).

    Examples:
      >>> import linoverfit as lo
      >>> lo.linear_checkpoints(1000, 4)
      array([ 250,  500,  750, 1000])
      >>> lo.linear_checkpoints(1000, 5, include_zero=True)
      array([   0,  250,  500,  750, 1000])
    """
    total_steps = _v.positive_int(total_steps, "total_steps")
    n = _v.positive_int(n, "n")
    if include_zero and n < 2:
        raise ValueError(f"n={n} with include_zero=True gives only step 0; n counts step 0 too, so pass n >= 2 "
                         f"(e.g. n=2 for [0, {total_steps}])")
    start = 0 if include_zero else total_steps / n
    out = np.round(np.linspace(start, total_steps, n)).astype(np.int64)
    return _v.step_grid(out, "checkpoints")
