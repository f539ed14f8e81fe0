r"""The turning point :math:`T^*` of a predicted U-curve, and the per-mode thresholds.

The curves are those of :mod:`~linoverfit.theory.curves` (balanced aligned gradient flow or GD,
``docs/theory.md`` section 3): the expected pre-training loss after Gaussian perturbation,
:math:`f(t) = \tfrac12\sum_i(\sigma_i - s_i(t))^2 + S(s(t);\gamma)`, or after fine-tuning from
:math:`P(t) = U\operatorname{diag}(s(t))V^\top`. Learning mode :math:`i` lowers the fit term by about
:math:`\sigma_i^2/2` and raises the cost of the perturbation; :func:`turning_point` returns the
minimiser of :math:`f` and, per mode, whether learning it pays; :func:`perturbation_threshold` the
smallest singular value worth learning. (The turning point of a *result*, measured or predicted, is
:func:`~linoverfit.theory.ucurve.turning_point`, ``lo.turning_point``.) The old paths
``linoverfit.theory.turning.perturbed_loss_curve`` and ``finetune_curve`` work until 0.3.0 with a
``DeprecationWarning``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from .. import deprecation as _deprecation
from .. import validation as _v
from ..results import Result, result
from ._args import _lr, _nonneg, _weight_decay, _widths
from ._mode_solvers import _mode_solution
from .curves import _aligned_maps, _curve_and_slope, _horizon, _input_variance, _learnable, _s0, _spectrum
from .curves import finetune_curve as _finetune_curve
from .forgetting import predict_finetune
from .modes import mode_asymptote, mode_trajectory
from .perturbation import _spectrum_sensitivity
from .ucurve import u_curve

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear
    from ..tasks import Task


__all__ = ["perturbation_threshold", "turning_point", "TurningPoint"]


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
      >>> round(float(lo.theory.turning.perturbation_threshold(0.1, widths=(64, 64, 64))), 10)   # 0.01 * 128
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

    Perturbation (``gamma=``): :math:`f` is :func:`~linoverfit.theory.curves.perturbed_loss_curve`; its derivative is exact,

    .. math:: f'(t) = \sum_i \big(s_i - \sigma_i + \partial S/\partial s_i\big)\,\dot s_i,

    (depth 2: :math:`\partial S/\partial s_i = \gamma^2(d_{in}+d_{out})/2`), so every local minimum is
    a sign change of :math:`f'` bracketed on a grid and bisected to 1e-12 relative (all brackets at
    once, on one dense mode solve: ``docs/theory.md`` 3.6); the smallest of them (or an end point) is
    :math:`T^*`. A Task whose input covariance shares the teacher's right singular vectors is
    supported (each mode at its own input variance, ``docs/theory.md`` 3.5); any other covariance
    raises a ValueError.

    Fine-tuning (``finetune=, lr=, steps=``): :math:`f(t)` is the pre-training loss after fine-tuning
    from :math:`P(t)` (:func:`~linoverfit.theory.curves.finetune_curve`, one flow solve for the whole grid); the grid minimum
    is refined by bounded Brent minimisation (``scipy.optimize.minimize_scalar``).

    Args:
      task: pre-training :class:`~linoverfit.Task` (identity covariance, or one sharing the teacher's
        right singular vectors), or for perturbation only its singular values (then :math:`\Sigma = I`).
      gamma: perturbation scale :math:`\gamma > 0` (scalar). Exactly one of ``gamma`` / ``finetune``.
      widths: ``(d_in, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`; s0: initial mode value;
        weight_decay: pre-training :math:`\lambda`.
      finetune: fine-tuning :class:`~linoverfit.Task`; lr: its learning rate (scalar); steps: its steps.
      pretrain_lr, gd_order: GD instead of gradient flow in pre-training (``pretrain_lr``, default
        flow) and fine-tuning (``gd_order``, default ``"auto"``: GD), as in :func:`~linoverfit.theory.curves.finetune_curve`.
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
      >>> tp = lo.theory.turning.turning_point(1 / np.arange(1, 9), gamma=0.1, widths=(8, 8, 8), s0=1e-6)
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
        pred = _finetune_curve(task, finetune, ts, widths=widths, s0=s0, lr=lr, steps=steps, weight_decay=lam,
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


# moved to linoverfit.theory.curves in 0.2.0
for _old in ("perturbed_loss_curve", "finetune_curve"):
    _deprecation.deprecate(f"{__name__}.{_old}", f"linoverfit.theory.curves.{_old}")


def __getattr__(name: str):
    return _deprecation.lookup(__name__, name)
