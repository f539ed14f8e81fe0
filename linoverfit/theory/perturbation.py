r"""Exact expected loss under Gaussian weight perturbation, any depth, widths and input covariance.

For weights :math:`W = (W_1,\dots,W_L)`, noise :math:`E_l` with iid :math:`\mathcal N(0,1)` entries on
every layer and :math:`P_\gamma = \prod_l (W_l + \gamma E_l)`, the expected population loss is a
polynomial in :math:`\gamma^2`,

.. math:: \mathbb E\,L(W + \gamma E) = L(W) + \sum_{k=1}^{L} c_k(W)\,\gamma^{2k},

and :math:`S(W,\gamma) = \sum_k c_k\gamma^{2k}` is the sensitivity. ``docs/theory.md`` (section 2)
derives the subset expansion
:math:`S = \tfrac12\sum_{\emptyset \ne S \subseteq [L]} \gamma^{2|S|}\prod_{\text{segments}}\lVert\cdot\rVert_F^2`
and the covariance recursion used here,

.. math:: K_0 = \Sigma,\qquad K_l = W_l K_{l-1} W_l^\top + \gamma^2 \operatorname{tr}(K_{l-1})\, I_{n_l},
          \qquad \mathbb E\operatorname{tr}(P_\gamma \Sigma P_\gamma^\top) = \operatorname{tr} K_L,

carried out coefficient by coefficient in :math:`\gamma^2` (:math:`O(L^2)` matrix products, not
:math:`2^L` subsets). Everything here is ``jax.numpy``, so it can be ``jit``-ed and ``vmap``-ed and
accepts leading batch axes (checkpoints, seeds) on the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


import jax
import jax.numpy as jnp
import numpy as np

from .. import deprecation as _deprecation
from .. import validation as _v
from ..tasks import Task
from ._args import _gamma, _widths

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear


__all__ = [
    "perturbation_coefficients",
    "perturbation_sensitivity",
    "expected_perturbed_loss",
    "sensitivity_from_spectrum",
]


def _check_weights(weights):
    weights = _v.weights_tuple(weights, "weights")
    return tuple(jnp.asarray(w) for w in weights)


def _check_cov(input_cov, d_in, dtype):
    if input_cov is None:
        return None
    if not _v.is_traced(input_cov):
        _v.psd_matrix(input_cov, "input_cov", dim=d_in)
    return jnp.asarray(input_cov, dtype)


def _trace(K):
    return jnp.trace(K, axis1=-2, axis2=-1)


@jax.jit
def _coefficients(weights, cov):
    """``(..., L+1)``: coefficient k of gamma^(2k) in E tr(P_gamma Sigma P_gamma^T)."""
    L = len(weights)
    batch = jnp.broadcast_shapes(*(w.shape[:-2] for w in weights))
    dtype = jnp.result_type(*weights) if cov is None else jnp.result_type(*weights, cov)
    d_in = weights[0].shape[-1]
    K0 = jnp.eye(d_in, dtype=dtype) if cov is None else cov
    # K[..., k, :, :] is the coefficient of gamma^(2k); after layer l only k <= l are non-zero
    K = jnp.broadcast_to(K0, batch + (1, d_in, d_in))
    for l, W in enumerate(weights):
        Wb = W[..., None, :, :]
        carried = Wb @ K @ jnp.swapaxes(Wb, -1, -2)  # unperturbed layer: W K W^T
        eye = jnp.eye(W.shape[-2], dtype=dtype)
        # perturbed layer: E[E K E^T] = tr(K) I, one power of gamma^2 higher
        injected = _trace(K)[..., :, None, None] * eye
        zero = jnp.zeros(carried.shape[:-3] + (1,) + carried.shape[-2:], dtype)
        K = jnp.concatenate([carried, zero], axis=-3) + jnp.concatenate([zero, injected], axis=-3)
    assert K.shape[-3] == L + 1
    return _trace(K)


def perturbation_coefficients(weights: Sequence[ArrayLike], input_cov: ArrayLike | None = None) -> jax.Array:
    r"""Coefficients :math:`c_1,\dots,c_L` of the sensitivity polynomial :math:`S(W,\gamma) = \sum_k c_k \gamma^{2k}`.

    :math:`c_k = \tfrac12\sum_{|S| = k}\prod_{\text{segments}}\lVert\cdot\rVert_F^2` sums over the
    sets of :math:`k` perturbed layers (``docs/theory.md``, eq. (2.3)); e.g. depth 2 with
    :math:`\Sigma = I`: :math:`c_1 = \tfrac12(d_{in}\lVert W_2\rVert_F^2 + d_{out}\lVert W_1\rVert_F^2)`,
    :math:`c_2 = \tfrac12 d_{in} h\, d_{out}`. Every :math:`c_k \ge 0`. Computed by the covariance
    recursion in :math:`O(L^2)` matrix products.

    Args:
      weights: tuple of ``L`` arrays ``(..., n_l, n_{l-1})`` (leading batch axes broadcast).
      input_cov: :math:`\Sigma`, ``(d_in, d_in)`` PSD, or ``None`` for the identity.

    Returns an array of shape ``(..., L)``: ``[..., k-1]`` is :math:`c_k`.

    Examples:
      >>> import jax.numpy as jnp, linoverfit as lo
      >>> W = (jnp.ones((3, 2)), jnp.ones((1, 3)))     # d_in=2, h=3, d_out=1
      >>> lo.theory.perturbation.perturbation_coefficients(W)       # [(2*3 + 1*6)/2, 2*3*1/2]
      Array([6., 3.], dtype=float32)
    """
    weights = _check_weights(weights)
    cov = _check_cov(input_cov, weights[0].shape[-1], jnp.result_type(*weights))
    return 0.5 * _coefficients(weights, cov)[..., 1:]


def _polyval(coeffs, gamma):
    """``sum_k coeffs[..., k-1] gamma^(2k)`` with shape ``coeffs.shape[:-1] + gamma.shape``."""
    g2 = jnp.asarray(gamma) ** 2
    c = coeffs.reshape(coeffs.shape[:-1] + (1,) * g2.ndim + coeffs.shape[-1:])
    out = jnp.zeros(c.shape[:-1], jnp.result_type(c, g2))
    for k in range(c.shape[-1] - 1, -1, -1):  # Horner in gamma^2
        out = (out + c[..., k]) * g2
    return out


def perturbation_sensitivity(weights: Sequence[ArrayLike], gamma: ArrayLike,
                             input_cov: ArrayLike | None = None) -> jax.Array:
    r"""Exact sensitivity :math:`S(W,\gamma) = \mathbb E[L(W+\gamma E)] - L(W) = \sum_{k=1}^{L} c_k\gamma^{2k}`.

    Independent of the teacher and of label noise (the perturbation leaves :math:`\mathbb E P_\gamma = P`).

    Args:
      weights: tuple of ``L`` arrays ``(..., n_l, n_{l-1})``.
      gamma: noise scale(s) :math:`\gamma \ge 0`, any shape ``G``; a scalar is one scale, ``G = (1,)``.
      input_cov: :math:`\Sigma` ``(d_in, d_in)`` or ``None`` (identity).

    Returns shape ``(...) + G``, e.g. ``(C, G)`` for checkpoints x noise scales, the layout of
    :class:`~linoverfit.sensitivity.SensitivityResult`; one noise scale, passed as a scalar or as
    ``[gamma]``, keeps its axis, ``(C, 1)``, as in ``lo.sensitivity.gaussian``.
    """
    weights = _check_weights(weights)
    cov = _check_cov(input_cov, weights[0].shape[-1], jnp.result_type(*weights))
    return _sensitivity(weights, cov, _gamma(gamma))


@jax.jit
def _sensitivity(weights, cov, gamma):
    return _polyval(0.5 * _coefficients(weights, cov)[..., 1:], gamma)


@_deprecation.keyword_only("linoverfit.theory.expected_perturbed_loss", 2)
def expected_perturbed_loss(weights: Sequence[ArrayLike], teacher: Task | ArrayLike, *,
                            input_cov: ArrayLike | None = None, gamma: ArrayLike | None = None,
                            noise: float = 0.0) -> jax.Array:
    r"""Exact :math:`\mathbb E_E[L(W + \gamma E)]` for any depth, widths and PSD input covariance.

    .. math:: \mathbb E\,L(W+\gamma E) = \tfrac12\operatorname{tr}\big((P-A)\Sigma(P-A)^\top\big)
              + \tfrac12\sigma_\varepsilon^2 d_{out} + \sum_{k=1}^{L} c_k(W)\gamma^{2k},

    with :math:`P = W_L\cdots W_1` and :math:`c_k` from :func:`perturbation_coefficients`
    (``docs/theory.md``, section 2). Pure ``jax.numpy``: ``jit``/``vmap`` over weights or gamma work.

    Args:
      weights: tuple of ``L`` arrays ``(..., n_l, n_{l-1})`` (e.g. ``run.weights``, ``(C, n_l, n_{l-1})``).
      teacher: :math:`A` ``(d_out, d_in)``, or a :class:`~linoverfit.Task` (then its covariance and
        noise are used and ``input_cov`` must be left ``None``).
      input_cov: :math:`\Sigma` ``(d_in, d_in)`` PSD, or ``None`` for the identity.
      gamma: noise scale(s) :math:`\gamma \ge 0`, any shape ``G``; a scalar is one scale, ``G = (1,)``.
      noise: label-noise variance :math:`\sigma_\varepsilon^2` (adds :math:`\sigma_\varepsilon^2 d_{out}/2`).

    ``input_cov``, ``gamma`` and ``noise`` are keyword-only (passing them positionally still works
    until 0.3.0, with a ``DeprecationWarning``).

    Returns shape ``(...) + G``: ``(C, G)`` for ``run.weights``, ``(C, 1)`` for one noise scale
    (scalar or ``[gamma]``), as ``lo.sensitivity.gaussian``'s ``(C, G)``.

    Examples:
      >>> import jax.numpy as jnp, linoverfit as lo
      >>> W = (jnp.eye(2), 2 * jnp.eye(2))
      >>> # P = A, so only the sensitivity: gamma^2 (2*8 + 2*2)/2 + gamma^4 (2*2*2)/2
      >>> f = lo.theory.expected_perturbed_loss(W, 2 * jnp.eye(2), gamma=jnp.array([0.0, 0.1]))
      >>> print(f.round(6))
      [0.     0.1004]
    """
    if isinstance(teacher, Task):
        if input_cov is not None:
            raise ValueError("input_cov must be None when teacher is a Task (the task's covariance is used)")
        teacher, input_cov, noise = teacher.teacher, teacher.input_cov, teacher.noise
    weights = _check_weights(weights)
    d_out, d_in = weights[-1].shape[-2], weights[0].shape[-1]
    if not _v.is_traced(teacher):
        _v.finite_matrix(teacher, "teacher", shape=(d_out, d_in))
    if not _v.is_traced(noise):
        _v.positive_scalar(noise, "noise", allow_zero=True)
    A = jnp.asarray(teacher)
    cov = _check_cov(input_cov, d_in, jnp.result_type(*weights, A))
    return _expected(weights, A, cov, jnp.asarray(noise), _gamma(gamma))


@jax.jit
def _expected(weights, A, cov, noise, gamma):
    coeffs = _coefficients(weights, cov)
    # the zeroth coefficient is tr(P Sigma P^T) only; the loss needs the cross term with A, so form P
    P = weights[0]
    for W in weights[1:]:
        P = W @ P
    D = P - A
    DS = D if cov is None else D @ cov
    base = 0.5 * jnp.sum(D * DS, axis=(-2, -1)) + 0.5 * noise * A.shape[0]
    return base.reshape(base.shape + (1,) * gamma.ndim) + _polyval(0.5 * coeffs[..., 1:], gamma)


# ----------------------------------------------------------------------------- balanced aligned weights


def _segment_dp(p, dp, widths, g2, first=None):
    r"""Subset-expansion DP for balanced aligned weights.

    Positions ``0`` (the input) and ``L+1`` (the output) are virtual perturbed layers; the segment
    between perturbed positions ``a < b`` holds ``m = b - a - 1`` unperturbed layers and has squared
    norm ``p[m]`` (``m >= 1``) or the width ``n_a`` (``m = 0``). ``g[b]`` sums, over the sets of
    perturbed layers below ``b``, gamma^(2|S|+2) times their segment norms. Carries the time
    derivative ``dp`` alongside (product rule), for the turning point.
    """
    L = len(widths) - 1

    def seg(a, b):
        m = b - a - 1
        if a == 0 and first is not None:  # segments from the input see Sigma: (q, dq, tr Sigma)
            q, dq, tr = first
            return (tr, 0.0) if m == 0 else (q[m], dq[m])
        if m == 0:
            return float(widths[a]), 0.0
        return p[m], dp[m]

    g, dg = [1.0], [0.0]
    for b in range(1, L + 1):
        val, der = 0.0, 0.0
        for a in range(b):
            n, dn = seg(a, b)
            val = val + g[a] * n
            der = der + dg[a] * n + g[a] * dn
        g.append(g2 * val)
        dg.append(g2 * der)
    S, dS = 0.0, 0.0
    for a in range(1, L + 1):
        n, dn = seg(a, L + 1)
        S = S + g[a] * n
        dS = dS + dg[a] * n + g[a] * dn
    return 0.5 * S, 0.5 * dS


def _spectrum_sensitivity(s, gamma, widths, sdot=None, input_var=None):
    """Sensitivity (and its time derivative given ``sdot``) of balanced aligned weights; numpy.

    ``input_var``: ``(kappa (M,), tr Sigma)`` for an input covariance sharing the modes' right singular
    vectors: a segment that starts at the input then has squared norm ``sum_i kappa_i s_i^(2m/L)``
    (``tr Sigma`` when empty) instead of ``sum_i s_i^(2m/L)`` (``d_in``)."""
    L = len(widths) - 1
    kappa = None if input_var is None else np.asarray(input_var[0], np.float64)

    def powers(weight):
        w = 1.0 if weight is None else weight
        p = [None] + [np.sum(w * np.power(s, 2.0 * m / L), axis=-1) for m in range(1, L + 1)]
        if sdot is None:
            return p, [0.0] * (L + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            # d/dt s^(2m/L) = (2m/L) s^(2m/L) (sdot / s); 0 where s = 0 (the mode is at a fixed point)
            rel = np.where(s > 0, sdot / np.where(s > 0, s, 1.0), 0.0)
        return p, [None] + [np.sum(w * (2.0 * m / L) * np.power(s, 2.0 * m / L) * rel, axis=-1) for m in range(1, L + 1)]

    g = np.asarray(gamma, dtype=np.float64)

    def shaped(p, dp):
        bshape = np.shape(p[1]) + (1,) * g.ndim
        return ([None] + [np.reshape(x, bshape) for x in p[1:]],
                [0.0] + [np.broadcast_to(np.reshape(x, np.shape(x) + (1,) * g.ndim), bshape) for x in dp[1:]], bshape)

    p, dp, bshape = shaped(*powers(None))
    first = None
    if kappa is not None:
        q, dq, _ = shaped(*powers(kappa))
        first = (q, dq, float(input_var[1]))
    S, dS = _segment_dp(p, dp, widths, g**2, first)
    zero = np.zeros(bshape)  # depth 1 does not depend on s: keep the batch axes anyway
    return S + zero, dS + zero


def sensitivity_from_spectrum(s: ArrayLike, gamma: ArrayLike, widths: DeepLinear | Sequence[int]) -> np.ndarray:
    r"""Sensitivity :math:`S(\gamma)` of balanced aligned weights as a function of the learnt spectrum (:math:`\Sigma = I`).

    With :math:`W_l = U_l\operatorname{diag}(s^{1/L})U_{l-1}^\top`, a product of :math:`m \ge 1`
    consecutive layers has squared norm :math:`p_m = \sum_i s_i^{2m/L}` and an empty one the
    width it sits at, so (``docs/theory.md``, eq. (2.6))

    .. math:: S = \tfrac12\sum_{\emptyset\ne S\subseteq[L]}\gamma^{2|S|}\prod_{\text{segments}} N_{\text{seg}},

    summed by an :math:`O(L^2)` recursion over the positions of the perturbed layers. Depth 2:
    :math:`S = \tfrac{\gamma^2}{2}(d_{in}+d_{out})\sum_i s_i + \tfrac{\gamma^4}{2}d_{in}h\,d_{out}`.

    Args:
      s: learnt spectrum :math:`s_i \ge 0`, shape ``(..., M)`` with ``M <= min(widths)``
        (e.g. the output of :func:`~linoverfit.theory.modes.mode_trajectory`, ``(T, M)``).
      gamma: :math:`\gamma \ge 0`, any shape ``G``; a scalar is one scale, ``G = (1,)``.
      widths: ``(d_in, h_1, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`.

    Returns shape ``s.shape[:-1] + G`` (numpy): one noise scale keeps its axis.

    Examples:
      >>> import linoverfit as lo
      >>> # gamma^2/2 (2 + 2)(1 + 0.5) + gamma^4/2 (2 * 2 * 2)
      >>> lo.theory.perturbation.sensitivity_from_spectrum([1.0, 0.5], 0.1, widths=(2, 2, 2)).round(6)
      array([0.0304])
    """
    widths = _widths(widths)
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 0:
        raise ValueError("s must have a trailing mode axis, shape (..., M)")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("s must be finite and >= 0")
    if s.shape[-1] > min(widths):
        raise ValueError(f"s has {s.shape[-1]} modes but a network with widths {widths} carries at most {min(widths)}")
    _gamma(gamma)
    return _spectrum_sensitivity(s, np.atleast_1d(np.asarray(gamma, np.float64)), widths)[0]
