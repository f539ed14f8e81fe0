r"""Nonlinear networks for the same sweeps: :class:`MLP` and a user's own :class:`Model`.

Both follow the :class:`~linoverfit.networks.Network` protocol. Their loss is the sample loss
:math:`\tfrac1{2N}\sum_n\lVert f(x_n) - y_n\rVert^2` with :math:`f = ` ``apply(params, .)``, on a
:class:`~linoverfit.Dataset` (full batch or minibatches) or on online samples of a
:class:`~linoverfit.Task` (:mod:`linoverfit.objective`); the population loss and the closed forms
of :mod:`linoverfit.theory` hold for linear networks only. ``MLP(widths, "identity")`` *is* a
deep linear network and runs exactly as :class:`~linoverfit.DeepLinear` does (bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from . import validation as _v
from .networks import DeepLinear, end_to_end

__all__ = ["MLP", "Model", "ACTIVATIONS"]

#: The activations of :class:`MLP` (GELU is ``jax.nn.gelu``'s tanh approximation).
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "identity": None}


@dataclass(frozen=True)
class MLP:
    r"""A bias-free multilayer perceptron with widths ``(n_0, ..., n_L)``:
    :math:`f(x) = W_L\,\phi(W_{L-1}\cdots\phi(W_1 x))`, weights a tuple of matrices ``(n_l, n_{l-1})``
    exactly as :class:`~linoverfit.DeepLinear`'s (same :meth:`init` schemes).

    With ``activation="identity"`` it is linear (:attr:`linear`, :meth:`end_to_end`) and the sweeps
    treat it as the :class:`~linoverfit.DeepLinear` of the same widths (population loss allowed,
    results bit for bit the same).

    Examples:
      >>> import jax, linoverfit as lo
      >>> net = lo.MLP((4, 8, 3), activation="tanh")
      >>> W = net.init(jax.random.key(0), scale=0.5)
      >>> net.apply(W, jax.numpy.ones((5, 4))).shape
      (5, 3)
    """

    widths: tuple[int, ...]
    activation: str = "tanh"

    def __post_init__(self):
        object.__setattr__(self, "widths", _v.layer_widths(self.widths))
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def _linear_net(self) -> DeepLinear:
        return DeepLinear(self.widths)

    depth = property(lambda self: len(self.widths) - 1, doc="Number of weight matrices ``L``.")
    d_in = property(lambda self: self.widths[0], doc="Input width ``n_0``.")
    d_out = property(lambda self: self.widths[-1], doc="Output width ``n_L``.")
    shapes = property(lambda self: self._linear_net.shapes, doc="Layer shapes ``((n_1, n_0), ..., (n_L, n_{L-1}))``.")

    @property
    def linear(self) -> bool:
        """True for ``activation="identity"`` (then :meth:`end_to_end` exists)."""
        return self.activation == "identity"

    def apply(self, weights, x):
        r"""Outputs :math:`W_L\phi(\cdots\phi(W_1 x))`, inputs ``(..., N, n_0)`` -> ``(..., N, n_L)``."""
        act = ACTIVATIONS[self.activation]
        h = x
        for l, w in enumerate(weights):
            h = h @ jnp.swapaxes(w, -1, -2)
            if act is not None and l < len(weights) - 1:
                h = act(h)
        return h

    __call__ = apply

    def end_to_end(self, weights) -> jax.Array:
        r"""End-to-end map :math:`W_L\cdots W_1` of the identity MLP (``TypeError`` for a nonlinear one)."""
        if not self.linear:
            raise TypeError(f"a {self.activation} MLP has no end-to-end map (only lo.MLP(..., activation='identity') is linear)")
        return end_to_end(weights)

    def check_weights(self, weights, name: str = "weights") -> tuple:
        """Validate that ``weights`` fit the widths (leading batch axes allowed); return them as a tuple."""
        return self._linear_net.check_weights(weights, name)

    def check_task(self, task, name: str = "task"):
        """Check that ``task`` (a Task or Dataset) maps ``d_in -> d_out``."""
        return self._linear_net.check_task(task, name)

    def init(self, key: jax.Array | int, scale: float = 1e-3, scheme: str = "gaussian", task=None,
             seeds: int | None = None, dtype: DTypeLike | None = None) -> tuple[jax.Array, ...]:
        r"""Initial weights, as :meth:`DeepLinear.init <linoverfit.DeepLinear.init>` (``"gaussian"``:
        iid :math:`\mathcal N(0, \text{scale}^2)`; ``"balanced"``, ``"aligned"``); the same key gives
        the same matrices. Returns a tuple of ``L`` arrays ``([S,] n_l, n_{l-1})``."""
        return self._linear_net.init(key, scale, scheme, task, seeds, dtype)


@dataclass(frozen=True)
class Model:
    r"""A user's network given as two plain functions: ``init_fn(key) -> params`` (any pytree of float
    arrays) and ``apply_fn(params, x) -> outputs``, inputs ``(N, d_in)`` -> ``(N, d_out)``.

    Pass module-level functions (or the same objects every call): the model is a static argument
    of the compiled runs, so a new lambda per call compiles again. Results keep ``params`` pytrees
    as they are in memory; :meth:`Result.save <linoverfit.PretrainResult.save>` stores weights only
    when they are a tuple of arrays (otherwise it refuses, naming ``keep_weights=False``).

    Examples:
      >>> import jax, jax.numpy as jnp, linoverfit as lo
      >>> def init(key):
      ...     k1, k2 = jax.random.split(key)
      ...     return {"W1": 0.5 * jax.random.normal(k1, (8, 4)), "b1": jnp.zeros(8), "W2": 0.5 * jax.random.normal(k2, (3, 8))}
      >>> def apply(p, x):
      ...     return jnp.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T
      >>> model = lo.Model(init, apply, d_in=4, d_out=3)
      >>> model.apply(model.init(jax.random.key(0)), jnp.ones((5, 4))).shape
      (5, 3)
    """

    init_fn: Callable
    apply_fn: Callable
    d_in: int
    d_out: int

    def __post_init__(self):
        if not (callable(self.init_fn) and callable(self.apply_fn)):
            raise TypeError("Model(init, apply, d_in, d_out) needs two callables: init(key) -> params and "
                            "apply(params, x) -> outputs")
        object.__setattr__(self, "d_in", _v.positive_int(self.d_in, "d_in"))
        object.__setattr__(self, "d_out", _v.positive_int(self.d_out, "d_out"))

    def apply(self, params, x):
        """``apply_fn(params, x)``: outputs ``(N, d_out)`` for inputs ``(N, d_in)``."""
        return self.apply_fn(params, x)

    def template(self):
        """The params pytree of one network as ``jax.ShapeDtypeStruct`` leaves (``init_fn`` traced, not run)."""
        return jax.eval_shape(self.init_fn, jax.random.key(0))

    def init(self, key: jax.Array | int, scale: float | None = None, seeds: int | None = None,
             dtype: DTypeLike | None = None):
        r"""``init_fn(key)``, every leaf times ``scale`` when given and cast to ``dtype`` when given;
        ``seeds=S`` stacks ``S`` initialisations (keys ``split(key, S)``) on a leading axis of every leaf."""
        key = _v.prng_key(key, "key")
        if seeds is not None:
            keys = jax.random.split(key, _v.positive_int(seeds, "seeds"))
            per_seed = [self.init(k, scale, None, dtype) for k in keys]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
        params = self.init_fn(key)
        if scale is not None:
            scale = _v.positive_scalar(scale, "scale")
            params = jax.tree.map(lambda w: scale * w, params)
        if dtype is not None:
            dtype = _v.weight_dtype(dtype, "dtype")
            params = jax.tree.map(lambda w: jnp.asarray(w, dtype), params)
        return params

    def check_weights(self, params, name: str = "weights"):
        """Validate ``params`` against ``init_fn``'s structure and leaf shapes (leading batch axes allowed,
        the same on every leaf), float and finite; returns them."""
        template = self.template()
        leaves, tree = jax.tree.flatten(params)
        t_leaves, t_tree = jax.tree.flatten(template)
        if tree != t_tree:
            raise ValueError(f"{name} has the structure {tree}, but init gives {t_tree}")
        leads = set()
        for path, w, t in zip(jax.tree_util.tree_flatten_with_path(params)[0], leaves, t_leaves):
            where = f"{name}{jax.tree_util.keystr(path[0])}"
            shape = tuple(np.shape(w))
            if len(shape) < len(t.shape) or shape[len(shape) - len(t.shape):] != tuple(t.shape):
                raise ValueError(f"{where} has shape {shape}, expected (...,) + {tuple(t.shape)}")
            leads.add(shape[:len(shape) - len(t.shape)])
            if not _v.is_traced(w):
                arr = np.asarray(w)
                _v.float_dtype(arr, where)
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{where} contains NaN or inf")
        if len(leads) > 1:
            raise ValueError(f"{name}'s leaves have different leading axes {sorted(leads)}")
        return params

    def check_task(self, task, name: str = "task"):
        """Check that ``task`` (a Task or Dataset) maps ``d_in -> d_out``."""
        if not (hasattr(task, "d_in") and hasattr(task, "loss")):
            raise TypeError(f"{name} must be a linoverfit Task or Dataset, got {type(task).__name__}")
        if (task.d_in, task.d_out) != (self.d_in, self.d_out):
            raise ValueError(f"{name} maps {task.d_in} -> {task.d_out} but the model maps {self.d_in} -> {self.d_out}")
        return task
