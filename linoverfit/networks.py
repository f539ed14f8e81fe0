r"""Deep linear networks as plain tuples of matrices, and the :class:`Network` protocol every sweep takes.

Weights are ``(W_1, ..., W_L)`` with ``W_l`` of shape ``(n_l, n_{l-1})``; the end-to-end map is
:math:`P = W_L \cdots W_1` and the prediction :math:`y = P x`. Leading batch axes (seeds,
checkpoints, learning rates) are allowed on every function here.

A :class:`Network` is anything with ``init``, ``apply`` (inputs ``(N, d_in)`` -> outputs
``(N, d_out)``), ``d_in``, ``d_out``, ``check_weights`` and ``check_task``; a *linear* network
also has ``end_to_end(params)`` (:func:`is_linear`), which enables the population loss and the
closed forms. :class:`DeepLinear` is one; :class:`~linoverfit.MLP` and :class:`~linoverfit.Model`
(:mod:`linoverfit.models`) are the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from . import memory as _mem
from . import validation as _v
from .tasks import Dataset, Task

__all__ = ["DeepLinear", "Network", "end_to_end", "is_linear", "check_network", "check_linear", "INIT_SCHEMES"]

INIT_SCHEMES = ("gaussian", "balanced", "aligned")


def end_to_end(weights: Sequence[ArrayLike]) -> jax.Array:
    r"""End-to-end map :math:`P = W_L \cdots W_1`, shape ``(..., n_L, n_0)``.

    Examples:
      >>> import jax.numpy as jnp, linoverfit as lo
      >>> W1, W2 = jnp.ones((3, 2)), jnp.full((1, 3), 2.0)
      >>> lo.networks.end_to_end((W1, W2))
      Array([[6., 6.]], dtype=float32)
    """
    return reduce(lambda acc, w: w @ acc, weights[1:], weights[0])


@runtime_checkable
class Network(Protocol):
    r"""What :func:`~linoverfit.pretrain`, :func:`~linoverfit.finetune` and
    :func:`~linoverfit.sensitivity.gaussian` need of a network (a hashable object: it is a static
    argument of the compiled single-run functions).

    * ``init(key, scale=..., seeds=None, dtype=None)`` -> a params pytree (``seeds=S`` stacks ``S``
      of them on a leading axis of every leaf);
    * ``apply(params, x)`` -> outputs ``(N, d_out)`` for inputs ``x`` ``(N, d_in)``;
    * ``d_in``, ``d_out``; ``check_weights(params, name)`` (validated params, leading batch axes
      allowed) and ``check_task(task, name)``;
    * optionally ``end_to_end(params)`` -> ``(d_out, d_in)``: the network is linear
      (:func:`is_linear`), its loss is that of :math:`P` (population loss, closed forms).
    """

    d_in: int
    d_out: int

    def init(self, key: Any, scale: float = ..., seeds: int | None = None, dtype: Any = None) -> Any: ...

    def apply(self, params: Any, x: ArrayLike) -> jax.Array: ...

    def check_weights(self, params: Any, name: str = "weights") -> Any: ...

    def check_task(self, task: Any, name: str = "task") -> Any: ...


def is_linear(net: object) -> bool:
    r"""True when ``net`` is linear, :math:`f(x) = Px`: it has ``end_to_end`` (and no ``linear``
    attribute saying otherwise, as a nonlinear :class:`~linoverfit.MLP` has). The sweeps then use
    the end-to-end map (population loss, closed-form gradient); otherwise ``net.apply`` on samples."""
    return callable(getattr(net, "end_to_end", None)) and bool(getattr(net, "linear", True))


@dataclass(frozen=True)
class DeepLinear:
    r"""A depth-``L`` linear network with layer widths ``(n_0, ..., n_L)``.

    ``widths = (d_in, h_1, ..., h_{L-1}, d_out)``; depth ``L = len(widths) - 1 >= 1``
    (depth 1 is plain linear regression). Stateless: weights are passed explicitly.

    Examples:
      >>> import linoverfit as lo
      >>> net = lo.DeepLinear((4, 8, 3))
      >>> net.depth, net.shapes
      (2, ((8, 4), (3, 8)))
    """

    widths: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "widths", _v.layer_widths(self.widths))

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def d_in(self) -> int:
        return self.widths[0]

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Layer shapes ``((n_1, n_0), ..., (n_L, n_{L-1}))``."""
        return tuple((self.widths[l + 1], self.widths[l]) for l in range(self.depth))

    def end_to_end(self, weights: Sequence[ArrayLike]) -> jax.Array:
        r"""End-to-end map :math:`P = W_L \cdots W_1` (see :func:`end_to_end`)."""
        return end_to_end(weights)

    def __call__(self, weights, x):
        r"""Predictions :math:`y = P x` for inputs ``x`` of shape ``(..., N, d_in)`` -> ``(..., N, d_out)``."""
        return x @ jnp.swapaxes(end_to_end(weights), -1, -2)

    def apply(self, weights, x):
        r"""Predictions :math:`y = P x`, ``(..., N, d_in)`` -> ``(..., N, d_out)`` (the :class:`Network` protocol)."""
        return self(weights, x)

    def check_weights(self, weights: Sequence[ArrayLike], name: str = "weights") -> tuple:
        """Validate that ``weights`` fit this network (leading batch axes allowed); return them as a tuple."""
        weights = _v.weights_tuple(weights, name)
        if len(weights) != self.depth:
            raise ValueError(f"{name} has {len(weights)} layers but the network has depth {self.depth}")
        for l, (w, shape) in enumerate(zip(weights, self.shapes)):
            if tuple(np.shape(w)[-2:]) != shape:
                raise ValueError(f"{name}[{l}] has shape {np.shape(w)}, expected (..., {shape[0]}, {shape[1]})")
        return weights

    def check_task(self, task: Task | Dataset, name: str = "task") -> Task | Dataset:
        """Check that ``task`` (a Task or Dataset) has this network's input and output widths."""
        if not (hasattr(task, "d_in") and hasattr(task, "loss")):
            raise TypeError(f"{name} must be a linoverfit Task or Dataset, got {type(task).__name__}")
        if (task.d_in, task.d_out) != (self.d_in, self.d_out):
            raise ValueError(
                f"{name} maps {task.d_in} -> {task.d_out} but the network widths are {self.widths} "
                f"(d_in={self.d_in}, d_out={self.d_out})"
            )
        return task

    def init(self, key: jax.Array | int, scale: float = 1e-3, scheme: str = "gaussian", task: Task | None = None,
             seeds: int | None = None, dtype: DTypeLike | None = None) -> tuple[jax.Array, ...]:
        r"""Initial weights.

        * ``"gaussian"``: entries iid :math:`\mathcal N(0, \text{scale}^2)`.
        * ``"balanced"``: :math:`W_l = \text{scale}\; Q_l Q_{l-1}^\top` with Haar-random
          ``Q_l`` (``n_l x k``, orthonormal columns, ``k = min(widths)``), so every layer has ``k``
          singular values equal to ``scale`` and :math:`W_{l+1}^\top W_{l+1} = W_l W_l^\top` exactly.
        * ``"aligned"``: balanced, with ``Q_0`` the teacher's top-``k`` right singular vectors and
          ``Q_L`` its left ones (``task`` required), so each teacher mode starts at
          :math:`s_0 = \text{scale}^L` and the mode dynamics of :mod:`linoverfit.theory` are exact.

        For ``"balanced"`` and ``"aligned"``, ``scale`` may also be ``k`` per-mode layer values
        :math:`a_i > 0` (``k = min(widths)``): :math:`W_l = Q_l\operatorname{diag}(a)Q_{l-1}^\top`,
        still balanced, so aligned mode :math:`i` starts at :math:`s_{0,i} = a_i^L` (e.g.
        ``scale=s0 ** (1 / L)`` with :func:`~linoverfit.theory.modes.gaussian_init_s0`).

        With ``seeds=S`` returns ``S`` independent initialisations stacked on a leading axis.
        Returns a tuple of ``L`` arrays of shape ``([S,] n_l, n_{l-1})``.

        Examples:
          >>> import jax, linoverfit as lo
          >>> net = lo.DeepLinear((4, 8, 3))
          >>> W = net.init(jax.random.key(0), scale=1e-3)
          >>> [w.shape for w in W]
          [(8, 4), (3, 8)]
          >>> W = net.init(jax.random.key(0), scale=0.1, scheme="balanced")
          >>> bool(jax.numpy.allclose(W[1].T @ W[1], W[0] @ W[0].T, atol=1e-6))
          True
          >>> [w.shape for w in net.init(jax.random.key(0), seeds=5)]
          [(5, 8, 4), (5, 3, 8)]
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
        per_mode = np.ndim(scale) == 1 and scheme != "gaussian"
        if per_mode:  # one layer value per mode: s_0 = scale_i^L on mode i
            scale = np.asarray(_v.positive_vector(scale, "scale"))
            if scale.size != min(self.widths):
                raise ValueError(f"scale has {scale.size} per-mode values; the {scheme} init of widths {self.widths} "
                                 f"has k = min(widths) = {min(self.widths)} modes (give k values or one number)")
        else:
            scale = _v.positive_scalar(scale, "scale")
        if scheme == "aligned":
            if task is None:
                raise ValueError("scheme='aligned' needs task= (the teacher whose singular vectors to align with)")
            self.check_task(task)
        key = _v.prng_key(key, "key")
        dtype = dtype or (task.teacher.dtype if task is not None else jnp.result_type(float))
        dtype = _v.weight_dtype(dtype, "dtype")
        # refuse weights that cannot fit before JAX tries (and aborts the process) to allocate them
        copies = 1 if seeds is None else _v.positive_int(seeds, "seeds")
        n_params = copies * sum(a * b for a, b in self.shapes)
        _mem.require(2 * n_params * dtype.itemsize, "net.init", f"{n_params} parameters of {dtype.name} "
                     f"(widths {self.widths}{'' if seeds is None else f', {copies} seeds'})",
                     "use smaller widths or fewer seeds", overhead=False)
        if seeds is not None:
            keys = jax.random.split(key, copies)
            per_seed = [self.init(k, scale, scheme, task, None, dtype) for k in keys]
            return tuple(jnp.stack(ws) for ws in zip(*per_seed))
        keys = jax.random.split(key, self.depth + 1)
        if scheme == "gaussian":
            return tuple(scale * jax.random.normal(k, s, dtype) for k, s in zip(keys, self.shapes))
        k = min(self.widths)
        Q = [jax.random.orthogonal(kk, n, dtype=dtype)[:, :k] for kk, n in zip(keys, self.widths)]
        if scheme == "aligned":
            U, _, Vt = task.svd()
            r = min(k, U.shape[1])
            Q[0] = Q[0].at[:, :r].set(Vt[:r].T.astype(dtype))
            Q[-1] = Q[-1].at[:, :r].set(U[:, :r].astype(dtype))
            # keep columns orthonormal after splicing in the teacher's vectors
            Q[0] = _complete_basis(Q[0], r)
            Q[-1] = _complete_basis(Q[-1], r)
        if per_mode:
            a = jnp.asarray(scale, dtype)
            return tuple((Q[l + 1] * a) @ Q[l].T for l in range(self.depth))
        return tuple(scale * Q[l + 1] @ Q[l].T for l in range(self.depth))


def _complete_basis(Q, r):
    """Re-orthonormalise columns ``r:`` of ``Q`` against the first ``r`` (which are kept exactly)."""
    if r >= Q.shape[1]:
        return Q
    head = Q[:, :r]
    tail = Q[:, r:] - head @ (head.T @ Q[:, r:])
    tail, _ = jnp.linalg.qr(tail)
    return jnp.concatenate([head, tail], axis=1)


def check_linear(net: object, name: str = "net") -> DeepLinear:
    r"""``net`` checked to be a :class:`DeepLinear` that computes :math:`y = W_L\cdots W_1 x` (what the
    closed forms of :mod:`linoverfit.theory` predict), returned as one: a linear
    :class:`~linoverfit.MLP` (``activation="identity"``, bit for bit a DeepLinear in the sweeps) is
    returned as the DeepLinear of its widths. A subclass overriding ``__call__``, ``apply`` or
    ``end_to_end`` (e.g. to apply a nonlinearity) would be predicted as the linear network and is
    refused with a ``TypeError`` naming ``name``, as is any nonlinear network."""
    if not isinstance(net, DeepLinear) and is_linear(net) and isinstance(getattr(net, "_linear_net", None), DeepLinear):
        return net._linear_net
    if not isinstance(net, DeepLinear):
        what = type(net).__name__ + (f"(activation={net.activation!r})" if hasattr(net, "activation") else "")
        raise TypeError(f"{name} must be a deep linear network (lo.DeepLinear, or lo.MLP(..., activation='identity')), "
                        f"got {what} (the closed forms hold for deep linear networks only; simulate other "
                        "networks with lo.pretrain / lo.finetune, and predict them with lo.theory.linearised.finetune or "
                        "lo.theory.hutchinson.second_order_sensitivity)")
    for attr in ("__call__", "apply", "end_to_end"):
        if getattr(type(net), attr) is not getattr(DeepLinear, attr):
            raise TypeError(
                f"{name} is a {type(net).__name__}, a DeepLinear subclass that overrides {attr}; linoverfit trains "
                f"and predicts a DeepLinear through its end-to-end map W_L ... W_1, not through {attr}, so what "
                f"{type(net).__name__} computes would be silently replaced. Pass lo.DeepLinear(widths) itself, "
                f"or a nonlinear network as lo.MLP(widths, activation=...) or lo.Model(init, apply, d_in, d_out).")
    return net


def check_network(net: object, name: str = "net") -> Network:
    r"""``net`` checked to be a :class:`Network` the sweeps can run: a :class:`DeepLinear` (checked
    by :func:`check_linear`: a subclass that computes something else than :math:`W_L\cdots W_1 x`
    is refused), or any other hashable object with ``init``, ``apply``, ``d_in``, ``d_out``,
    ``check_weights`` and ``check_task`` (:class:`~linoverfit.MLP`, :class:`~linoverfit.Model`).
    Raises ``TypeError`` naming ``name``."""
    if isinstance(net, DeepLinear):
        return check_linear(net, name)
    if not isinstance(net, Network):
        missing = [a for a in ("init", "apply", "d_in", "d_out", "check_weights", "check_task") if not hasattr(net, a)]
        raise TypeError(f"{name} must be a network (lo.DeepLinear, lo.MLP, lo.Model(init, apply, d_in, d_out)), got "
                        f"{type(net).__name__}" + (f" (it has no {', '.join(missing)})" if missing else ""))
    try:
        hash(net)
    except TypeError:
        raise TypeError(f"{name} ({type(net).__name__}) must be hashable: it is a static argument of the compiled "
                        "runs (use a frozen dataclass)") from None
    return net


def template(net):
    """One network's params as a pytree of ``jax.ShapeDtypeStruct`` (``net.init`` traced, not run)."""
    own = getattr(net, "template", None)
    return own() if callable(own) else jax.eval_shape(lambda k: net.init(k), jax.random.key(0))


def lead_shape(net, params) -> tuple:
    """The leading batch axes of ``params`` (seeds, checkpoints, ...), from the first leaf and ``net``'s template."""
    first, t = jax.tree.leaves(params)[0], jax.tree.leaves(template(net))[0]
    shape = tuple(np.shape(first))
    return shape[:len(shape) - len(t.shape)]


def param_count(net) -> int:
    """Parameters of one network (sum of the template's leaf sizes)."""
    return sum(int(np.prod(t.shape)) for t in jax.tree.leaves(template(net)))
