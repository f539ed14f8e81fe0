"""Argument checks shared by the public API.

Every check raises at the API boundary with a message that names the offending
argument, so a notebook user sees *which* input is wrong instead of a shape error
from deep inside a compiled function.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import numpy as np


def is_traced(x) -> bool:
    """True when ``x`` is a JAX tracer (inside jit/vmap), where values cannot be checked."""
    return isinstance(x, jax.core.Tracer)


def finite_matrix(x, name: str, shape: tuple[int | None, int | None] | None = None):
    """Return ``x`` as an array after checking it is a finite 2-D matrix.

    ``shape`` entries that are not ``None`` must match exactly.
    """
    if is_traced(x):
        return x
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got an array of shape {arr.shape}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{name} has shape {arr.shape}, expected {tuple('?' if s is None else s for s in shape)}"
                    f" (axis {axis} should be {want})"
                )
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}; pass the real part (x.real) if that is meant")
    if 0 in arr.shape:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def psd_matrix(x, name: str, dim: int | None = None, rtol: float = 1e-6):
    """Check that ``x`` is a finite, square, symmetric positive semi-definite matrix.

    Symmetry is checked to ``rtol`` relative to the largest entry and the smallest
    eigenvalue must be >= ``-rtol * max|eigenvalue|`` (round-off of a PSD matrix).
    """
    finite_matrix(x, name)
    if is_traced(x):
        return x
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} has shape {arr.shape}, expected ({dim}, {dim})")
    scale = max(float(np.max(np.abs(arr))), np.finfo(np.float64).tiny)
    if np.max(np.abs(arr - arr.T)) > rtol * scale:
        raise ValueError(f"{name} must be symmetric")
    eig = np.linalg.eigvalsh(arr)
    if eig[0] < -rtol * max(abs(eig[-1]), scale):
        raise ValueError(f"{name} must be positive semi-definite; smallest eigenvalue is {eig[0]:.3g}")
    return x


def positive_scalar(x, name: str, allow_zero: bool = False) -> float:
    """Check a finite real scalar that is > 0 (or >= 0 with ``allow_zero``)."""
    if is_traced(x):
        return x
    arr = np.asarray(x)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be a real scalar, got {x!r}")
    val = float(arr)
    if not np.isfinite(val):
        raise ValueError(f"{name} must be finite, got {val}")
    if val < 0 or (val == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {val}")
    return val


def positive_vector(x, name: str, allow_zero: bool = False) -> np.ndarray:
    """Check a scalar or 1-D sequence of finite values > 0 (>= 0 with ``allow_zero``); return 1-D float array."""
    arr = np.atleast_1d(np.asarray(x))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real numbers, got {x!r}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {arr}")
    return arr


def positive_int(x, name: str) -> int:
    """Check an integer >= 1."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {x!r}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def layer_widths(widths, name: str = "widths") -> tuple[int, ...]:
    """Layer widths ``(d_in, h_1, ..., d_out)``: a sequence of >= 2 integers >= 1 (depth >= 1)."""
    ordered = isinstance(widths, (Sequence, np.ndarray, jax.Array)) and not isinstance(widths, (str, bytes))
    if not ordered or np.ndim(widths) != 1:
        # sets and dicts have no order, so (d_in, ..., d_out) would be a guess
        raise TypeError(f"{name} must be an ordered sequence of layer widths (d_in, ..., d_out), got {widths!r}")
    w = tuple(widths)
    if len(w) < 2:
        raise ValueError(f"{name} must have at least 2 entries (depth >= 1), got {w} (depth {len(w) - 1})")
    for i, n in enumerate(w):
        positive_int(n, f"{name}[{i}]")
    return tuple(int(n) for n in w)


def step_grid(x, name: str = "checkpoints") -> np.ndarray:
    """Check a non-empty, strictly increasing grid of non-negative integer step counts."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        x = [x]
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of step counts, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must contain integers, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {arr[arr < 0][:3]}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr.astype(np.int64)


def record_grid(steps: int, record_every) -> np.ndarray:
    """The steps at which a fine-tuning run records its losses: ``[steps]`` without ``record_every``,
    else every ``record_every`` steps up to ``steps`` (which it must divide)."""
    if record_every is None:
        return np.array([steps])
    record_every = positive_int(record_every, "record_every")
    if steps % record_every:
        raise ValueError(f"record_every ({record_every}) must divide steps ({steps})")
    return record_every * np.arange(1, steps // record_every + 1)


def weights_tuple(weights, name: str = "weights") -> tuple:
    """Check a non-empty tuple/list of finite arrays (any leading batch axes)."""
    if not isinstance(weights, Sequence) or isinstance(weights, (str, bytes)) or len(weights) == 0:
        raise TypeError(f"{name} must be a non-empty tuple of weight matrices (W_1, ..., W_L)")
    out = tuple(weights)
    for i, w in enumerate(out):
        if is_traced(w):
            continue
        arr = np.asarray(w)
        if arr.ndim < 2:
            raise ValueError(f"{name}[{i}] must be at least 2-D, got shape {arr.shape}")
        float_dtype(arr, f"{name}[{i}]")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}[{i}] contains NaN or inf")
    for i in range(1, len(out)):
        if np.shape(out[i])[-1] != np.shape(out[i - 1])[-2]:
            raise ValueError(
                f"{name}[{i}] has shape {np.shape(out[i])} but {name}[{i - 1}] has shape "
                f"{np.shape(out[i - 1])}: W_(l+1) must have as many columns as W_l has rows"
            )
    return out


# ----------------------------------------------------------------------------- keys

#: Largest integer seed (exclusive) accepted as a ``key``: ``jax.random.key`` keeps only the low 32
#: bits of a seed when 64-bit mode is off, so larger seeds would silently collide.
SEED_LIMIT = 2**32


def prng_key(key, name: str = "key", *, required: bool = True, purpose: str = ""):
    """The one key check of the public API: return a typed ``jax.random`` key, or ``None``.

    Accepted: a scalar typed key (``jax.random.key(seed)``), a raw legacy key
    (``jax.random.PRNGKey(seed)``, ``uint32`` of the default implementation's shape), or an integer
    seed ``0 <= seed < 2**32`` (Python or numpy integer; ``jax.random.key(seed)``). Rejected with a
    ``TypeError``/``ValueError`` naming ``name``: ``None`` when ``required`` (randomness is always
    explicit; ``purpose`` says what needs it), bools, floats, strings, ``numpy.random.Generator``,
    batched keys and anything else. ``None`` with ``required=False`` returns ``None``.
    """
    how = f"pass {name}=jax.random.key(0) (or an integer seed)"
    if key is None:
        if required:
            need = f" for {purpose}" if purpose else ""
            raise TypeError(f"{name} is required{need}: {how}; randomness is never implicit")
        return None
    if is_traced(key):
        return key
    if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, (bool, np.bool_)):
        seed = int(key)
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"{name} as an integer seed must be in [0, 2**32), got {seed}")
        return jax.random.key(seed)
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(f"{name} must be a single key, got a batch of keys of shape {key.shape}; pick one")
            return key
        default_shape = jax.random.key_data(jax.random.key(0)).shape
        if key.dtype == np.uint32 and key.shape == default_shape:
            return jax.random.wrap_key_data(key)
    elif isinstance(key, np.ndarray) and key.dtype == np.uint32 and key.ndim == 1:
        return prng_key(jax.numpy.asarray(key), name, required=required, purpose=purpose)
    raise TypeError(f"{name} must be a jax.random key or an integer seed, got {type(key).__name__} {key!r:.60}; {how}")


# ----------------------------------------------------------------------------- dtypes


def float_dtype(x, name: str):
    """Check that ``x`` has a real floating dtype of at least 32 bits; return that dtype.

    Complex, integer, bool and float16/bfloat16 arrays get a ``TypeError`` naming ``name``: the
    simulations need real floats with enough precision to resolve small losses.
    """
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got complex dtype {dtype}; pass the real part (x.real) if that is meant")
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise TypeError(f"{name} must be floating point (float32 or float64), got dtype {dtype}; "
                        f"cast it with .astype('float32') or .astype('float64')")
    if dtype.itemsize < 4:
        raise TypeError(f"{name} has dtype {dtype}, too few bits for these simulations; use float32 or float64")
    return dtype


def weight_dtype(dtype, name: str = "dtype") -> np.dtype:
    """``dtype`` checked to be ``float32`` or ``float64`` (the dtypes the simulations run in);
    a ``TypeError`` naming ``name`` otherwise (complex, integer, float16, bfloat16, ...)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}; pass dtype=jnp.float32 or jnp.float64")
    return dt


def working_dtype(arrays, name: str):
    r"""The one working dtype of a computation: the widest float dtype among ``arrays`` (checked by
    :func:`float_dtype`), as JAX can currently represent it (``float64`` becomes ``float32`` when
    64-bit mode is off). Every input of a sweep is cast to it at the API boundary, so flipping
    ``jax_enable_x64`` between building the inputs and training is harmless."""
    dtypes = [float_dtype(a, f"{name}[{i}]") for i, a in enumerate(arrays)]
    return jax.dtypes.canonicalize_dtype(np.result_type(*dtypes))


def cast_objective(task, dtype):
    """``task`` (a :class:`~linoverfit.Task` or :class:`~linoverfit.Dataset`) with every array in
    ``dtype`` (its pytree structure, hence compiled code, is unchanged)."""
    leaves, tree = jax.tree_util.tree_flatten(task)
    return jax.tree_util.tree_unflatten(tree, [jax.numpy.asarray(x, dtype) for x in leaves])


# ----------------------------------------------------------------------------- step counts


def step_dtype():
    """Integer dtype of step counters in compiled loops: int64 with 64-bit mode on, else int32."""
    return jax.dtypes.canonicalize_dtype(np.int64)


def representable_steps(largest: int, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``largest`` steps do not fit the step counter
    (:func:`step_dtype`), instead of letting the counter wrap around."""
    limit = int(np.iinfo(step_dtype()).max)
    if int(largest) > limit:
        raise ValueError(
            f"{name} reaches step {int(largest)}, more than the {limit} steps a {np.dtype(step_dtype()).name} counter "
            f"holds; enable 64-bit mode (jax.config.update('jax_enable_x64', True)) before building the inputs"
        )
