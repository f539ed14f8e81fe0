"""Atomic file writes and a folder lock: how results, figures and summaries reach the disk.

:func:`atomic_write` writes to a temporary file in the target's folder, flushes and fsyncs it,
gives it the permissions the umask asks for, and renames it over the target (``os.replace``,
atomic on POSIX), then fsyncs the folder. A reader, or a process killed at any moment, sees
either the complete old file or the complete new one, never a partial file. Temporary files are
named ``.<name>.<random>.<pid>.tmp``; :func:`remove_stale_temporaries` deletes those whose
process is gone (left behind by a SIGKILL).

:func:`locked` holds an exclusive ``fcntl`` lock on a folder (or a lock file), so that read-modify-write
cycles of a shared file (the figures' ``summary.json``) by concurrent processes do not lose
each other's entries.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "locked", "remove_stale_temporaries", "umask"]

_TMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process umask (read from ``/proc/self/status`` where possible, without changing it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # fallback: set and restore (not thread-safe, so only when /proc is missing)
    os.umask(old)
    return old


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as fh: fh.write(...)``: ``fh`` is a binary file in ``path``'s folder that
    replaces ``path`` atomically when the block ends without an exception (see the module docs).
    On an exception (or KeyboardInterrupt) the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=f".{os.getpid()}{_TMP_SUFFIX}")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; a new file normally honours the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``lock_path`` for the block: a folder
    (locked through a read-only descriptor, so no lock file is left behind) or a file (created if
    missing)."""
    import fcntl

    if os.path.isdir(lock_path):
        fd = os.open(lock_path, os.O_RDONLY)
    else:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` in ``folder`` whose writing process no
    longer exists; return them."""
    removed = []
    for p in Path(folder).glob(f".*{_TMP_SUFFIX}"):
        parts = p.name.split(".")
        try:
            pid = int(parts[-2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # still running (or not ours to judge)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
