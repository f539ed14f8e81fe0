r"""Predicted U-curves over pre-training time and their minimiser, the turning point :math:`T^*`.

Balanced aligned gradient flow (or GD, ``pretrain_lr=``) with :math:`\Sigma = I` or :math:`\Sigma v_i = \kappa_i v_i`
(``docs/theory.md``, sections 1.8, 3): the spectrum
:math:`s_i(t)` follows :func:`~linoverfit.theory.mode_trajectory`, and

* under Gaussian perturbation the expected pre-training loss is
  :math:`f(t) = \tfrac12\sum_i(\sigma_i - s_i(t))^2 + S(s(t);\gamma)` (+ the unlearnable part and
  label noise), with :math:`S` from :func:`~linoverfit.theory.sensitivity_from_spectrum`;
* under fine-tuning for flow time :math:`\tau = \eta\cdot\text{steps}` it is the pre-training loss of
  the end-to-end flow (:func:`~linoverfit.theory.end_to_end_flow`) started at
  :math:`P(t) = U\operatorname{diag}(s(t))V^\top`.

Learning mode :math:`i` lowers the fit term by about :math:`\sigma_i^2/2` and raises the cost of the
perturbation; :func:`turning_point` returns the minimiser of :math:`f` and, per mode, whether
learning it pays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


import numpy as np
from scipy.optimize import brentq, minimize_scalar

from .. import validation as _v
from ..results import Result, result
from .flow import FinetunePrediction, predict_finetune
from .modes import _lr, _mode_solution, _nonneg, _weight_decay, input_variance, mode_asymptote, mode_trajectory, mode_velocity
from .perturbation import _gamma, _spectrum_sensitivity, _widths
from .ucurve import u_curve

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear
    from ..tasks import Task


__all__ = [
    "perturbed_loss_curve",
    "finetune_curve",
    "perturbation_threshold",
    "turning_point",
    "TurningPoint",
]


# ----------------------------------------------------------------------------- inputs


def _spectrum(task, widths):
    """(sigma descending, noise) from a Task or from singular values; checks widths. A Task's input
    covariance is checked by :func:`_input_variance`."""
    from ..tasks import Task

    d_in, d_out = widths[0], widths[-1]
    if isinstance(task, Task):
        if (task.d_in, task.d_out) != (d_in, d_out):
            raise ValueError(f"task maps {task.d_in} -> {task.d_out} but widths are {widths}")
        return np.sort(np.asarray(task.spectrum, np.float64))[::-1], float(task.noise)
    sigma = _nonneg(task, "task")
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(f"task must be a Task or a 1-D array of teacher singular values, got shape {sigma.shape}")
    if sigma.size > min(d_in, d_out):
        raise ValueError(f"task has {sigma.size} singular values but min(d_in, d_out) = {min(d_in, d_out)}")
    return np.sort(sigma)[::-1], 0.0


def _input_variance(task, widths):
    r"""Per-mode input variances :math:`\kappa_i = v_i^\top\Sigma v_i` of the ``min(widths)`` carried modes,
    of all teacher modes, and :math:`\operatorname{tr}\Sigma`; ``None`` for :math:`\Sigma = I` or singular values.

    The mode dynamics close only when every right singular vector of the teacher is an eigenvector
    of :math:`\Sigma` (Saxe et al. 2014); any other covariance raises a ValueError naming that condition."""
    from ..tasks import Task

    if not isinstance(task, Task):
        return None
    cov = np.asarray(task.input_cov, np.float64)
    if np.allclose(cov, np.eye(cov.shape[0]), rtol=0, atol=1e-10):
        return None
    kappa_all = input_variance(task)  # raises the ValueError naming the condition
    k = min(widths)
    kappa = np.ones(k)
    n = min(k, kappa_all.size)
    kappa[:n] = kappa_all[:n]
    return kappa, kappa_all, float(np.trace(cov))


def _learnable(sigma, widths):
    """(sigma of the min(widths) modes the network carries, zero-padded; sum of sigma^2 it cannot learn)."""
    k = min(widths)
    sig = np.zeros(k)
    n = min(k, sigma.size)
    sig[:n] = sigma[:n]
    return sig, float(np.sum(sigma[n:] ** 2))


def _s0(s0, k):
    """Initial mode values: a scalar, or one per mode ``(k,)``; all > 0."""
    arr = _nonneg(s0, "s0")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != k):
        raise ValueError(f"s0 must be a scalar or have one entry per mode ({k},), got shape {arr.shape}")
    if np.any(arr <= 0):
        raise ValueError("s0 must be > 0 (the initial mode value, scale**depth for an aligned init)")
    return arr


def _horizon(sig, s0, L, lam):
    """A time by which every mode that will be learnt is learnt (generous), for default grids."""
    s_inf = mode_asymptote(sig, s0, L, lam)
    live = s_inf > s0
    if L == 1 or not np.any(live):
        return 10.0 / (1.0 + lam) if L == 1 else 10.0
    r, start = s_inf[live], np.broadcast_to(s0, sig.shape)[live]
    if L == 2:
        half = np.log(np.maximum(r / start - 1.0, 1.0)) / (2.0 * r)
    else:  # integral of ds / (L sigma s^(2-2/L) / 2) from s0 upwards (the slow start dominates)
        half = 2.0 / ((L - 2) * r * start ** ((L - 2) / L))
    # then within 1% of the asymptote after ~ log(100) / (L r^(2-2/L)) more
    return float(1.5 * np.max(half + 5.0 / (L * r ** (2.0 - 2.0 / L))))


# ----------------------------------------------------------------------------- curves


def perturbed_loss_curve(task: Task | ArrayLike, t: ArrayLike, gamma: ArrayLike, *, widths: DeepLinear | Sequence[int],
                         s0: ArrayLike, weight_decay: float = 0.0, pretrain_lr: float | None = None) -> np.ndarray:
    r"""Predicted expected pre-training loss after Gaussian perturbation, over pre-training time.

    .. math:: f(t) = \tfrac12\sum_{i\le k}(\sigma_i - s_i(t))^2 + \tfrac12\sum_{i>k}\sigma_i^2
              + \tfrac12\sigma_\varepsilon^2 d_{out} + S\big(s(t);\gamma\big),

    :math:`s_i(t)` from :func:`mode_trajectory` (balanced aligned init, :math:`\Sigma = I`),
    :math:`k = \min(\text{widths})` the modes the network carries and :math:`S` the exact
    sensitivity of balanced aligned weights (:func:`sensitivity_from_spectrum`). For a Task whose
    input covariance :math:`\Sigma` shares the teacher's right singular vectors,
    :math:`\Sigma v_i = \kappa_i v_i`, each mode follows (1.3) at rate :math:`\kappa_i`, the fit terms carry
    the weights :math:`\kappa_i` and :math:`S` sees :math:`\Sigma` on its input side (``docs/theory.md`` 3.5);
    any other covariance raises a ValueError.

    Args:
      task: a :class:`~linoverfit.Task` (identity input covariance, or one sharing the teacher's right
        singular vectors), or the teacher's singular values ``(r,)`` (then :math:`\Sigma = I`).
      t: pre-training times :math:`t = \eta\cdot\text{steps} \ge 0`, shape ``T``.
      gamma: :math:`\gamma \ge 0`, scalar or shape ``G``.
      widths: ``(d_in, h_1, ..., d_out)`` or a :class:`~linoverfit.DeepLinear` (depth is ``len - 1``).
      s0: initial mode value (``scale**depth`` for ``net.init(scheme="aligned", scale=scale)``), or
        one per carried mode ``(k,)`` (e.g. :func:`gaussian_init_s0` for a small Gaussian init).
      weight_decay: :math:`\lambda` on every layer during pre-training.
      pretrain_lr: ``None`` (pre-training by gradient flow) or the pre-training learning rate
        :math:`\eta`: then :math:`s(t)` is GD's, exactly (:func:`mode_trajectory` with ``lr=``; the
        per-mode map :math:`a \mapsto a + \eta(\kappa_i a^{L-1}(\sigma_i - a^L) - \lambda a)`).

    Returns shape ``t.shape + G``; :math:`\gamma = 0` gives the plain pre-training loss.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> f = lo.theory.perturbed_loss_curve(1 / np.arange(1, 9), np.geomspace(1, 1e4, 50), 0.1,
      ...                                    widths=(8, 8, 8), s0=1e-6)
      >>> f.shape, int(np.argmin(f)) not in (0, 49)    # a U-curve: interior minimum
      ((50,), True)
    """
    widths = _widths(widths)
    L = len(widths) - 1
    gamma = np.asarray(_gamma(gamma))
    sigma, noise = _spectrum(task, widths)
    sig, rest = _learnable(sigma, widths)
    var = _input_variance(task, widths)
    if var is None:
        kappa, rest_k, iv = 1.0, rest, None
    else:
        kappa, kap_all, tr = var
        rest_k, iv = float(np.sum(kap_all[sig.size:] * sigma[sig.size:] ** 2)), (kappa, tr)
    s = mode_trajectory(sig, t, _s0(s0, sig.size), L, weight_decay, lr=pretrain_lr,
                        input_var=None if var is None else kappa)
    fit = 0.5 * np.sum(kappa * (sig - s) ** 2, axis=-1) + 0.5 * rest_k + 0.5 * noise * widths[-1]
    S = _spectrum_sensitivity(s, gamma, widths, input_var=iv)[0]
    return fit.reshape(fit.shape + (1,) * np.ndim(gamma)) + S


def _curve_and_slope(sig, rest, noise, t, gamma, widths, s0, lam, modes=None, input_var=None):
    """f(t) and df/dt for scalar gamma (perturbation), arrays of shape t.shape; ``modes``: a dense
    solution ``t -> s`` (:func:`~linoverfit.theory.modes._mode_solution`) to evaluate instead of re-solving."""
    L = len(widths) - 1
    s = mode_trajectory(sig, t, s0, L, lam) if modes is None else modes(t)
    # each mode learns at its own input variance: ds/dt = L kappa s^(2-2/L) (sigma - s) - L lam s
    kappa = 1.0 if input_var is None else input_var[0]
    sdot = mode_velocity(s, sig, L, lam, input_var=None if input_var is None else kappa)
    S, dS = _spectrum_sensitivity(s, gamma, widths, sdot=sdot, input_var=input_var)
    f = 0.5 * np.sum(kappa * (sig - s) ** 2, axis=-1) + 0.5 * rest + 0.5 * noise * widths[-1] + S
    df = np.sum(kappa * (s - sig) * sdot, axis=-1) + dS
    return f, df


def _aligned_maps(task, widths, s):
    """Maps U_k diag(s) V_k^T of a balanced aligned net, ``s`` ``(..., k)``."""
    U, _, Vt = (np.asarray(x, np.float64) for x in task.svd())
    k = s.shape[-1]
    return np.einsum("ik,...k,kj->...ij", U[:, :k], s, Vt[:k])


def finetune_curve(task: Task, finetune: Task, t: ArrayLike, *, widths: DeepLinear | Sequence[int], s0: ArrayLike,
                   lr: ArrayLike, steps: int, weight_decay: float = 0.0,
                   pretrain_lr: float | None = None, gd_order: int | str = "auto", return_maps: bool = False,
                   method: str = "auto", rtol: float = 1e-10) -> FinetunePrediction:
    r"""Predicted fine-tuning outcome from every pre-training time ``t`` (balanced aligned init).

    Pre-training gives :math:`P(t) = U\operatorname{diag}(s(t))V^\top` (:func:`mode_trajectory`; with
    :math:`\Sigma v_i = \kappa_i v_i` each mode at its own input variance, ``docs/theory.md`` 1.8);
    fine-tuning on ``finetune`` for :math:`\tau = \eta\cdot\text{steps}` is the end-to-end flow
    from it (:func:`predict_finetune`). ``pretrain_loss_after`` over ``t`` is the fine-tuning
    U-curve.

    Args:
      task: pre-training :class:`~linoverfit.Task` (its singular vectors matter): identity input
        covariance or one sharing the teacher's right singular vectors; any other raises a ValueError.
      finetune: fine-tuning :class:`~linoverfit.Task` (any PSD covariance).
      t: pre-training times, shape ``(C,)``.
      widths, s0, weight_decay: the pre-training network and init, as in :func:`perturbed_loss_curve`.
      lr: fine-tuning learning rate(s) ``(R,)``; steps: fine-tuning steps.
      pretrain_lr: ``None`` (pre-training by gradient flow) or the pre-training learning rate: then
        :math:`s(t)` is GD's, exactly (:func:`mode_trajectory` with ``lr=``).
      gd_order: how fine-tuning at each ``lr`` is predicted (:func:`predict_finetune`; default
        ``"auto"``: GD, not the flow).
      method, rtol: how the flow is integrated (:func:`end_to_end_flow`).

    Returns a :class:`FinetunePrediction` with ``t`` and losses ``(C, R)``.
    """
    from ..tasks import Task

    widths = _widths(widths)
    if not isinstance(task, Task):
        raise TypeError("task must be a Task for fine-tuning predictions (the singular vectors matter)")
    sigma, _ = _spectrum(task, widths)
    sig, _ = _learnable(sigma, widths)
    t = _nonneg(t, "t")
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D (the checkpoint axis), got shape {t.shape}")
    var = _input_variance(task, widths)
    L = len(widths) - 1
    if pretrain_lr is None and L >= 3 and t.size:
        # the dense mode solve turning_point uses (one universal curve without weight decay): same s(t)
        s = _mode_solution(sig, _s0(s0, sig.size), L, _weight_decay(weight_decay), float(np.max(t)),
                           kappa=None if var is None else var[0])(t)
    else:
        s = mode_trajectory(sig, t, _s0(s0, sig.size), L, weight_decay, lr=pretrain_lr,
                            input_var=None if var is None else var[0])
    pred = predict_finetune(_aligned_maps(task, widths, s), finetune, lr, steps, depth=len(widths) - 1,
                            pretrain_task=task, return_maps=return_maps, gd_order=gd_order, method=method, rtol=rtol)
    return FinetunePrediction(**{**pred.__dict__, "t": t})


# ----------------------------------------------------------------------------- thresholds


def perturbation_threshold(gamma: ArrayLike, widths: DeepLinear | Sequence[int]) -> np.ndarray:
    r"""Smallest teacher singular value worth learning under perturbation :math:`\gamma`, for an isolated mode.

    Learning one mode fully (:math:`s: 0 \to \sigma`, no other mode learnt) changes the expected
    perturbed loss by :math:`\Delta(\sigma) = -\sigma^2/2 + S(\sigma) - S(0)`;
    :math:`S(\sigma) - S(0)` is a positive combination of powers :math:`\sigma^{q}`, :math:`q < 2`,
    so :math:`\Delta < 0` exactly when :math:`\sigma > \sigma^*`. Closed forms (``docs/theory.md``,
    section 3.3): depth 2 :math:`\sigma^* = \gamma^2(d_{in} + d_{out})`; depth 1
    :math:`\sigma^* = 0` (the sensitivity of a single layer does not depend on the weights);
    depth :math:`L \ge 3`: root of :math:`\Delta` (scipy ``brentq``). At the threshold every
    order in :math:`\gamma` counts equally, and for equal widths :math:`n \gg L`
    :math:`\sigma^* \approx (\gamma^2 n / y_L)^{L/2}` with :math:`y_L` the positive root of
    :math:`\sum_{k=1}^{L-1}(k+1)y^k = 1` (:math:`y_2 = 1/2`, :math:`y_3 = 1/3`, :math:`y_4 \approx 0.304`).

    Args:
      gamma: :math:`\gamma > 0`, scalar or any shape.
      widths: ``(d_in, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`.

    Exact scaling: :math:`\sigma^*(\gamma) = \gamma^L\,\sigma^*(1)` (each layer of every term of
    :math:`\Delta` is either perturbed, :math:`\gamma^2`, or in a product, :math:`\sigma^{2/L}`), so
    one root serves every :math:`\gamma`; a threshold beyond float64 raises ``ValueError``.

    Returns :math:`\sigma^*` with the shape of ``gamma``.

    Examples:
      >>> import linoverfit as lo
      >>> round(float(lo.theory.perturbation_threshold(0.1, widths=(64, 64, 64))), 10)   # 0.01 * 128
      1.28
    """
    widths = _widths(widths)
    L = len(widths) - 1
    g = _nonneg(gamma, "gamma")
    if np.any(g == 0):
        raise ValueError("gamma must be > 0")
    if L == 1:
        return np.zeros(g.shape)
    if L == 2:
        return g**2 * (widths[0] + widths[-1])
    # every term of S(sigma) - S(0) and sigma^2 carry gamma^(2L) once sigma = gamma^L u (each layer
    # is either perturbed, gamma^2, or in a product, sigma^(2/L)), so sigma*(gamma) = gamma^L sigma*(1)
    # exactly: one root at gamma = 1, valid for every gamma (no underflow for tiny gamma)
    base = _spectrum_sensitivity(np.zeros(1), 1.0, widths)[0]

    def delta(log_sig):
        sig = np.exp(log_sig)
        return _spectrum_sensitivity(np.array([sig]), 1.0, widths)[0] - base - 0.5 * sig**2

    guess = np.log((widths[0] + widths[-1] + L - 2) ** (L / 2))
    lo_, hi = guess - 1.0, guess + 1.0
    for _ in range(200):  # Delta < 0 for large sigma and > 0 for small sigma: a bracket exists
        if delta(lo_) > 0:
            break
        lo_ -= 2.0
    for _ in range(200):
        if delta(hi) < 0:
            break
        hi += 2.0
    log_u = brentq(delta, lo_, hi, xtol=1e-14, rtol=1e-14)
    with np.errstate(over="ignore", divide="ignore"):
        out = np.exp(L * np.log(g) + log_u)
    if not np.all(np.isfinite(out)):
        big = float(g[~np.isfinite(out)].ravel()[0])
        raise ValueError(f"perturbation_threshold: gamma={big:g} gives a threshold gamma**{L} x {np.exp(log_u):.4g} "
                         f"beyond float64; gamma must be below {np.exp((np.log(np.finfo(float).max) - log_u) / L):.3g}")
    return out


# ----------------------------------------------------------------------------- turning point


@result
class TurningPoint(Result):
    r"""Predicted turning point of a U-curve over pre-training time.

    * ``kind``: ``"perturbation"`` or ``"finetune"``.
    * ``t_star``: the minimiser :math:`T^*` of the predicted curve on ``[0, t_max]``; ``loss`` its value.
    * ``interior``: ``False`` when the curve is still decreasing at ``t_max`` (then ``t_star = t_max``
      and the true :math:`T^*` lies beyond the horizon).
    * ``threshold``: :func:`perturbation_threshold` (perturbation only; NaN for fine-tuning).
    * ``marginal`` ``(k,)``: change of the predicted curve when mode ``i`` is learnt fully after
      modes ``< i`` (the sequential-learning idealisation, small init); ``worth`` ``(k,)``: ``marginal < 0``.
    * ``t`` ``(N,)``, ``curve`` ``(N,)``: the grid the minimum was bracketed on and the curve there.
    * ``depth``, ``rise``, ``is_turning_point``, ``interval``: the curve judged by the shared
      definition (:func:`~linoverfit.theory.u_curve` on ``t``, ``curve`` with the refined minimum
      inserted): ``is_turning_point`` only when the minimum is interior *and* the curve rises after
      it by at least ``depth`` (a fraction of the minimum); ``interval`` is the range of :math:`t`
      within ``depth`` of the minimum. ``interior`` alone says nothing about depth: a curve
      0.01% deep can be "interior".
    """

    kind: str
    t_star: float
    loss: float
    interior: bool
    threshold: float
    marginal: np.ndarray
    worth: np.ndarray
    t: np.ndarray
    curve: np.ndarray
    depth: float = 0.01
    rise: float = float("nan")
    is_turning_point: bool = False
    interval: tuple = (float("nan"), float("nan"))

    _dims = {"marginal": ("mode",), "worth": ("mode",), "curve": ("grid",)}

    def _coords(self) -> dict:
        return {"t": ("grid", self.t)}


def _judged(t, f, t_star, loss, depth):
    """``dict(depth, rise, is_turning_point, interval)`` of the grid curve with the refined minimum inserted."""
    j = int(np.searchsorted(t, t_star))
    if j < t.size and t[j] == t_star:
        t2, f2 = t, np.where(np.arange(t.size) == j, min(loss, f[j]), f)
    else:
        t2, f2 = np.insert(t, j, t_star), np.insert(f, j, loss)
    u = u_curve(t2, f2, depth=depth)
    return {"depth": u.depth, "rise": u.rise, "is_turning_point": u.is_turning_point, "interval": u.interval}


def _grid(t_max, n):
    return np.concatenate([[0.0], np.geomspace(t_max * 1e-5, t_max, n - 1)])


def _staircase(sig, s0, L, lam, kappa=None):
    """Spectra (k+1, k): row i has modes < i at their asymptote, the rest at 0 (``kappa``: per-mode input
    variance, which divides the weight decay a mode feels)."""
    s_inf = mode_asymptote(sig, s0, L, lam, input_var=kappa)
    k = sig.size
    return np.where(np.arange(k)[None, :] < np.arange(k + 1)[:, None], s_inf[None, :], 0.0)


def _gd_turning_point(sig, rest, noise, t, g, widths, s0, lam, eta, kappa, iv, stairs, depth, max_steps=20_000):
    """Perturbation T* for GD pre-training: the curve is read on exact GD spectra (mode_trajectory(lr=)), the
    lowest grid minima are refined over every GD step of their bracket (T* a multiple of eta), or by bounded
    Brent on the step-interpolated curve where a bracket spans more than ``max_steps`` steps."""
    L = len(widths) - 1

    def modes(ts):
        return mode_trajectory(sig, ts, s0, L, lam, lr=eta, input_var=kappa)

    def curve(ts):
        return _curve_and_slope(sig, rest, noise, np.asarray(ts, np.float64), g, widths, s0, lam, modes, iv)[0]

    f = curve(t)
    cands = [(float(f[0]), 0.0), (float(f[-1]), float(t[-1]))]
    inner = np.flatnonzero((f[1:-1] <= f[:-2]) & (f[1:-1] <= f[2:])) + 1
    for i in inner[np.argsort(f[inner])][:8]:  # the lowest local minima of the grid
        n_lo, n_hi = int(np.ceil(t[i - 1] / eta)), int(np.floor(t[i + 1] / eta))
        if n_hi - n_lo + 1 <= max_steps:
            ts = eta * np.arange(n_lo, n_hi + 1, dtype=np.float64)
            fs = curve(ts)
            j = int(np.argmin(fs))
            cands.append((float(fs[j]), float(ts[j])))
        else:
            res = minimize_scalar(lambda x: float(curve(np.array([x]))[0]), bounds=(t[i - 1], t[i + 1]),
                                  method="bounded", options={"xatol": 1e-8 * t[i + 1]})
            cands.append((float(res.fun), float(res.x)))
    loss, t_star = min(cands)
    interior = bool(t_star < t[-1])
    kw = 1.0 if kappa is None else kappa
    stair_values = 0.5 * np.sum(kw * (sig - stairs) ** 2, axis=-1) + _spectrum_sensitivity(stairs, g, widths, input_var=iv)[0]
    marginal = np.diff(stair_values)
    return TurningPoint("perturbation", float(t_star), float(loss), interior, float(perturbation_threshold(g, widths)),
                        marginal, marginal < 0, t, f, **_judged(t, f, float(t_star), float(loss), depth))


def turning_point(task: Task | ArrayLike, gamma: float | None = None, *, widths: DeepLinear | Sequence[int],
                  s0: ArrayLike, weight_decay: float = 0.0, finetune: Task | None = None, lr: float | None = None,
                  steps: int | None = None, t_max: float | None = None, grid: int | None = None, depth: float = 0.01,
                  pretrain_lr: float | None = None, gd_order: int | str = "auto") -> TurningPoint:
    r"""Predicted turning point :math:`T^* = \arg\min_t f(t)` of the perturbation or fine-tuning U-curve.

    Perturbation (``gamma=``): :math:`f` is :func:`perturbed_loss_curve`; its derivative is exact,

    .. math:: f'(t) = \sum_i \big(s_i - \sigma_i + \partial S/\partial s_i\big)\,\dot s_i,

    (depth 2: :math:`\partial S/\partial s_i = \gamma^2(d_{in}+d_{out})/2`), so every local minimum is
    a sign change of :math:`f'` bracketed on a grid and bisected to 1e-12 relative (all brackets at
    once, on one dense mode solve: ``docs/theory.md`` 3.6); the smallest of them (or an end point) is
    :math:`T^*`. A Task whose input covariance shares the teacher's right singular vectors is
    supported (each mode at its own input variance, ``docs/theory.md`` 3.5); any other covariance
    raises a ValueError.

    Fine-tuning (``finetune=, lr=, steps=``): :math:`f(t)` is the pre-training loss after fine-tuning
    from :math:`P(t)` (:func:`finetune_curve`, one flow solve for the whole grid); the grid minimum
    is refined by bounded Brent minimisation (``scipy.optimize.minimize_scalar``).

    Args:
      task: pre-training :class:`~linoverfit.Task` (identity covariance, or one sharing the teacher's
        right singular vectors), or for perturbation only its singular values (then :math:`\Sigma = I`).
      gamma: perturbation scale :math:`\gamma > 0` (scalar). Exactly one of ``gamma`` / ``finetune``.
      widths: ``(d_in, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`; s0: initial mode value;
        weight_decay: pre-training :math:`\lambda`.
      finetune: fine-tuning :class:`~linoverfit.Task`; lr: its learning rate (scalar); steps: its steps.
      pretrain_lr, gd_order: GD instead of gradient flow in pre-training (``pretrain_lr``, default
        flow) and fine-tuning (``gd_order``, default ``"auto"``: GD), as in :func:`finetune_curve`.
        For perturbation with ``pretrain_lr`` the curve is read on the exact GD spectra and the lowest
        grid minima are refined over every GD step of their bracket, so :math:`T^*` is the minimising
        multiple of ``pretrain_lr`` (bounded Brent on the step-interpolated curve where a bracket spans
        more than 20000 steps).
      t_max: horizon (default: long enough for every learnable mode to be learnt).
      grid: number of grid points (default 4096 for perturbation, 96 for fine-tuning).
      depth: smallest relative rise after the minimum that makes it a turning point
        (:func:`~linoverfit.theory.u_curve`; 0.01 = 1%).

    Returns a :class:`TurningPoint`; ``is_turning_point`` is the verdict, ``interior`` only the location.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> tp = lo.theory.turning_point(1 / np.arange(1, 9), gamma=0.1, widths=(8, 8, 8), s0=1e-6)
      >>> # threshold gamma^2 (d_in + d_out) = 0.16: modes 1/1 .. 1/6 are worth learning, 1/7 and 1/8 not
      >>> tp.is_turning_point, int(tp.worth.sum()), round(tp.threshold, 12)
      (True, 6, 0.16)
    """
    widths = _widths(widths)
    L = len(widths) - 1
    lam = _weight_decay(weight_decay)
    depth = _v.positive_scalar(depth, "depth", allow_zero=True)
    if (gamma is None) == (finetune is None):
        raise ValueError("give exactly one of gamma= (perturbation) or finetune= (fine-tuning)")
    sigma, noise = _spectrum(task, widths)
    sig, rest = _learnable(sigma, widths)
    s0 = _s0(s0, sig.size)
    var = _input_variance(task, widths)
    kappa, iv = (None, None) if var is None else (var[0], (var[0], var[2]))
    if var is not None:
        rest = float(np.sum(var[1][sig.size:] * sigma[sig.size:] ** 2))
    if t_max is None:
        # input variance kappa rescales a mode's time (and its weight decay by 1/kappa): the slowest sets it
        kmin = 1.0 if kappa is None else float(np.min(kappa[sig > 0], initial=1.0))
        t_max = _horizon(sig, s0, L, lam / kmin) / kmin
    t_max = _v.positive_scalar(t_max, "t_max")
    if grid is not None:
        grid = _v.positive_int(grid, "grid")
        if grid < 3:
            raise ValueError(f"grid must be >= 3, got {grid}")
    stairs = _staircase(sig, s0, L, lam, kappa)

    if gamma is not None:
        g = _nonneg(gamma, "gamma")
        if g.ndim != 0 or g == 0:
            raise ValueError(f"gamma must be a scalar > 0, got {gamma!r}")
        g = float(g)
        t = _grid(t_max, grid or 4096)
        if pretrain_lr is not None:
            return _gd_turning_point(sig, rest, noise, t, g, widths, s0, lam, _lr(pretrain_lr), kappa, iv, stairs,
                                     depth)
        # one dense solve serves the grid and every evaluation of the root finder (depth >= 3 has no closed form)
        modes = _mode_solution(sig, s0, L, lam, t_max, kappa=kappa)
        f, df = _curve_and_slope(sig, rest, noise, t, g, widths, s0, lam, modes, iv)

        def value(x):
            return float(_curve_and_slope(sig, rest, noise, np.array([x]), g, widths, s0, lam, modes, iv)[0][0])

        def slopes(x):
            return _curve_and_slope(sig, rest, noise, x, g, widths, s0, lam, modes, iv)[1]

        cands = [(f[0], 0.0)] if df[0] >= 0 else []
        idx = np.flatnonzero((df[:-1] < 0) & (df[1:] >= 0))
        a, b = t[np.maximum(idx - 1, 0)], t[np.minimum(idx + 2, t.size - 1)]
        sa, sb = slopes(a), slopes(b)
        ok = (sa < 0) & (sb >= 0)
        # every bracket at once: vectorised bisection to 1e-12 relative (one curve evaluation per halving)
        lo_, hi = a[ok], b[ok]
        while lo_.size and np.any(hi - lo_ > 1e-12 * hi):
            mid = 0.5 * (lo_ + hi)
            neg = slopes(mid) < 0
            lo_, hi = np.where(neg, mid, lo_), np.where(neg, hi, mid)
        roots = list(0.5 * (lo_ + hi))
        # a sign change at the ODE's accuracy level (a flat stretch): minimise f there instead, but only where
        # the grid already lies within round-off of the lowest grid value; a flat stretch cannot dip below
        # its grid values by more than that, so the others cannot hold the global minimum
        near = f.min() + 1e-9 * abs(f.min())
        for i, ai, bi in zip(idx[~ok], a[~ok], b[~ok]):
            if f[max(i - 1, 0):i + 3].min() <= near:
                roots.append(minimize_scalar(value, bounds=(ai, bi), method="bounded",
                                             options={"xatol": 1e-10 * bi}).x)
        if roots:
            roots = np.asarray(roots, np.float64)
            vals = _curve_and_slope(sig, rest, noise, roots, g, widths, s0, lam, modes, iv)[0]
            cands += [(float(v), float(x)) for v, x in zip(vals, roots)]
        interior = not (df[-1] < 0)
        if not interior:
            cands.append((f[-1], t_max))
        if not cands:  # pragma: no cover - df[0] < 0 and no sign change means df[-1] < 0
            cands.append((f[-1], t_max))
        loss, t_star = min(cands)
        interior = bool(t_star < t_max)  # a lower interior local minimum beats a still-falling end
        kw = 1.0 if kappa is None else kappa
        stair_values = 0.5 * np.sum(kw * (sig - stairs) ** 2, axis=-1) + _spectrum_sensitivity(stairs, g, widths, input_var=iv)[0]
        marginal = np.diff(stair_values)
        threshold = float(perturbation_threshold(g, widths))
        return TurningPoint("perturbation", float(t_star), float(loss), bool(interior), threshold,
                            marginal, marginal < 0, t, f, **_judged(t, f, float(t_star), float(loss), depth))

    if lr is None or steps is None:
        raise ValueError("fine-tuning needs lr= (a scalar) and steps=")
    lr = _v.positive_scalar(lr, "lr")
    steps = _v.positive_int(steps, "steps")

    def curve(ts):
        pred = finetune_curve(task, finetune, ts, widths=widths, s0=s0, lr=lr, steps=steps, weight_decay=lam,
                              pretrain_lr=pretrain_lr, gd_order=gd_order)
        return pred.pretrain_loss_after[:, 0]

    t = _grid(t_max, grid or 96)
    f = curve(t)
    i = int(np.argmin(f))
    t_star, loss = float(t[i]), float(f[i])
    if 0 < i < t.size - 1:
        res = minimize_scalar(lambda x: float(curve(np.array([x]))[0]), bounds=(t[i - 1], t[i + 1]),
                              method="bounded", options={"xatol": 1e-8 * t[i + 1]})
        if res.fun < loss:
            t_star, loss = float(res.x), float(res.fun)
    interior = i < t.size - 1
    P = _aligned_maps(task, widths, stairs)
    after = predict_finetune(P, finetune, lr, steps, depth=L, pretrain_task=task,
                             gd_order=gd_order).pretrain_loss_after[:, 0]
    return TurningPoint("finetune", t_star, loss, bool(interior), float("nan"), np.diff(after), np.diff(after) < 0, t, f,
                        **_judged(t, f, t_star, loss, depth))
