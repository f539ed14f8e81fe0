r"""Sharding sweeps across devices (CPU cores, GPUs, TPUs, several hosts).

Every sweep in linoverfit (seeds in :func:`~linoverfit.pretrain`, checkpoint x seed x learning
rate in :func:`~linoverfit.finetune`, checkpoint x seed in
:func:`~linoverfit.sensitivity.gaussian`) is a batch of independent runs. The batch is
flattened to one axis, padded to a multiple of ``devices x chunk`` (padding repeats the last
run and is dropped afterwards), sharded over a one-axis :class:`jax.sharding.Mesh` with
:class:`~jax.sharding.NamedSharding` and run with :func:`jax.shard_map`; on each device the local
runs are processed ``chunk`` at a time (``lax.map`` over chunks of a ``vmap``), so each device's
working set stays in cache while the matmuls are batched. No communication happens between runs.

Because every run is computed by the same per-chunk program whatever the number of devices,
a sharded sweep reproduces the single-device one (bitwise in practice; the test suite checks it
on 4 simulated CPU devices).

``devices`` (the keyword of every sweep function) may be ``None`` (all devices of
:func:`jax.devices`, i.e. every device of every process after :func:`jax.distributed.initialize`),
an ``int`` ``n`` (the first ``n``), a sequence of devices, or a :class:`~jax.sharding.Mesh`
(its devices, flattened).

On a CPU-only machine JAX exposes one device by default, and XLA runs the small matmuls of
these sweeps on one core. There, with ``devices=None``, a sweep is cut into one part per core
(:data:`CPU_THREADS`) and the parts run concurrently from threads, each through the same
compiled program, so every core works without changing any JAX option. Alternatively
:func:`use_cpu_devices` (opt-in, before the first JAX computation) exposes one CPU device per
core and the sweeps shard over them like over GPUs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import progress as _progress
from .validation import positive_int

__all__ = ["use_cpu_devices", "resolve_devices", "sweep_mesh", "sweep", "sweep_map", "assemble", "Plan", "gather",
           "pool", "AXIS", "CPU_THREADS"]

#: Name of the mesh axis that sweeps are sharded over.
AXIS = "sweep"


def use_cpu_devices(n: int | None = None) -> int:
    """Expose ``n`` CPU devices (default ``n`` = the cores this process may run on) so sweeps use every core.

    Must be called right after ``import jax`` / ``import linoverfit``, before any JAX computation
    (it sets the ``jax_num_cpu_devices`` option, which JAX reads once when it starts its CPU
    backend). Only the CPU platform is affected; it is opt-in because it changes what
    ``jax.devices("cpu")`` returns for the rest of the process. Returns ``n``.
    """
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as err:
        raise RuntimeError(
            "use_cpu_devices must be called before the first JAX computation (right after the imports); "
            "alternatively start Python with XLA_FLAGS=--xla_force_host_platform_device_count=N"
        ) from err
    return n


def resolve_devices(devices: Any = None) -> tuple:
    """Normalise a ``devices=`` argument to a non-empty tuple of devices, shape ``(k,)`` (see module docs)."""
    if devices is None:
        return tuple(jax.devices())
    if isinstance(devices, Mesh):
        return tuple(devices.devices.flat)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        all_devices = jax.devices()
        if not 1 <= devices <= len(all_devices):
            raise ValueError(f"devices={devices} but {len(all_devices)} device(s) are available")
        return tuple(all_devices[: int(devices)])
    if isinstance(devices, jax.Device):
        return (devices,)
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        if len(set(devices)) != len(devices):
            raise ValueError("devices contains the same device twice")
        return tuple(devices)
    raise TypeError("devices must be None (all devices), an int, a sequence of jax devices, or a jax.sharding.Mesh")


def sweep_mesh(devices: Any, n_runs: int) -> Mesh:
    """One-axis mesh of shape ``(k,)``, ``k = min(len(devices), n_runs)`` (no device idles on padding only)."""
    devices = resolve_devices(devices)
    k = max(1, min(len(devices), int(n_runs)))
    return Mesh(np.asarray(devices[:k], dtype=object), (AXIS,))


def pad_runs(tree: Any, n_padded: int) -> Any:
    """Pad every leaf from shape ``(n, ...)`` to ``(n_padded, ...)`` by repeating the last run."""

    def pad(x):
        n = x.shape[0]
        if n == n_padded:
            return x
        return jnp.concatenate([x, jnp.repeat(x[-1:], n_padded - n, axis=0)], axis=0)

    return jax.tree.map(pad, tree)


def sweep_map(fn: Callable, runs: Any, shared: Any, *, mesh: Mesh, chunk: int, tick_runs: bool = False) -> Any:
    """``vmap(fn, (0, None))(runs, shared)`` sharded over ``mesh`` and chunked on each device.

    ``runs``: pytree whose leaves have shape ``(N, ...)``, ``N`` a multiple of ``mesh.size * chunk``;
    ``shared``: pytree broadcast to every run. Call inside ``jit``. Returns ``fn``'s outputs with a
    leading axis ``N``, sharded over ``mesh``.
    """

    def local(runs, shared):
        return map_chunks(fn, runs, shared, chunk, tick_runs)

    spec = PartitionSpec(AXIS)
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec, check_vma=False)
    runs = jax.lax.with_sharding_constraint(runs, NamedSharding(mesh, spec))
    return mapped(runs, shared)


def put_runs(tree: Any, mesh: Mesh) -> Any:
    """Place the run axis of ``tree``'s leaves on ``mesh`` (works across processes: every process passes the same values)."""
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def put_shared(tree: Any, mesh: Mesh) -> Any:
    """Replicate ``tree`` (leaves of any shape) on every device of ``mesh``; across processes every
    process must pass the same values (as it does when all build their inputs from the same keys)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: _replicated(x, sharding), tree)


def _replicated(x, sharding):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_replicated(jax.random.key_data(x), sharding), impl=impl)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


#: Concurrent executions of a sweep on a lone CPU device: ``None`` = one per core this process may
#: use, ``1`` = off. XLA runs the small matmuls of these sweeps on one core, and the CPU client runs
#: executions dispatched from different threads in parallel, so the sweep is cut into this many
#: parts, each run by the same compiled program from its own thread (no JAX option is changed).
CPU_THREADS: int | None = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_POOL: list = []  # [ThreadPoolExecutor], created on first use and kept (threads are reused)
_POOL_LOCK = threading.Lock()


def pool(n: int) -> ThreadPoolExecutor:
    """The shared worker threads (at least ``n``, one per core), created on first use and kept."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < n:
            if _POOL:
                _POOL.pop().shutdown(wait=False)
            _POOL.append(ThreadPoolExecutor(max(n, _cores()), thread_name_prefix="linoverfit-sweep"))
        return _POOL[0]


class Plan:
    """How a sweep of ``n`` runs is laid out: ``mesh`` (``None``: the default device, no shard_map),
    ``chunk``, the runs per vmapped loop on a device, and ``parts``, concurrent executions of the
    compiled sweep (each on its own contiguous share of the runs).

    Inside the compiled sweep the run arrays, shape ``(n, ...)``, are padded to ``(n_padded, ...)``,
    ``n_padded`` = a multiple of ``devices * chunk * parts`` (see :func:`padded`); :func:`assemble`
    cuts the parts' outputs back to ``n``. The default ``chunk`` is 4 runs per vmap (batched matmuls
    that stay in cache; measured best on CPU for widths 64 and 256), or with ``per_device_chunk``
    all of a device's (or part's) runs (pre-training: few seeds, long sequential loops). ``parts``
    is 1 except on a lone CPU device without an explicit ``devices`` (see :data:`CPU_THREADS`).
    Every run is computed by the same per-chunk program whatever the layout, so sharded,
    threaded and single-device sweeps agree.
    """

    def __init__(self, devices: Any, n: int, chunk: int | None = None, per_device_chunk: bool = False) -> None:
        if chunk is not None:
            chunk = positive_int(chunk, "chunk")
        self.n = int(n)
        mesh = sweep_mesh(devices, self.n)
        # one default device and no explicit request: plain jit, no mesh (arrays stay uncommitted)
        self.mesh = mesh if (mesh.size > 1 or devices is not None) else None
        parts = 1
        if self.mesh is None and jax.devices()[0].platform == "cpu":
            parts = _cores() if CPU_THREADS is None else int(CPU_THREADS)
        parts = max(1, min(parts, self.n))
        if chunk is None:
            chunk = -(-self.n // (mesh.size * parts)) if per_device_chunk else 4
        self.chunk = max(1, int(chunk))
        self.parts = max(1, min(parts, -(-self.n // self.chunk)))  # no part without a real run

    @property
    def padded(self) -> int:
        """Runs actually computed, padding included (see :func:`padded`)."""
        return padded(self.n, self.mesh, self.chunk, self.parts)

    @property
    def devices(self) -> int:
        """Devices the sweep runs on (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.size

    def shared(self, tree: Any) -> Any:
        """Inputs of the compiled sweep, replicated on every device of the mesh (so inputs committed
        elsewhere, e.g. results of an earlier sweep, are accepted; across processes every process
        passes the same values)."""
        if self.mesh is None:
            return tree
        return put_shared(tree, self.mesh)

    def finish(self, outputs: Any) -> Any:
        """Bring the outputs back to one place every process can read (see :func:`gather`)."""
        return gather(outputs) if self.mesh is not None else outputs


def padded(n: int, mesh: Mesh | None, chunk: int, parts: int = 1) -> int:
    """Run count after padding: the smallest multiple of ``devices * chunk * parts`` that is ``>= n``."""
    m = (1 if mesh is None else mesh.size) * chunk * parts
    return -(-int(n) // m) * m


def sweep(fn: Callable, runs: Any, shared: Any, *, mesh: Mesh | None, chunk: int, part: Any = 0, parts: int = 1,
          tick_runs: bool = True) -> Any:
    """Inside ``jit``: ``vmap(fn, (0, None))(runs, shared)`` padded, sharded over ``mesh`` (or on one
    device if ``None``), ``chunk`` runs per vmap. ``runs`` leaves have shape ``(n, ...)``. With
    ``parts > 1`` only part ``part`` (traced) of the padded runs is computed. The outputs have a
    leading axis ``padded(n, ...) / parts``, padding included: :func:`assemble` joins and cuts them.
    With ``tick_runs`` finished runs advance the open progress bar (see :func:`map_chunks`)."""
    n = jax.tree.leaves(runs)[0].shape[0]
    n_pad = padded(n, mesh, chunk, parts)
    runs = pad_runs(runs, n_pad)
    if parts > 1:
        m = n_pad // parts
        runs = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, part * m, m), runs)
    if mesh is None:
        return map_chunks(fn, runs, shared, chunk, tick_runs)
    return sweep_map(fn, runs, shared, mesh=mesh, chunk=chunk, tick_runs=tick_runs)


def map_chunks(fn: Callable, runs: Any, shared: Any, chunk: int, tick_runs: bool = True) -> Any:
    """``jax.lax.map(lambda r: fn(r, shared), runs, batch_size=chunk)`` for ``n`` runs, ``n`` a
    multiple of ``chunk``: a scan over the ``n / chunk`` chunks, each a ``vmap``. With ``tick_runs``
    the progress bar is advanced after every ``n / (chunk * TICKS)`` chunks (by a callback outside
    the vmap, so once per chunk group, not once per run)."""
    if not tick_runs:
        return jax.lax.map(lambda r: fn(r, shared), runs, batch_size=chunk)
    n = jax.tree.leaves(runs)[0].shape[0]
    k = n // chunk
    every = max(1, k // _progress.TICKS)
    grouped = jax.tree.map(lambda x: jnp.reshape(x, (k, chunk) + x.shape[1:]), runs)

    def body(carry, xs):
        i, r = xs
        out = jax.vmap(fn, (0, None))(r, shared)
        _progress.tick_blocks(i * chunk, chunk, every * chunk, out)
        return carry, out

    _, outs = jax.lax.scan(body, None, (jnp.arange(k), grouped))
    return jax.tree.map(lambda x: jnp.reshape(x, (n,) + x.shape[2:]), outs)


def assemble(outputs: Sequence, n: int) -> Any:
    """Inside ``jit``: join the parts' outputs (a list of pytrees with leading axes ``(m, ...)``) and
    keep the first ``n`` runs, shape ``(n, ...)``."""
    if len(outputs) == 1:
        return jax.tree.map(lambda x: x[:n], outputs[0])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0)[:n], *outputs)


def gather(tree: Any) -> Any:
    """Bring sharded outputs back (shapes unchanged) as arrays every process can read: an all-gather
    across hosts where needed, else a copy onto the first local device."""

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))
        if len(x.sharding.device_set) > 1:
            # one device for all results, so later arithmetic never mixes device sets
            return jax.device_put(x, jax.local_devices()[0])
        return x

    return jax.tree.map(one, tree)
