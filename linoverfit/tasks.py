r"""Regression tasks :math:`(A, \Sigma, \sigma_\varepsilon^2)` and their constructors: teachers with a
chosen spectrum (:func:`power_law`, :func:`geometric`, :func:`from_spectrum`), shifted fine-tuning
tasks (:func:`shifted`) and mixtures (:func:`mixture`). The types, :class:`Task` (population loss
:math:`L(P) = \tfrac12 \operatorname{tr}((P - A)\Sigma(P - A)^\top) + \tfrac12\sigma_\varepsilon^2 d_{out}`)
and :class:`Dataset` (a finite sample), are defined in :mod:`linoverfit.task_types` and re-exported here.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from . import memory as _mem
from . import validation as _v
from .task_types import Dataset, Task

__all__ = [
    "Task",
    "Dataset",
    "power_law",
    "geometric",
    "from_spectrum",
    "shifted",
    "mixture",
    "SHIFT_KINDS",
    "SHIFT_SCALES",
]

SHIFT_KINDS = ("rotate", "additive", "subspace", "spectrum")
#: How ``shifted`` reads ``size`` for the additive and subspace shifts: ``"relative"`` (the default,
#: :math:`\lVert A' - A\rVert_F = \text{size}\,\lVert A\rVert_F` at every width) or ``"absolute"`` (entries of
#: the shift :math:`\sim\mathcal N(0, \text{size}^2/d_{in})`, the convention before 0.2.0).
SHIFT_SCALES = ("relative", "absolute")


def _as_key(key, name: str = "key"):
    """``key`` checked by :func:`linoverfit.validation.prng_key` (required: randomness is explicit)."""
    return _v.prng_key(key, name)


def _orthonormal(key, n: int, k: int, dtype):
    """``n x k`` matrix with orthonormal columns, Haar distributed."""
    return jax.random.orthogonal(key, n, dtype=dtype)[:, :k]


def from_spectrum(singular_values: ArrayLike, d_in: int, d_out: int, key: jax.Array | int,
                  input_cov: ArrayLike | None = None, noise: float = 0.0, dtype: DTypeLike | None = None,
                  input_var: ArrayLike | None = None) -> Task:
    r"""Teacher :math:`A = U \operatorname{diag}(s) V^\top` with the given singular values.

    ``U`` (``d_out x r``) and ``V`` (``d_in x r``) have Haar-random orthonormal columns,
    ``r = len(singular_values) <= min(d_in, d_out)``. Singular values must be >= 0.

    ``input_var`` :math:`\kappa` (``(r,)``, each :math:`\ge 0`, one per singular value, or a scalar)
    builds an input covariance that shares the teacher's right singular vectors,

    .. math:: \Sigma = V\operatorname{diag}(\kappa)V^\top + (I - VV^\top),

    (variance :math:`\kappa_i` along :math:`v_i`, 1 off the teacher's row space): the anisotropic case
    the mode theory covers (``lo.theory.modes.input_variance``, ``docs/theory.md`` section 1.8). Give
    ``input_cov`` or ``input_var``, not both.

    Examples:
      >>> import jax, linoverfit as lo
      >>> task = lo.tasks.from_spectrum([3.0, 1.0], d_in=5, d_out=4, key=jax.random.key(0))
      >>> task.teacher.shape
      (4, 5)
      >>> print(task.spectrum.round(4))
      [3. 1. 0. 0.]
    """
    d_in = _v.positive_int(d_in, "d_in")
    d_out = _v.positive_int(d_out, "d_out")
    s = _v.positive_vector(singular_values, "singular_values", allow_zero=True)
    if s.size > min(d_in, d_out):
        raise ValueError(f"singular_values has {s.size} entries but min(d_in, d_out) = {min(d_in, d_out)}")
    dtype = _v.weight_dtype(dtype or jnp.result_type(float), "dtype")
    key = _as_key(key)
    # Haar draws factor a full n x n Gaussian matrix (QR: the matrix, its factors, the workspace)
    n_floats = 3 * (d_out**2 + d_in**2) + 2 * d_out * d_in + (d_in**2 if input_cov is None else 0)
    _mem.require(n_floats * _mem.itemsize(dtype), "building the task",
                 f"d_in={d_in}, d_out={d_out}: Haar-random singular vectors of size {d_out}x{d_out} and {d_in}x{d_in}",
                 "use smaller d_in / d_out")
    if input_var is not None:
        if input_cov is not None:
            raise ValueError("give input_cov= (any covariance) or input_var= (variances along the teacher's right "
                             "singular vectors), not both")
        kappa = _v.positive_vector(input_var, "input_var", allow_zero=True)
        if np.ndim(input_var) == 0:
            kappa = np.full(s.size, kappa[0])
        if kappa.shape != s.shape:
            raise ValueError(f"input_var must be a scalar or have one entry per singular value ({s.size},), "
                             f"got shape {kappa.shape}")
    ku, kv = jax.random.split(key)
    U = _orthonormal(ku, d_out, s.size, dtype)
    V = _orthonormal(kv, d_in, s.size, dtype)
    A = (U * jnp.asarray(s, dtype)) @ V.T
    if input_var is not None:
        # built from the SVD of A itself, so the shared basis holds to round-off even where the Haar V and
        # A's own singular vectors differ (a sign, or a rotation inside a degenerate block)
        Vt = np.linalg.svd(np.asarray(A, np.float64), full_matrices=False)[2][: s.size]
        order = np.argsort(-np.asarray(s), kind="stable")  # A's SVD lists the modes by descending value
        k_sorted = np.asarray(kappa)[order]
        input_cov = jnp.asarray((Vt.T * k_sorted) @ Vt + np.eye(d_in) - Vt.T @ Vt, dtype)
    return Task(teacher=A, input_cov=input_cov, noise=noise)


def power_law(d_in: int, d_out: int, alpha: float = 1.0, key: jax.Array | int | None = None, scale: float = 1.0,
              rank: int | None = None, **kw: object) -> Task:
    r"""Teacher with power-law spectrum :math:`\sigma_i = \text{scale}\cdot i^{-\alpha}`, :math:`i = 1..r`.

    ``r = rank`` or ``min(d_in, d_out)``; singular vectors Haar random (from ``key``).
    Extra keywords (``input_cov``, ``noise``, ``dtype``) go to :func:`from_spectrum`.

    Examples:
      >>> import jax, linoverfit as lo
      >>> task = lo.tasks.power_law(d_in=4, d_out=3, alpha=1.0, key=jax.random.key(0))
      >>> task
      Task(d_out=3, d_in=4, noise=0.0)
      >>> print(task.spectrum.round(3))   # 1, 1/2, 1/3
      [1.    0.5   0.333]
    """
    alpha = _v.positive_scalar(alpha, "alpha", allow_zero=True)
    scale = _v.positive_scalar(scale, "scale")
    r = min(_v.positive_int(d_in, "d_in"), _v.positive_int(d_out, "d_out")) if rank is None else _v.positive_int(rank, "rank")
    s = scale * np.arange(1, r + 1, dtype=np.float64) ** (-alpha)
    return from_spectrum(s, d_in, d_out, key, **kw)


def geometric(d_in: int, d_out: int, ratio: float = 0.8, key: jax.Array | int | None = None, scale: float = 1.0,
              rank: int | None = None, **kw: object) -> Task:
    r"""Teacher with geometric spectrum :math:`\sigma_i = \text{scale}\cdot \text{ratio}^{\,i-1}`, :math:`0 < \text{ratio} \le 1`.

    Teacher shape ``(d_out, d_in)``, rank ``r = rank`` or ``min(d_in, d_out)``; other keywords as
    in :func:`power_law`.

    Examples:
      >>> import jax, linoverfit as lo
      >>> task = lo.tasks.geometric(5, 5, ratio=0.5, key=jax.random.key(0))
      >>> print(task.spectrum.round(4))
      [1.     0.5    0.25   0.125  0.0625]
    """
    ratio = _v.positive_scalar(ratio, "ratio")
    if ratio > 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    scale = _v.positive_scalar(scale, "scale")
    r = min(_v.positive_int(d_in, "d_in"), _v.positive_int(d_out, "d_out")) if rank is None else _v.positive_int(rank, "rank")
    s = scale * ratio ** np.arange(r, dtype=np.float64)
    return from_spectrum(s, d_in, d_out, key, **kw)


def _plane_rotation(key, n: int, angle, dtype):
    r"""Orthogonal :math:`R = Q\,\mathrm{blockdiag}(R_\theta, \dots)\,Q^\top`: every vector of the
    ``2*floor(n/2)``-dimensional span is rotated by exactly ``angle`` (one axis fixed if ``n`` odd)."""
    Q = jax.random.orthogonal(key, n, dtype=dtype)
    c, s = jnp.cos(angle), jnp.sin(angle)
    m = n // 2
    blocks = jnp.zeros((n, n), dtype)
    idx = jnp.arange(m)
    blocks = blocks.at[2 * idx, 2 * idx].set(c).at[2 * idx + 1, 2 * idx + 1].set(c)
    blocks = blocks.at[2 * idx, 2 * idx + 1].set(-s).at[2 * idx + 1, 2 * idx].set(s)
    if n % 2:
        blocks = blocks.at[n - 1, n - 1].set(1.0)
    return Q @ blocks @ Q.T


def shifted(task: Task, kind: str = "additive", size: float = 0.1, key: jax.Array | int | None = None,
            rank: int | None = None, spectrum: ArrayLike | None = None, scale: str = "relative") -> Task:
    r"""A fine-tuning task derived from ``task`` (teacher :math:`A = U S V^\top`, covariance :math:`\Sigma`).

    ``kind``:

    * ``"rotate"``: :math:`A' = R_{out} A R_{in}^\top`, :math:`\Sigma' = \Sigma`, where :math:`R`
      rotates every direction by exactly the angle ``size`` (radians) in random orthogonal planes,
      so the singular values are kept and each singular subspace is turned by ``size``.
    * ``"additive"``: :math:`A' = A + G` with :math:`G` in a uniformly random direction
      (Gaussian entries). ``scale="relative"`` (default): :math:`\lVert G\rVert_F = \text{size}\,\lVert A\rVert_F`
      exactly, so ``size`` is the shift as a fraction of the teacher whatever the width (``size=0.1``:
      10% of the teacher's norm). ``scale="absolute"`` (the convention before 0.2.0):
      :math:`G_{ij} \sim \mathcal N(0, \text{size}^2 / d_{in})` (so :math:`\mathbb E\lVert G x\rVert^2 =
      \text{size}^2 d_{out}` for white inputs), which grows against the teacher with the width
      (``size=0.1`` is 0.45x a power-law teacher's norm at width 32, 1.24x at width 256). The same
      ``key`` draws the same direction under both conventions.
    * ``"subspace"``: inputs confined to a random ``rank``-dimensional subspace, :math:`\Sigma' = Q_r Q_r^\top`
      (``rank`` defaults to ``d_in // 4``), and the teacher shifted additively as above (``scale`` too).
    * ``"spectrum"``: same singular vectors, new singular values: ``spectrum`` if given, else
      :math:`s_i' = s_i \exp(\text{size}\, z_i)`, :math:`z_i \sim \mathcal N(0,1)`.

    Label noise is kept. ``size >= 0``; ``size = 0`` gives the same teacher (and for
    ``subspace`` only the restricted inputs). ``scale`` (:data:`SHIFT_SCALES`) matters for
    ``"additive"`` and ``"subspace"`` only: ``"rotate"`` (an angle) and ``"spectrum"`` (a log factor)
    are relative already. A relative shift of a zero teacher raises a ValueError (no scale to
    be relative to; pass ``scale="absolute"``).

    Examples:
      >>> import jax, linoverfit as lo
      >>> task = lo.tasks.power_law(16, 16, alpha=1.0, key=jax.random.key(0))
      >>> rot = lo.tasks.shifted(task, kind="rotate", size=0.1, key=jax.random.key(1))
      >>> print(rot.spectrum[:3].round(3))   # a rotation keeps the singular values
      [1.    0.5   0.333]
      >>> sub = lo.tasks.shifted(task, kind="subspace", size=0.1, rank=4, key=jax.random.key(1))
      >>> round(float(sub.input_cov.trace()), 3)   # inputs confined to 4 dimensions
      4.0
      >>> add = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1))
      >>> round(float(jax.numpy.linalg.norm(add.teacher - task.teacher) / jax.numpy.linalg.norm(task.teacher)), 4)
      0.1
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a linoverfit Task, got {type(task).__name__}")
    if kind not in SHIFT_KINDS:
        raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {kind!r}")
    size = _v.positive_scalar(size, "size", allow_zero=True)
    if scale not in SHIFT_SCALES:
        raise ValueError(f"scale must be one of {SHIFT_SCALES}, got {scale!r}")
    key = _as_key(key)
    A, dtype = task.teacher, task.teacher.dtype
    k1, k2 = jax.random.split(key)
    if kind == "rotate":
        R_out = _plane_rotation(k1, task.d_out, size, dtype)
        R_in = _plane_rotation(k2, task.d_in, size, dtype)
        return task.with_(teacher=R_out @ A @ R_in.T)
    if kind == "additive":
        return task.with_(teacher=A + _additive_shift(k1, A, size, scale))
    if kind == "subspace":
        r = task.d_in // 4 if rank is None else _v.positive_int(rank, "rank")
        if r > task.d_in:
            raise ValueError(f"rank must be <= d_in = {task.d_in}, got {r}")
        r = max(r, 1)
        Q = _orthonormal(k2, task.d_in, r, dtype)
        return task.with_(teacher=A + _additive_shift(k1, A, size, scale), input_cov=Q @ Q.T)
    # spectrum
    U, s, Vt = task.svd()
    if spectrum is None:
        s_new = s * jnp.exp(size * jax.random.normal(k1, s.shape, dtype))
    else:
        s_new = jnp.asarray(_v.positive_vector(spectrum, "spectrum", allow_zero=True), dtype)
        if s_new.shape != s.shape:
            raise ValueError(f"spectrum must have {s.shape[0]} entries, got {s_new.shape[0]}")
    return task.with_(teacher=(U * s_new) @ Vt)


def _additive_shift(key, A, size, scale):
    r"""The additive shift :math:`G` of :func:`shifted`: Gaussian entries, scaled to
    :math:`\lVert G\rVert_F = \text{size}\lVert A\rVert_F` (``"relative"``) or to entries of variance
    :math:`\text{size}^2/d_{in}` (``"absolute"``)."""
    G = jax.random.normal(key, A.shape, A.dtype)
    if scale == "absolute":
        return G * (size / np.sqrt(A.shape[1]))
    norm = jnp.linalg.norm(A)  # Frobenius
    if not _v.is_traced(norm) and float(norm) == 0.0:
        raise ValueError("shifted: the teacher is zero, so a shift relative to it has no size; "
                         "pass scale='absolute' (entries of variance size**2 / d_in)")
    return G * (size * norm / jnp.linalg.norm(G))


def mixture(task: Task, other: Task, rho: float) -> Task:
    r"""The objective :math:`(1-\rho)\,L_{task} + \rho\,L_{other}` as one equivalent :class:`Task`.

    Both losses are quadratic in :math:`P`, so the mixture is again a task, exactly:
    with :math:`\Sigma_\rho = (1-\rho)\Sigma_1 + \rho\Sigma_2` (assumed invertible when the
    covariances differ and :math:`\rho > 0`; :math:`\rho = 0` returns ``task`` itself),

    .. math:: A_\rho = \big((1-\rho)A_1\Sigma_1 + \rho A_2\Sigma_2\big)\Sigma_\rho^{-1},

    and the label noise :math:`\sigma_\rho^2` carries the constant that makes
    ``mixture(...).loss(P)`` equal the mixed loss for every :math:`P`:
    :math:`\tfrac12 d_{out}\sigma_\rho^2 = (1-\rho)\big(\tfrac12\operatorname{tr}A_1\Sigma_1A_1^\top
    + \tfrac12 d_{out}\sigma_1^2\big) + \rho(\ldots)_2 - \tfrac12\operatorname{tr}A_\rho\Sigma_\rho A_\rho^\top`
    (:math:`\ge 0`). With equal covariances :math:`A_\rho = (1-\rho)A_1 + \rho A_2`. Online samples
    drawn from it (``lo.pretrain(..., online=True)``) have the mixture's population loss, not its
    per-sample mixture distribution.

    Args:
      task, other: the two tasks, same shapes; rho: the weight :math:`0 \le \rho \le 1` of ``other``.

    Examples:
      >>> import jax, jax.numpy as jnp, linoverfit as lo
      >>> a = lo.Task(teacher=jnp.eye(2)); b = lo.Task(teacher=-jnp.eye(2))
      >>> m = lo.tasks.mixture(a, b, 0.25)
      >>> print(m.teacher.round(3))   # (1 - rho) I + rho (-I)
      [[0.5 0. ]
       [0.  0.5]]
      >>> round(float(m.noise), 6)    # the constant: (1/2)(2) - (1/2)(2 * 0.25) = d_out * noise / 2
      0.75
    """
    for name, t in (("task", task), ("other", other)):
        if not isinstance(t, Task):
            raise TypeError(f"{name} must be a linoverfit Task, got {type(t).__name__}")
    if task.teacher.shape != other.teacher.shape:
        raise ValueError(f"task and other must have the same teacher shape, got {task.teacher.shape} and "
                         f"{other.teacher.shape}")
    rho = _v.positive_scalar(rho, "rho", allow_zero=True)
    if rho > 1:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    if rho == 0:  # the mixture is task itself, whatever the covariances (no solve, a singular one included)
        return task
    A1, A2 = np.asarray(task.teacher, np.float64), np.asarray(other.teacher, np.float64)
    S1, S2 = np.asarray(task.input_cov, np.float64), np.asarray(other.input_cov, np.float64)
    S = (1 - rho) * S1 + rho * S2
    if np.array_equal(S1, S2):
        A = (1 - rho) * A1 + rho * A2
    else:
        try:
            A = np.linalg.solve(S.T, ((1 - rho) * A1 @ S1 + rho * A2 @ S2).T).T
        except np.linalg.LinAlgError:
            raise ValueError("the mixed input covariance (1-rho) Sigma_1 + rho Sigma_2 is singular; "
                             "use covariances whose mixture is invertible") from None
    d_out = A1.shape[0]

    def energy(A_, S_, noise):
        return 0.5 * np.trace(A_ @ S_ @ A_.T) + 0.5 * d_out * float(noise)

    const = (1 - rho) * energy(A1, S1, task.noise) + rho * energy(A2, S2, other.noise) - energy(A, S, 0.0)
    # round-off can make an exact 0 slightly negative
    noise = max(2.0 * const / d_out, 0.0)
    dtype = task.teacher.dtype
    return Task(teacher=jnp.asarray(A, dtype), input_cov=jnp.asarray(S, dtype), noise=noise)
