r"""The task types: :class:`Task` (population) and :class:`Dataset` (finite sample).

A task is the triple :math:`(A, \Sigma, \sigma_\varepsilon^2)`: inputs
:math:`x \sim \mathcal N(0, \Sigma)` with :math:`x \in \mathbb R^{d_{in}}`, labels
:math:`y = A x + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \sigma_\varepsilon^2 I_{d_{out}})`.
A linear predictor :math:`P` (the end-to-end map of a network) has population loss

.. math:: L(P) = \tfrac12 \operatorname{tr}\big((P - A)\Sigma(P - A)^\top\big) + \tfrac12 \sigma_\varepsilon^2 d_{out},

and on a finite sample :math:`\{(x_n, y_n)\}_{n=1}^N` the loss is
:math:`\tfrac1{2N}\sum_n \lVert P x_n - y_n\rVert^2` (:class:`Dataset`).
Both are pytrees, so changing their *values* never recompiles a training run.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import validation as _v

__all__ = ["Task", "Dataset"]


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, eq=False)
class Task:
    r"""A linear-regression task :math:`(A, \Sigma, \sigma_\varepsilon^2)`.

    Args:
      teacher: :math:`A`, shape ``(d_out, d_in)``.
      input_cov: :math:`\Sigma`, shape ``(d_in, d_in)``, symmetric PSD. ``None`` means :math:`I`.
      noise: label-noise variance :math:`\sigma_\varepsilon^2 \ge 0`.

    Raises ``ValueError`` naming the argument for NaN/inf, wrong shapes, a non-square or
    non-PSD covariance, or negative noise.

    Examples:
      >>> import jax, jax.numpy as jnp, linoverfit as lo
      >>> task = lo.Task(teacher=jnp.array([[2.0, 0.0], [0.0, 1.0]]))   # input_cov = I, noise 0
      >>> task
      Task(d_out=2, d_in=2, noise=0.0)
      >>> float(task.loss(jnp.zeros((2, 2))))   # 1/2 ||A||_F^2
      2.5
      >>> data = task.sample(100, key=jax.random.key(0))
      >>> data, float(data.loss(task.teacher))
      (Dataset(n=100, d_in=2, d_out=2), 0.0)
    """

    teacher: jax.Array
    input_cov: jax.Array | None = None
    noise: float = 0.0

    def __post_init__(self):
        A = self.teacher
        if not _v.is_traced(A):
            _v.finite_matrix(A, "teacher")
            A = jnp.asarray(A)
            if not jnp.issubdtype(A.dtype, jnp.floating):
                A = A.astype(jnp.result_type(float))
            _v.float_dtype(A, "teacher")  # float16/bfloat16: too few bits, refused by name
            object.__setattr__(self, "teacher", A)
        d_in = A.shape[1]
        cov = self.input_cov
        if cov is None:
            cov = jnp.eye(d_in, dtype=A.dtype)
        elif not _v.is_traced(cov):
            _v.psd_matrix(cov, "input_cov", dim=d_in)
            cov = jnp.asarray(cov, dtype=A.dtype)
        object.__setattr__(self, "input_cov", cov)
        if not _v.is_traced(self.noise):
            _v.positive_scalar(self.noise, "noise", allow_zero=True)

    # pytree protocol: children are arrays, so new values reuse compiled code
    def tree_flatten(self) -> tuple[tuple, None]:
        return (self.teacher, self.input_cov, self.noise), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple) -> Task:
        obj = object.__new__(cls)
        for name, value in zip(("teacher", "input_cov", "noise"), children):
            object.__setattr__(obj, name, value)
        return obj

    @property
    def d_in(self) -> int:
        return self.teacher.shape[1]

    @property
    def d_out(self) -> int:
        return self.teacher.shape[0]

    def loss(self, P: ArrayLike) -> jax.Array:
        r"""Population loss :math:`\tfrac12\operatorname{tr}((P-A)\Sigma(P-A)^\top) + \tfrac12\sigma_\varepsilon^2 d_{out}`.

        ``P`` has shape ``(..., d_out, d_in)``; returns shape ``(...)``.
        """
        D = P - self.teacher
        return 0.5 * jnp.sum(D * (D @ self.input_cov), axis=(-2, -1)) + 0.5 * self.noise * self.d_out

    def grad(self, P: ArrayLike) -> jax.Array:
        r""":math:`\nabla_P L = (P - A)\Sigma`, shape of ``P``."""
        return (P - self.teacher) @ self.input_cov

    def svd(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Teacher SVD ``(U, s, Vt)`` with ``A = U diag(s) Vt``, ``s`` descending, length ``min(d_out, d_in)``."""
        return jnp.linalg.svd(self.teacher, full_matrices=False)

    @property
    def spectrum(self) -> jax.Array:
        """Teacher singular values, descending."""
        return jnp.linalg.svd(self.teacher, compute_uv=False)

    def input_sqrt(self) -> jax.Array:
        r"""Symmetric PSD square root :math:`\Sigma^{1/2}` (via eigh; negative round-off clipped)."""
        w, Q = jnp.linalg.eigh(self.input_cov)
        return (Q * jnp.sqrt(jnp.clip(w, 0.0))) @ Q.T

    def sample(self, n: int, key: jax.Array | int) -> Dataset:
        r"""Draw ``n`` samples :math:`x_n \sim \mathcal N(0,\Sigma)`, :math:`y_n = A x_n + \varepsilon_n`.

        Returns a :class:`Dataset` with ``x`` of shape ``(n, d_in)`` and ``y`` of shape ``(n, d_out)``.
        """
        n = _v.positive_int(n, "n")
        kx, ke = jax.random.split(_v.prng_key(key, "key"))
        z = jax.random.normal(kx, (n, self.d_in), dtype=self.teacher.dtype)
        x = z @ self.input_sqrt()
        eps = jax.random.normal(ke, (n, self.d_out), dtype=self.teacher.dtype)
        y = x @ self.teacher.T + jnp.sqrt(self.noise) * eps
        return Dataset(x=x, y=y)

    def with_(self, **changes: object) -> Task:
        """A copy with some fields replaced (validated again)."""
        fields = {"teacher": self.teacher, "input_cov": self.input_cov, "noise": self.noise}
        fields.update(changes)
        return Task(**fields)

    def __repr__(self) -> str:
        return f"Task(d_out={self.d_out}, d_in={self.d_in}, noise={self.noise})"


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, eq=False)
class Dataset:
    r"""A finite sample ``x`` ``(N, d_in)``, ``y`` ``(N, d_out)`` with loss
    :math:`\tfrac1{2N}\sum_n\lVert P x_n - y_n\rVert^2`."""

    x: jax.Array
    y: jax.Array

    def __post_init__(self):
        if _v.is_traced(self.x):
            return
        _v.finite_matrix(self.x, "x")
        _v.finite_matrix(self.y, "y")
        if np.shape(self.x)[0] != np.shape(self.y)[0]:
            raise ValueError(f"x and y must have the same number of rows, got {np.shape(self.x)[0]} and {np.shape(self.y)[0]}")
        object.__setattr__(self, "x", jnp.asarray(self.x))
        object.__setattr__(self, "y", jnp.asarray(self.y))
        for name in ("x", "y"):
            if jnp.issubdtype(getattr(self, name).dtype, jnp.floating):
                _v.float_dtype(getattr(self, name), name)

    def tree_flatten(self) -> tuple[tuple, None]:
        return (self.x, self.y), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple) -> Dataset:
        obj = object.__new__(cls)
        object.__setattr__(obj, "x", children[0])
        object.__setattr__(obj, "y", children[1])
        return obj

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d_in(self) -> int:
        return self.x.shape[1]

    @property
    def d_out(self) -> int:
        return self.y.shape[1]

    def loss(self, P: ArrayLike) -> jax.Array:
        r"""Full-sample loss :math:`\tfrac1{2N}\sum_n\lVert P x_n - y_n\rVert^2`; ``P`` ``(..., d_out, d_in)``."""
        return self.batch_loss(P, self.x, self.y)

    def as_task(self) -> Task:
        r"""The :class:`Task` with this sample's own moments, whose population loss equals the sample
        loss for every map :math:`P` (exact, no assumption on the data):

        .. math:: \hat\Sigma = \tfrac1N X^\top X,\quad \hat A = \tfrac1N Y^\top X\,\hat\Sigma^{+},\quad
                  \tfrac1{2N}\lVert XP^\top - Y\rVert_F^2 = \tfrac12\operatorname{tr}\big((P-\hat A)\hat\Sigma(P-\hat A)^\top\big) + r,

        with :math:`r = \tfrac1{2N}\lVert Y\rVert_F^2 - \tfrac12\operatorname{tr}(\hat A\hat\Sigma\hat A^\top) \ge 0`
        the least-squares residual, stored as the label noise :math:`2r/d_{out}`. (The rows of
        :math:`Y^\top X` lie in the range of :math:`\hat\Sigma`, so the pseudo-inverse loses nothing
        when :math:`N < d_{in}`.) Full-batch GD on the sample is GD on this Task, step for step, so
        ``lo.theory`` predicts it. Computed in float64, returned in the sample's dtype.

        Examples:
          >>> import jax, numpy as np, linoverfit as lo
          >>> data = lo.tasks.power_law(4, 3, key=jax.random.key(0)).sample(10, key=1)
          >>> P = np.ones((3, 4), np.float32)
          >>> bool(np.isclose(data.as_task().loss(P), data.loss(P), rtol=1e-5))
          True
        """
        x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
        n = x.shape[0]
        cov = x.T @ x / n
        A = (y.T @ x / n) @ np.linalg.pinv(cov, hermitian=True)
        r = 0.5 * float(np.sum(y * y)) / n - 0.5 * float(np.sum(A * (A @ cov)))
        dtype = self.x.dtype
        return Task(teacher=jnp.asarray(A, dtype), input_cov=jnp.asarray(0.5 * (cov + cov.T), dtype),
                    noise=max(2.0 * r / self.d_out, 0.0))

    @staticmethod
    def batch_loss(P: ArrayLike, x: ArrayLike, y: ArrayLike) -> jax.Array:
        r""":math:`\tfrac1{2B}\sum_b\lVert P x_b - y_b\rVert^2` for a (mini)batch ``x`` ``(B, d_in)``, ``y`` ``(B, d_out)``."""
        r = jnp.einsum("...oi,bi->...bo", P, x) - y
        return 0.5 * jnp.mean(jnp.sum(r * r, axis=-1), axis=-1)

    def __repr__(self) -> str:
        return f"Dataset(n={self.n}, d_in={self.d_in}, d_out={self.d_out})"


# ----------------------------------------------------------------------------- factories
