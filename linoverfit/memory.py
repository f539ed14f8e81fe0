r"""Peak-memory estimates of the sweeps, and the check that refuses a sweep that cannot fit.

Before a sweep allocates its arrays, :func:`require` compares an estimate of its peak bytes
(inputs, per-run working set of the runs in flight, outputs and the copies made while joining
them) with the memory available to the process, and raises :class:`MemoryBudgetError` naming the
sizes and the options that shrink them, instead of letting the operating system kill the
process (or a notebook kernel) without a message.

Available memory: on CPU, ``MemAvailable`` of ``/proc/meminfo`` (``os.sysconf`` elsewhere),
capped by the cgroup limit of a container; on an accelerator, the device's
``bytes_limit - bytes_in_use``. The environment variable ``LINOVERFIT_MEMORY_LIMIT`` (bytes, or
with a ``K``/``M``/``G`` suffix) overrides it; ``0`` or ``off`` disables the check.

Between independent pieces of work (figures, test files), :func:`release_compiled` hands back what
JAX keeps for programs that will not run again; :func:`resident_bytes` says when that is worth it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import jax

__all__ = ["MemoryBudgetError", "available_bytes", "require", "gib", "resident_bytes", "release_compiled"]


class MemoryBudgetError(MemoryError):
    """A computation would need more memory than is available; the message names the sizes and
    the options that reduce them. ``.needed`` and ``.available`` are in bytes."""

    def __init__(self, message: str, needed: int | None = None, available: int | None = None) -> None:
        super().__init__(message)
        self.needed, self.available = needed, available


def gib(nbytes: float) -> str:
    """``nbytes`` as a short human string: ``nbytes / 2^30`` GiB from 1 GiB up, else ``nbytes / 2^20`` MiB."""
    nbytes = float(nbytes)
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _parse_limit(text: str):
    text = text.strip().lower()
    if text in ("0", "off", "none", ""):
        return None
    scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}.get(text[-1], 1)
    number = text[:-1] if text[-1] in "kmgt" else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise ValueError(f"LINOVERFIT_MEMORY_LIMIT must be a number of bytes (e.g. 8G) or 'off', got {text!r}") from None


def _host_available() -> int | None:
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
            return None
    # a container's own limit may be tighter than the machine's free memory
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                limit = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            avail = min(avail, max(int(limit) - usage, 0))
        break
    return avail


def available_bytes(device: jax.Device | None = None) -> int | None:
    """Bytes a new allocation can use on ``device`` (default: JAX's first device); ``None`` = unknown
    or the check is disabled (see the module docs)."""
    env = os.environ.get("LINOVERFIT_MEMORY_LIMIT")
    if env is not None:
        return _parse_limit(env)
    if device is None:
        import jax

        device = jax.devices()[0]
    if getattr(device, "platform", "cpu") != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - backends without stats: no check
            return None
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    return _host_available()


#: Added to every estimate: buffers of the runtime that do not scale with the sweep (measured:
#: the peak RSS growth of a fine-tuning sweep exceeds the sized terms by 20-45 MiB on CPU).
OVERHEAD_BYTES = 64 * 2**20


def require(nbytes: float, what: str, sizes: str, fixes: str, device: jax.Device | None = None,
            overhead: bool = True) -> None:
    """Raise :class:`MemoryBudgetError` when the estimated ``peak = nbytes + OVERHEAD_BYTES`` exceeds
    :func:`available_bytes` (no check when that is ``None``; ``overhead=False``: ``peak = nbytes``,
    for a single allocation such as initial weights).

    ``what`` names the computation, ``sizes`` its dimensions, ``fixes`` the options that reduce it.
    """
    avail = available_bytes(device)
    nbytes = int(nbytes) + (OVERHEAD_BYTES if overhead else 0)
    if avail is None or nbytes <= avail:
        return
    raise MemoryBudgetError(
        f"{what} needs about {gib(nbytes)} at its peak ({sizes}) but only {gib(avail)} is available; "
        f"{fixes}. (Set LINOVERFIT_MEMORY_LIMIT=off to skip this check.)",
        needed=nbytes, available=avail,
    )


def itemsize(dtype) -> int:
    return int(np.dtype(dtype).itemsize)


def resident_bytes() -> int:
    r"""This process's resident memory in bytes: :math:`1024 \cdot` ``VmRSS`` (kB) of ``/proc/self/status``;
    0 where there is no ``/proc``, so that nothing is released on a threshold there."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
    except (OSError, StopIteration, ValueError):
        return 0


def release_compiled() -> None:
    """Drop JAX's compiled programs and traces (``jax.clear_caches``), collect garbage, and hand the freed
    heap pages back to the system (glibc's ``malloc_trim``; elsewhere they stay mapped). Results do not
    change (same bits): a program needed again, for any input shape, is traced and compiled again (or
    loaded from JAX's on-disk cache)."""
    import contextlib
    import ctypes
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
