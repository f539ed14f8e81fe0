"""Progress bars driven from inside compiled sweeps.

The compiled loops of :func:`~linoverfit.pretrain` (after every checkpoint segment),
:func:`~linoverfit.finetune` and :func:`~linoverfit.sensitivity.gaussian` (after every run) call
:func:`tick`, a :func:`jax.debug.callback` into this module. The call is compiled in
unconditionally, so turning the bar on or off never recompiles; with no bar open it returns at
once. A ``tqdm.auto`` bar (a text bar on stderr in a terminal, a widget in Jupyter) is open while
a sweep runs with ``progress=True``, or with ``progress=None`` (the default) when the sweep is
estimated (:func:`estimate_seconds`) to take more than :data:`AUTO_SECONDS`.

The environment variable ``LINOVERFIT_PROGRESS`` sets what ``progress=None`` means: ``0``
(never; the test suite sets it), ``1`` (always) or unset (by the estimate). Bars of sweeps run
concurrently from several Python threads would count each other's ticks: run such sweeps with
``progress=False``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jax.typing import ArrayLike

__all__ = ["AUTO_SECONDS", "FLOPS_PER_SECOND", "TICKS", "SweepCancelled", "estimate_seconds", "resolve", "bar",
           "cancelled", "tick", "tick_blocks", "tick_block", "TICK_SECONDS"]

#: ``progress=None`` shows a bar when the sweep is estimated to take longer than this (seconds).
AUTO_SECONDS = 5.0

#: Matmul rate assumed by :func:`estimate_seconds`, per device (per core on a lone CPU device):
#: a conservative fraction of what the sweeps reach (benchmarks/README.md: W1 runs at ~20-45
#: GFLOP/s on 2 CPU cores), so that a bar rather appears too often than too rarely.
FLOPS_PER_SECOND = {"cpu": 1e10, "gpu": 1e12, "tpu": 1e12}

#: Ticks per compiled loop (per part of a sweep): a host callback costs ~10 us on an idle CPU but
#: milliseconds on a loaded one, so a loop reports about this many times, whatever its length.
TICKS = 10

_ACTIVE: list = []  # the bars of the sweeps now running
_LOCK = threading.Lock()
_CANCEL = threading.Event()  # set while an interrupted sweep waits for its compiled work to stop


class SweepCancelled(RuntimeError):
    """Raised inside a progress tick to abort the compiled work of an interrupted sweep."""


class _QuietCancellation(logging.Filter):
    """Drop JAX's "jax.debug.callback failed" traceback when the failure is our own cancellation."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SweepCancelled))


logging.getLogger("jax._src.debugging").addFilter(_QuietCancellation())


@contextlib.contextmanager
def cancelled() -> Iterator[None]:
    """While open, every progress tick of every running sweep raises :class:`SweepCancelled`, which
    aborts its compiled program (XLA stops at a failing host callback); on exit ticks are harmless
    again. :func:`linoverfit.sweeps.sweep` opens it on ``KeyboardInterrupt`` and waits for its parts."""
    _CANCEL.set()
    try:
        yield
    finally:
        _CANCEL.clear()


def step_flops(widths: Sequence[int], rows: int | None = None) -> float:
    r"""Matmul FLOPs of one gradient step of a network with layer widths ``(d_in, ..., d_out)``:
    :math:`6\,r\sum_l n_l n_{l-1}` (forward, and two products per layer backward) with ``rows``
    :math:`r` = ``d_in`` for the population loss or the batch size for samples."""
    widths = [int(w) for w in widths]
    r = widths[0] if rows is None else int(rows)
    return 6.0 * r * sum(a * b for a, b in zip(widths[1:], widths[:-1]))


def estimate_seconds(flops: float, devices: int = 1) -> float:
    """Rough wall time of ``flops`` matmul FLOPs spread over ``devices`` devices of the default
    platform (on a lone CPU device: over its cores, as :mod:`linoverfit.parallel` does)."""
    platform = jax.devices()[0].platform
    rate = FLOPS_PER_SECOND.get(platform, FLOPS_PER_SECOND["gpu"])
    if platform == "cpu" and devices == 1:
        try:
            devices = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            devices = os.cpu_count() or 1
    return float(flops) / (rate * max(1, int(devices)))


#: Longest estimated stretch of compiled work between two ticks of a step loop, in seconds: ticks are
#: where an interrupted sweep stops (:func:`cancelled`), so this bounds the latency of Ctrl-C. The
#: estimate assumes the conservative :data:`FLOPS_PER_SECOND`, so real stretches are several times
#: shorter; each tick costs a host callback per vmapped run, so they are kept few.
TICK_SECONDS = 2.0


def tick_block(steps: int, flops_per_step: float, at_least: int = TICKS) -> int:
    """Steps between two ticks of a step loop of ``steps`` steps costing ``flops_per_step`` each:
    ``block = max(1, min(steps // at_least, TICK_SECONDS * rate / flops_per_step))`` (the first term
    dropped when ``at_least`` is 0), so the loop reports at least ``at_least`` times and at least
    every :data:`TICK_SECONDS` of estimated work. A block longer than the loop means no tick inside it."""
    rate = FLOPS_PER_SECOND.get(jax.devices()[0].platform, FLOPS_PER_SECOND["gpu"])
    by_time = int(min(TICK_SECONDS * rate / max(float(flops_per_step), 1.0), 2**30))
    if at_least:
        by_time = min(by_time, int(steps) // int(at_least))
    return max(1, by_time)


def resolve(progress: bool | None, seconds: float) -> bool:
    """Whether to show a bar: ``progress`` if given, else ``LINOVERFIT_PROGRESS`` if set, else
    ``seconds > AUTO_SECONDS``."""
    if progress is not None:
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}")
        return bool(progress)
    env = os.environ.get("LINOVERFIT_PROGRESS", "").strip().lower()
    if env in ("0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    return seconds > AUTO_SECONDS


class _Bar:
    """An open bar and the scale from ticks (padding included) to its units (real work only)."""

    def __init__(self, pbar, scale: float):
        self.pbar, self.scale, self.done = pbar, scale, 0.0

    def advance(self, amount: int) -> None:
        self.done += amount * self.scale
        delta = min(int(self.done + 1e-9), self.pbar.total) - self.pbar.n
        if delta > 0:
            self.pbar.update(delta)


@contextlib.contextmanager
def bar(progress: bool | None, *, total: int, desc: str, unit: str, seconds: float,
        ticks: int | None = None) -> Iterator[Any]:
    """Open a ``tqdm.auto`` bar of ``total`` ``unit`` for the duration of a sweep (or nothing, see
    :func:`resolve`); the ticks of the compiled sweep advance it. ``ticks``: the sum of all tick
    amounts when it differs from ``total`` (padding runs of a sharded sweep also tick), so the bar
    advances by ``total / ticks`` per tick unit. Yields the ``tqdm`` bar or ``None``."""
    if not resolve(progress, seconds):
        yield None
        return
    from tqdm.auto import tqdm

    pbar = tqdm(total=int(total), desc=desc, unit=unit, leave=None, dynamic_ncols=True)
    state = _Bar(pbar, int(total) / int(ticks or total))
    with _LOCK:
        _ACTIVE.append(state)
    ok = False
    try:
        yield pbar
        ok = True
    finally:
        try:
            jax.effects_barrier()  # every tick of this sweep has reached the host
        finally:
            with _LOCK:
                _ACTIVE.remove(state)
            if ok and pbar.n < pbar.total:  # rounding: show the finished sweep as done
                pbar.update(pbar.total - pbar.n)
            pbar.close()


def _host_tick(amount, _after) -> None:
    if _CANCEL.is_set():
        raise SweepCancelled("the sweep was interrupted")
    with _LOCK:
        for state in _ACTIVE:
            state.advance(int(amount))


def _dependency(after: Any):
    """One element of the smallest array in ``after`` (a pytree), or a constant when it has none."""
    leaves = [x for x in jax.tree.leaves(after) if hasattr(x, "shape")]
    return jnp.ravel(min(leaves, key=lambda x: x.size))[:1] if leaves else jnp.zeros(1)


def tick(amount: ArrayLike, after: Any = None) -> None:
    """Inside a compiled loop: advance the open bar by ``amount`` once ``after`` (any pytree of
    arrays, e.g. the values just computed) exists. One element of ``after`` goes to the host, so
    the call cannot run before the work it reports."""
    jax.debug.callback(_host_tick, amount, _dependency(after))


def tick_blocks(start: ArrayLike, n: ArrayLike, block: int, after: Any = None, amount: ArrayLike | None = None) -> None:
    """Inside a compiled loop that has done steps ``[0, start)`` and just did ``n`` more: tick by the
    whole ``block``-sized blocks crossed, so a loop of ``T`` steps reports ``T // block`` times
    however its segments are cut (all arguments may be traced); each block advances the bar by
    ``amount`` (default ``block``; 0 makes the ticks mere interrupt points)."""
    crossed = (start + n) // block - start // block
    per = block if amount is None else amount
    jax.lax.cond(crossed > 0, lambda dep: tick(crossed * per, dep), lambda dep: None, _dependency(after))
