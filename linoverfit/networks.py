r"""Deep linear networks as plain tuples of matrices.

Weights are ``(W_1, ..., W_L)`` with ``W_l`` of shape ``(n_l, n_{l-1})``; the end-to-end map is
:math:`P = W_L \cdots W_1` and the prediction :math:`y = P x`. Leading batch axes (seeds,
checkpoints, learning rates) are allowed on every function here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from . import memory as _mem
from . import validation as _v
from .tasks import Dataset, Task

__all__ = ["DeepLinear", "end_to_end", "INIT_SCHEMES"]

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
            seeds = _v.positive_int(seeds, "seeds")
            keys = jax.random.split(key, seeds)
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
        return tuple(scale * Q[l + 1] @ Q[l].T for l in range(self.depth))


def _complete_basis(Q, r):
    """Re-orthonormalise columns ``r:`` of ``Q`` against the first ``r`` (which are kept exactly)."""
    if r >= Q.shape[1]:
        return Q
    head = Q[:, :r]
    tail = Q[:, r:] - head @ (head.T @ Q[:, r:])
    tail, _ = jnp.linalg.qr(tail)
    return jnp.concatenate([head, tail], axis=1)


def check_network(net, name: str = "net") -> DeepLinear:
    r"""``net`` checked to be a :class:`DeepLinear` that computes :math:`y = W_L\cdots W_1 x`: the sweeps
    and the closed forms use its end-to-end map (population loss, :func:`end_to_end`), so a subclass
    overriding ``__call__`` or ``end_to_end`` (e.g. to apply a nonlinearity) would be trained as the
    linear network and is refused with a ``TypeError`` naming ``name``."""
    if not isinstance(net, DeepLinear):
        raise TypeError(f"{name} must be a DeepLinear, got {type(net).__name__}")
    for attr in ("__call__", "end_to_end"):
        if getattr(type(net), attr) is not getattr(DeepLinear, attr):
            raise TypeError(
                f"{name} is a {type(net).__name__}, a DeepLinear subclass that overrides {attr}; linoverfit trains "
                f"and predicts a DeepLinear through its end-to-end map W_L ... W_1, not through {attr}, so what "
                f"{type(net).__name__} computes would be silently replaced. Pass lo.DeepLinear(widths) itself "
                f"(nonlinear networks are not supported yet).")
    return net
