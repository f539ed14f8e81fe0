"""Frozen result containers with ``to_dict`` / ``save`` / ``load``.

Results are frozen dataclasses whose fields are arrays (leading checkpoint axis), tuples of
arrays (weights), plain Python scalars, tasks, or ``None``. ``save`` writes one ``.npz`` file
atomically (temporary file in the same folder, fsync, ``os.replace``) and ``load`` returns an
object whose arrays are bit-identical to the saved ones.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Result"]

_SEP = "."


def _encode(name: str, value, out: dict) -> None:
    from .tasks import Dataset, Task

    if value is None:
        out[f"{name}{_SEP}none"] = np.zeros(())
    elif isinstance(value, (bool, int, float, str)):
        out[f"{name}{_SEP}py"] = np.asarray(value)
    elif isinstance(value, Task):
        for part in ("teacher", "input_cov", "noise"):
            out[f"{name}{_SEP}Task{_SEP}{part}"] = np.asarray(getattr(value, part))
    elif isinstance(value, Dataset):
        for part in ("x", "y"):
            out[f"{name}{_SEP}Dataset{_SEP}{part}"] = np.asarray(getattr(value, part))
    elif isinstance(value, tuple):
        out[f"{name}{_SEP}tuple{_SEP}len"] = np.asarray(len(value))
        for i, v in enumerate(value):
            out[f"{name}{_SEP}tuple{_SEP}{i}"] = np.asarray(v)
    else:
        out[f"{name}{_SEP}array"] = np.asarray(value)


def _decode(name: str, data) -> object:
    from .tasks import Dataset, Task

    keys = [k for k in data.files if k.split(_SEP, 1)[0] == name]
    if not keys:
        raise KeyError(f"field {name!r} missing from saved result")
    tags = {k.split(_SEP)[1] for k in keys}
    (tag,) = tags
    if tag == "none":
        return None
    if tag == "py":
        return data[f"{name}{_SEP}py"].item()
    if tag == "Task":
        return Task(**{p: data[f"{name}{_SEP}Task{_SEP}{p}"] for p in ("teacher", "input_cov")},
                    noise=data[f"{name}{_SEP}Task{_SEP}noise"].item())
    if tag == "Dataset":
        return Dataset(**{p: data[f"{name}{_SEP}Dataset{_SEP}{p}"] for p in ("x", "y")})
    if tag == "tuple":
        n = int(data[f"{name}{_SEP}tuple{_SEP}len"])
        return tuple(data[f"{name}{_SEP}tuple{_SEP}{i}"] for i in range(n))
    return data[f"{name}{_SEP}array"]


class Result:
    """Mixin for frozen result dataclasses: ``to_dict``, atomic ``save``, bit-identical ``load``.

    Examples:
      >>> import os, tempfile, jax, numpy as np, linoverfit as lo
      >>> task = lo.tasks.power_law(4, 4, key=jax.random.key(0))
      >>> net = lo.DeepLinear((4, 4))
      >>> run = lo.pretrain(net, net.init(jax.random.key(1)), task, lr=0.1, checkpoints=[10, 100])
      >>> list(run.to_dict())
      ['steps', 'loss', 'weights', 'task', 'lr', 'weight_decay']
      >>> path = run.save(os.path.join(tempfile.mkdtemp(), "run.npz"))
      >>> back = lo.PretrainResult.load(path)
      >>> back.steps, bool(np.array_equal(back.loss, run.loss))
      (array([ 10, 100]), True)
    """

    def to_dict(self) -> dict:
        """Fields as a dict of numpy arrays (tuples stay tuples of arrays; tasks and None as they are)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = tuple(np.asarray(x) for x in v)
            elif v is not None and not isinstance(v, (bool, int, float, str)) and hasattr(v, "shape"):
                v = np.asarray(v)
            out[f.name] = v
        return out

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz``) atomically; returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"__class__.py": np.asarray(type(self).__name__)}
        for f in dataclasses.fields(self):
            _encode(f.name, getattr(self, f.name), payload)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Read a result written by :meth:`save`; arrays come back as numpy arrays, bit-identical."""
        with np.load(Path(path), allow_pickle=False) as data:
            saved = str(data["__class__.py"])
            if saved != cls.__name__:
                raise ValueError(f"{path} holds a {saved}, not a {cls.__name__}")
            return cls(**{f.name: _decode(f.name, data) for f in dataclasses.fields(cls)})
