r"""The one seam between a single run and many: ``lo.sweep(fn, runs, shared, layout=lo.Layout(...))``.

A *single-run function* ``fn(run, shared) -> outputs`` computes one run (one start, one learning
rate, one key, ...) from plain pytrees: ``run`` holds that run's slice of ``runs`` (leaves of shape
``(N, ...)``), ``shared`` what every run reads. It knows nothing of devices, threads or batches.
:func:`sweep` maps it over the ``N`` runs, which is exactly
``jax.vmap(fn, in_axes=(0, None))(runs, shared)`` (up to round-off: each run is computed by the same
per-chunk program whatever the layout, so sharded, threaded and single-device sweeps agree
bitwise in practice), and owns everything about *how*:

* one compiled program per sweep shape (``fn`` is a static argument of one ``jax.jit``; pass a
  module-level function or a frozen dataclass with ``__call__``, not a new lambda per call);
* the layout, :class:`Layout`: the devices the runs are sharded over (``jax.sharding``), the runs
  per vmapped chunk, and on a lone CPU device one concurrent part per core, each run from a thread
  (see :mod:`linoverfit.parallel`);
* the memory estimate (:class:`Footprint`, checked before anything is allocated) and the progress
  bar (advanced from inside the compiled program);
* interrupts: ``KeyboardInterrupt`` (Ctrl-C in a terminal, "interrupt kernel" in Jupyter) cancels
  the compiled work at its next progress report and returns once every part has stopped, so the
  process is idle and usable again.

Example, a user's own single-run function swept over 2 x 3 runs::

    def run_gd(run, shared):                       # one lr, one start: plain JAX
        lr, w0 = run
        x, y = shared
        def step(_, w):
            return w - lr * jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return jax.lax.fori_loop(0, 100, step, w0)

    runs = (jnp.repeat(lrs, 3), jnp.tile(starts, (2, 1)))     # leaves (6, ...)
    w = lo.sweep(run_gd, runs, (x, y), layout=lo.Layout(devices=2, chunk=3))   # (6, d)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np

from . import deprecation as _deprecation
from . import memory as _mem
from . import parallel as _par
from . import progress as _progress
from . import validation as _v
from .precision import enable_x64

__all__ = ["Layout", "Footprint", "Work", "sweep", "resolve_layout", "check_footprint"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where and how the runs of a sweep go; none of it changes the results: the runs (leading
    axis of shape ``(n, ...)`` on every leaf) are split over devices and chunks and joined back
    into the same ``(n, ...)`` outputs, bit for bit.

    Attributes:
      devices: ``None`` (all devices of :func:`jax.devices`; on a lone CPU device, one part per
        core from threads), an ``int`` (the first ``n``), a sequence of devices, or a
        :class:`jax.sharding.Mesh`. Runs are sharded over them.
      chunk: runs per vmapped loop on a device (``None``: the sweep's default; 4 for fine-tuning,
        1 for sensitivity, all of a device's seeds for pre-training).
      progress: a ``tqdm.auto`` bar advanced from inside the compiled program; ``None`` shows it
        when the sweep is estimated to take more than a few seconds (or as ``LINOVERFIT_PROGRESS``
        says). Never recompiles.
    """

    devices: Any = None
    chunk: int | None = None
    progress: bool | None = None


def resolve_layout(layout: Layout | None, devices: Any = None, chunk: int | None = None,
                   progress: bool | None = None) -> Layout:
    """``layout``, or a :class:`Layout` from the shorthands ``devices=``, ``chunk=``, ``progress=`` of
    the sweep functions (not both). ``devices=`` and ``chunk=`` are deprecated (the simulation's
    arguments say what to compute, ``layout`` how); ``progress=`` stays, for notebooks."""
    if devices is not None or chunk is not None:
        _deprecation.warn_once("passing devices= or chunk= to lo.pretrain, lo.finetune or lo.sensitivity.gaussian",
                               "layout=lo.Layout(devices=..., chunk=...)", stacklevel=3)
    if layout is None:
        if chunk is not None:
            chunk = _v.positive_int(chunk, "chunk")
        return Layout(devices=devices, chunk=chunk, progress=progress)
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a linoverfit.Layout, got {type(layout).__name__}")
    if devices is not None or chunk is not None or progress is not None:
        raise ValueError("pass either layout=lo.Layout(devices=..., chunk=..., progress=...) or the shorthands "
                         "devices=/chunk=/progress=, not both")
    return layout


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes of a sweep, for the memory check, which refuses
    ``peak = shared + per_run * in_flight + 3 * n * per_output`` bytes above what is available:
    ``shared`` (held once), ``per_run`` (the working set
    of a run in flight) and ``per_output`` (each run's outputs, counted three times: the parts'
    outputs, their join and the caller's layout). ``what`` names the sizes and ``fix`` the options
    that shrink them, for the error message."""

    shared: int
    per_run: int
    per_output: int
    what: str
    fix: str
    label: str = "the sweep"


@dataclasses.dataclass(frozen=True)
class Work:
    """What the progress bar counts: ``total`` units named ``unit`` (default: ``total = n`` runs), reached
    when the compiled program's ticks sum to ``ticks_per_run`` per computed run (padding included),
    and ``flops`` for the time estimate that decides whether a bar is shown."""

    desc: str = "sweep"
    unit: str = "run"
    total: int | None = None
    ticks_per_run: int = 1
    flops: float = 0.0


@partial(jax.jit, static_argnames=("fn", "mesh", "chunk", "parts", "tick"))
def _program(runs, shared, part, *, fn, mesh, chunk, parts, tick):
    """The compiled sweep: part ``part`` of the padded runs (see :func:`linoverfit.parallel.sweep`)."""
    return _par.sweep(fn, runs, shared, mesh=mesh, chunk=chunk, part=part, parts=parts, tick_runs=tick)


@partial(jax.jit, static_argnames=("n",))
def _join(outs, n):
    return _par.assemble(outs, n)


def _default_footprint(fn, runs, shared, n) -> Footprint:
    """Inputs held once, and per run its slice of ``runs`` and its outputs (from ``jax.eval_shape``)."""
    def nbytes(tree):
        return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
                   if hasattr(x, "shape") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))

    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), runs)
    out = jax.eval_shape(fn, one, shared)
    return Footprint(nbytes(shared) + nbytes(runs), 4 * (nbytes(one) + nbytes(out)), nbytes(out),
                     f"{n} runs", "pass fewer runs per call or a smaller chunk")


def check_footprint(footprint: Footprint, n: int, layout: Layout, default_chunk: int | None = 4) -> _par.Plan:
    """Refuse (:class:`~linoverfit.errors.MemoryBudgetError`) a sweep of ``n`` runs whose estimated peak
    bytes ``peak = shared + per_run * in_flight + 3 * n * per_output`` exceed what is available, ``in_flight``
    being a chunk per part per device. Returns the sweep's :class:`~linoverfit.parallel.Plan`."""
    chunk = layout.chunk if layout.chunk is not None else default_chunk
    plan = _par.Plan(layout.devices, n, chunk, per_device_chunk=chunk is None)
    in_flight = min(n, plan.chunk * plan.parts * plan.devices)
    fp = footprint
    _mem.require(fp.shared + fp.per_run * in_flight + 3 * n * fp.per_output, fp.label, fp.what, fp.fix)
    return plan


def _run_parts(plan: _par.Plan, call: Callable[[np.int32], Any]) -> list:
    """``[call(part) for part in range(plan.parts)]``, each part in a worker thread, waited for from
    this thread so that an interrupt reaches it at once. On ``KeyboardInterrupt`` the running
    parts are cancelled (at their next progress tick) and awaited before the interrupt propagates."""
    x64 = bool(jax.config.jax_enable_x64)  # thread-local: enter the caller's setting in each worker

    def work(k):
        with enable_x64(x64):
            return jax.block_until_ready(call(np.int32(k)))

    pool = _par.pool(plan.parts)
    futures = [pool.submit(work, k) for k in range(plan.parts)]
    try:
        while True:
            _, pending = concurrent.futures.wait(futures, timeout=0.05)
            if not pending:
                break
    except KeyboardInterrupt:
        with _progress.cancelled():
            concurrent.futures.wait(futures)
        raise
    return [f.result() for f in futures]


def sweep(fn: Callable, runs: Any, shared: Any = None, *, layout: Layout | None = None,
          work: Work | None = None, footprint: Footprint | None = None, default_chunk: int | None = 4,
          tick: bool = True) -> Any:
    r"""``jax.vmap(fn, in_axes=(0, None))(runs, shared)``, compiled once, laid out by ``layout``.

    Args:
      fn: single-run function ``fn(run, shared) -> outputs`` (a pytree of arrays); pure, traceable,
        hashable (a module-level function, or a frozen dataclass with ``__call__``).
      runs: pytree whose leaves have a leading run axis ``N`` (all the same ``N >= 1``).
      shared: pytree read by every run (broadcast, replicated on every device).
      layout: :class:`Layout` (devices, chunk, progress); default ``Layout()``.
      work: what the progress bar counts (default: runs; see :class:`Work`).
      footprint: the memory estimate (default: from the shapes of ``runs``, ``shared`` and
        ``fn``'s outputs); a sweep that would not fit raises :class:`~linoverfit.errors.MemoryBudgetError`.
      default_chunk: runs per vmap when ``layout.chunk`` is ``None`` (``None``: all of a part's runs).
      tick: advance the bar by one per finished run (``False`` when ``fn`` ticks itself, via
        :func:`linoverfit.progress.tick_blocks`).

    Returns ``fn``'s outputs with a leading axis ``N``. Raises ``KeyboardInterrupt`` after the
    compiled work has stopped when interrupted.
    """
    layout = Layout() if layout is None else layout
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a linoverfit.Layout, got {type(layout).__name__}")
    leaves = jax.tree.leaves(runs)
    if not leaves or any(np.ndim(x) == 0 for x in leaves):
        raise ValueError("runs must be a pytree of arrays with a leading run axis (N, ...)")
    n = int(np.shape(leaves[0])[0])
    if n < 1 or any(np.shape(x)[0] != n for x in leaves):
        raise ValueError(f"every leaf of runs must have the same leading run axis; got {[np.shape(x) for x in leaves]}")
    fp = _default_footprint(fn, runs, shared, n) if footprint is None else footprint
    plan = check_footprint(fp, n, layout, default_chunk)

    work = Work() if work is None else work
    total = n if work.total is None else work.total
    runs, shared = plan.shared(runs), plan.shared(shared)
    with _progress.bar(layout.progress, total=total, ticks=work.ticks_per_run * plan.padded, unit=work.unit,
                       desc=work.desc, seconds=_progress.estimate_seconds(work.flops, plan.devices)):
        call = partial(_program, runs, shared, fn=fn, mesh=plan.mesh, chunk=plan.chunk, parts=plan.parts, tick=tick)
        outs = _run_parts(plan, call)
        return jax.block_until_ready(plan.finish(_join(outs, n)))
