"""Frozen result containers: pytrees with a short repr, ``to_dict`` / ``to_xarray`` / ``save`` / ``load``.

Results are frozen dataclasses whose fields are arrays (leading checkpoint axis), tuples of
arrays (weights), plain Python scalars, tasks, or ``None``. Every result class is declared with
:func:`result` and is therefore a pytree (:func:`jax.tree_util.register_dataclass`): its arrays,
tasks and numeric scalars are leaves, the fields marked :func:`static` (and ``str`` fields) are
static metadata, so a result passes through ``jax.jit``, ``jax.vmap`` and ``jax.tree.map``.
``save`` writes one ``.npz`` file atomically (:func:`linoverfit.files.atomic_write`: temporary
file in the same folder, fsync, ``os.replace``; the file gets the permissions the umask asks for)
and ``load`` returns an object whose arrays are bit-identical to the saved ones. ``load``
validates the file (readable, written for this class, every field present, shapes consistent
with each other) and raises :class:`ResultFileError` naming the file and what is wrong.
``to_xarray`` (optional ``xarray`` extra) names the axes: ``checkpoint``, ``lr`` or ``gamma``,
``seed``, ``record``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
import zlib
from pathlib import Path

from typing import Any, ClassVar

import jax
import numpy as np

from .files import atomic_write
from .tasks import Dataset, Task

__all__ = ["Result", "ResultFileError", "result", "static"]


class ResultFileError(ValueError):
    """A saved result cannot be read back: missing, unreadable, written for another class, a field
    missing, or shapes inconsistent. ``.path`` is the file; the message says what is wrong."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def static(default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is static pytree metadata (hashable; changing it recompiles a jitted
    function of the result), e.g. ``ft_steps: int = static()``; other fields are pytree leaves."""
    return dataclasses.field(default=default, metadata={"static": True})


def result(cls: type) -> type:
    """Class decorator of every result: a frozen dataclass (``eq=False``, the short :class:`Result`
    repr) registered as a pytree with :func:`jax.tree_util.register_dataclass`.

    Fields made with :func:`static`, and fields annotated ``str`` (a string is never a JAX leaf),
    are metadata; every other field (arrays, tuples of arrays, tasks, numeric scalars, ``None``)
    is data. The field lists are passed explicitly, which every JAX since 0.4.27 accepts.
    """
    cls = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if _is_static(f)]
    data = [f.name for f in fields if not _is_static(f)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def _is_static(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("static")) or f.type in ("str", str)


def _short_dtype(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "bool"
    return f"{dtype.kind if dtype.kind in 'fiuc' else dtype.name}{8 * dtype.itemsize if dtype.kind in 'fiuc' else ''}"


def _concrete(v) -> bool:
    """True for values that can be read without tracing (numpy, or a committed jax.Array)."""
    if isinstance(v, (np.ndarray, np.generic)):
        return True
    return isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer)


def _short(v) -> str:
    """Repr of one field: scalars as they are, arrays as ``f32[48,4]`` (1-D numeric grids also
    show their values, or first..last), tuples element-wise, other objects by their own repr."""
    if v is None or isinstance(v, (bool, str)):
        return repr(v)
    if isinstance(v, float):
        text = f"{v:.6g}"
        return text if any(c in text for c in ".enai") else text + ".0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_short(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        head = f"{_short_dtype(v.dtype)}[{','.join(str(n) for n in v.shape)}]"
        if _concrete(v) and np.ndim(v) <= 1 and np.dtype(v.dtype).kind in "fiub":
            x = np.asarray(v)
            if x.ndim == 0:
                return f"{x.item():.6g}" if x.dtype.kind == "f" else str(x.item())
            fmt = (lambda a: f"{a:.4g}") if x.dtype.kind == "f" else str
            if x.size <= 4:
                return f"{head} [{', '.join(fmt(a) for a in x.tolist())}]"
            if x.size:
                return f"{head} {fmt(x[0].item())}..{fmt(x[-1].item())}"
        return head
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _xarray():
    try:
        import xarray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("to_xarray needs the optional xarray package: pip install \"linoverfit[xarray]\"") from err
    return xarray


_SEP = "."


def _encode(name: str, value, out: dict) -> None:
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
    keys = [k for k in data if k.split(_SEP, 1)[0] == name]
    if not keys:
        raise ValueError(f"field {name!r} is missing")
    tags = {k.split(_SEP)[1] for k in keys if _SEP in k}
    if len(tags) != 1:
        raise ValueError(f"field {name!r} is stored in {len(tags)} incompatible ways")
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
    """Mixin of the result classes: short ``repr``, ``to_dict``, ``to_xarray``, atomic ``save``,
    bit-identical ``load``. Subclasses are declared with :func:`result` (which makes them pytrees).

    A subclass names the axes of its array fields in ``_dims`` (``{"loss": ("checkpoint", "seed")}``;
    ``"seed"`` is dropped when the result has no seed axis) and its coordinates in :meth:`_coords`;
    an array field it does not name gets the class's axes whose sizes match, in order.

    Examples:
      >>> import os, tempfile, jax, numpy as np, linoverfit as lo
      >>> task = lo.tasks.power_law(4, 4, key=jax.random.key(0))
      >>> net = lo.DeepLinear((4, 4))
      >>> run = lo.pretrain(net, net.init(jax.random.key(1)), task, lr=0.1, checkpoints=[10, 100])
      >>> list(run.to_dict())
      ['steps', 'loss', 'weights', 'task', 'lr', 'weight_decay', 'times', 'batch_size', 'online', 'prediction', 'exact']
      >>> path = run.save(os.path.join(tempfile.mkdtemp(), "run.npz"))
      >>> back = lo.PretrainResult.load(path)
      >>> back.steps, bool(np.array_equal(back.loss, run.loss))
      (array([ 10, 100]), True)
    """

    #: dims of the array fields (leading axes; a tuple-of-layers field adds ``unit{l}, unit{l-1}``).
    _dims: ClassVar[dict] = {}

    def _coords(self) -> dict:
        """Coordinates ``{name: (dim, values)}`` (values ``None`` = absent); a field named here is a
        coordinate, not a data variable."""
        return {}

    def _seeds(self) -> int | None:
        """Size of the seed axis, ``None`` without one."""
        return None

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.name}={_short(getattr(self, f.name))}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({parts})"

    def to_xarray(self) -> Any:
        """The result as an :class:`xarray.Dataset` with named dimensions and coordinates.

        Dimensions: ``checkpoint`` (coordinates ``steps`` and ``t``, the gradient-flow time),
        ``lr`` or ``gamma`` (dimension coordinates, so ``ds.sel(lr=0.01)`` works), ``seed`` (only
        when the run was batched over seeds), ``record`` (coordinate ``record_steps``), and
        ``unit0, unit1, ...`` for the rows/columns of weight matrices (``weights_l`` is layer
        :math:`W_l`, dims ``(..., unit{l}, unit{l-1})``). Scalars (learning rate, steps, ...) are
        attributes; the task is left out (it is saved by :meth:`save`). Values are numpy copies.

        Examples (needs ``pip install "linoverfit[xarray]"``)::

            ds = ftr.to_xarray()
            ds.pretrain_loss_after.sel(lr=0.01).plot(x="t", xscale="log")
            ds.to_dataframe()
        """
        xr = _xarray()
        coords = {k: (d, np.asarray(v)) for k, (d, v) in self._coords().items() if v is not None}
        seeds = self._seeds()
        if seeds:
            coords["seed"] = ("seed", np.arange(seeds))
        sizes = {d: v.shape[0] for d, v in coords.values() if v.ndim == 1}
        data, attrs = {}, {"result": type(self).__name__}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in coords or v is None or isinstance(v, (Task, Dataset)):
                continue
            if isinstance(v, (bool, int, float, str, np.generic)) or (hasattr(v, "shape") and np.ndim(v) == 0):
                attrs[f.name] = np.asarray(v).item()
                continue
            if isinstance(v, tuple) and all(np.ndim(x) == 0 for x in v):
                attrs[f.name] = [np.asarray(x).item() for x in v]
                continue
            if isinstance(v, tuple):
                for layer, w in enumerate(v, start=1):
                    w = np.asarray(w)
                    lead = self._lead_dims(f.name, w.shape[:-2], sizes)
                    data[f"{f.name}_{layer}"] = (lead + (f"unit{layer}", f"unit{layer - 1}"), w)
                continue
            if not hasattr(v, "shape"):  # a params pytree (lo.Model): one variable per leaf, named by its path
                for path, w in jax.tree_util.tree_flatten_with_path(v)[0]:
                    name = "_".join([f.name] + [p for p in re.split(r"\W+", jax.tree_util.keystr(path)) if p])
                    w = np.asarray(w)
                    data[name] = (self._lead_dims(name, w.shape, sizes), w)
                continue
            v = np.asarray(v)
            data[f.name] = (self._lead_dims(f.name, v.shape, sizes), v)
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def _lead_dims(self, name: str, shape: tuple, sizes: dict) -> tuple:
        """Dims of ``name``'s axes of ``shape``: declared in ``_dims``, else matched by size."""
        seeds = bool(self._seeds())
        declared = tuple(d for d in self._dims.get(name, ()) if seeds or d != "seed")
        if len(declared) >= len(shape):
            return declared[: len(shape)]
        dims, order = list(declared), [d for d in sizes if d not in declared]
        for n in shape[len(dims):]:
            match = next((d for d in order if sizes[d] == n), None)
            if match is None:
                break
            dims.append(match)
            order = order[order.index(match) + 1:]
        dims += [f"{name}_dim{i}" for i in range(len(dims), len(shape))]
        return tuple(dims)

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

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``.npz`` appended if missing) atomically; returns the path written.

        Raises ``ValueError`` when ``path`` is a folder (give a file name inside it) or its parent
        is a file.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"cannot save to {path}: it is a folder; pass a file name, e.g. {path / 'result.npz'}")
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        if path.is_dir():
            raise ValueError(f"cannot save to {path}: it is a folder; pass another file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"cannot save to {path}: a parent of it is a file, not a folder") from None
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None and not isinstance(v, (tuple, Task, Dataset, bool, int, float, str)) and not hasattr(v, "shape"):
                raise ValueError(f"cannot save {f.name}: a {type(v).__name__} (e.g. a lo.Model's params pytree); "
                                 "save stores weights only as a tuple of arrays. Run lo.pretrain with keep_weights=False "
                                 "/ lo.finetune with return_weights=False, or save the params yourself")
        payload = {"__class__.py": np.asarray(type(self).__name__)}
        for f in dataclasses.fields(self):
            _encode(f.name, getattr(self, f.name), payload)
        with atomic_write(path) as fh:
            np.savez(fh, **payload)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a result written by :meth:`save`; arrays come back as numpy arrays, bit-identical.

        Raises :class:`ResultFileError` naming the file and the problem when it is missing,
        unreadable (empty, truncated, corrupted, not an ``.npz``), holds another class, lacks a
        required field, or has shapes that do not fit together. Optional fields added since the file
        was written (they have defaults) take their defaults.
        """
        path = Path(path)
        if not path.is_file():
            raise ResultFileError(path, "no such file" if not path.exists() else "not a file")
        if not zipfile.is_zipfile(path):
            raise ResultFileError(path, "not a readable .npz result file (an .npz is a zip archive and this is not "
                                        "one: empty, truncated or another format); pass a file written by Result.save")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}  # reads (and CRC-checks) every member now
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError, UnicodeDecodeError) as err:
            raise ResultFileError(path, f"not a readable .npz result file ({type(err).__name__}: {err})") from None
        if "__class__.py" not in arrays:
            raise ResultFileError(path, "not a linoverfit result (no __class__ entry); was it written by Result.save?")
        saved = str(arrays["__class__.py"])
        if saved != cls.__name__:
            raise ResultFileError(path, f"holds a {saved}, not a {cls.__name__}; load it with {saved}.load")
        try:
            fields = {f.name: _decode(f.name, arrays) for f in dataclasses.fields(cls) if not _absent_optional(f, arrays)}
            obj = cls(**fields)
            obj._check_consistent()
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise ResultFileError(path, f"inconsistent {cls.__name__}: {err}") from None
        return obj

    def _check_consistent(self) -> None:
        """Raise ``ValueError`` when the fields do not fit together (shapes); subclasses say how."""


def _absent_optional(field: dataclasses.Field, arrays: dict) -> bool:
    """A field added after a file was written (it has a default) and absent from it: a file of an
    older release loads with that default (e.g. ``pretrain_t=None``: time ``lr * steps``)."""
    has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    return has_default and not any(k.split(_SEP, 1)[0] == field.name for k in arrays)


def expect_shape(name: str, value, shape: tuple) -> None:
    """``ValueError`` unless ``value`` has exactly ``shape`` (for :meth:`Result._check_consistent`)."""
    got = tuple(np.shape(value))
    if got != tuple(shape):
        raise ValueError(f"{name} has shape {got}, expected {tuple(shape)}")


def expect_weights(name: str, weights, lead: tuple) -> None:
    """``ValueError`` unless ``weights`` is ``None``, a tuple of arrays ``lead + (n_l, n_{l-1})`` that chain,
    or another params pytree (a :class:`~linoverfit.Model`'s) whose every leaf starts with ``lead``."""
    if weights is None:
        return
    if not isinstance(weights, tuple):
        for path, w in jax.tree_util.tree_flatten_with_path(weights)[0]:
            if tuple(np.shape(w)[:len(lead)]) != tuple(lead):
                raise ValueError(f"{name}{jax.tree_util.keystr(path)} has shape {np.shape(w)}, expected {tuple(lead)} + ...")
        return
    for i, w in enumerate(weights):
        if tuple(np.shape(w)[:-2]) != tuple(lead) or np.ndim(w) != len(lead) + 2:
            raise ValueError(f"{name}[{i}] has shape {np.shape(w)}, expected {tuple(lead)} + (n_l, n_(l-1))")
        if i and np.shape(w)[-1] != np.shape(weights[i - 1])[-2]:
            raise ValueError(f"{name}[{i}] does not chain with {name}[{i - 1}]")
