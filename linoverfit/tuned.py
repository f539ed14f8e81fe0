r"""One learning rate per checkpoint: a fine-tuning result read at a tuned rate, simulated or predicted alike.

A fine-tuning sweep (:func:`linoverfit.finetune`, :func:`linoverfit.theory.finetune`,
:class:`~linoverfit.theory.forgetting.FinetunePrediction`) fine-tunes every checkpoint :math:`c` at every
rate of a grid :math:`\eta_1 < \dots < \eta_R`. A tuning rule picks one rate :math:`\lambda_c` per
checkpoint (the rate reaching a target with the least forgetting, the best rate after a budget, ...);
:func:`at_lr` reads the result there and returns a :class:`TunedFinetune`, whose curves over
pre-training time :func:`linoverfit.turning_point` judges like any other result. The rule picks the
rate, :func:`at_lr` evaluates the result at it: one concept each, so the same rule applied to the
simulation and to its prediction gives two results of one type.

Between grid points the losses are interpolated in :math:`(\log\eta, \log y)`, with
:math:`x_r = \log\eta_r`, :math:`\xi = \log\lambda_c`:

.. math:: \text{linear:}\quad \log y(\lambda_c) = \log y_{c,i} + w\,(\log y_{c,i+1} - \log y_{c,i}),
          \qquad w = \frac{\xi - x_i}{x_{i+1} - x_i},\quad \eta_i < \lambda_c < \eta_{i+1};

.. math:: \text{quadratic:}\quad \log y(\lambda_c) = q(\xi),\qquad q \text{ the parabola through }
          (x_j, \log y_{c,j}),\ j = m-1, m, m+1,

:math:`m` the grid point nearest :math:`\xi` (the lower one on a tie). A rate on the grid reads the
grid value itself. The linear rule is the one a crossing of a target interpolated in
:math:`(\log\eta, \log y)` implies; the quadratic one is exact to third order at a parabolic vertex in
:math:`\log\eta` (on a grid equally spaced in :math:`\log\eta` the vertex through the grid minimum and its
neighbours lies within half a grid step of that minimum, so :math:`m` is it and the parabola is the one
that placed the vertex).
Reading a coarse grid at its nearest point instead jumps by a whole grid step and fakes a few percent
of degradation (figure F6, ``docs/theory.md`` 4.4).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .results import Result, expect_shape, result, static

__all__ = ["TunedFinetune", "at_lr"]

INTERPOLATIONS = ("linear", "quadratic")


@result
class TunedFinetune(Result):
    r"""Fine-tuning at one tuned learning rate per checkpoint (:func:`at_lr`), simulated or predicted alike.

    Shapes (``C`` checkpoints, ``K`` tuned curves, e.g. one per tuning rule, optional ``S`` seeds):

    * ``t`` ``(C,)`` pre-training time of the checkpoints; ``steps`` ``(C,)`` their step counts (``None``
      for a prediction made from times only).
    * ``lr`` ``(C, K)``: the rate :math:`\lambda_{c,k}` curve ``k`` fine-tuned checkpoint ``c`` at
      (NaN where the rule chose none; its losses are NaN too).
    * ``pretrain_loss_before`` / ``finetune_loss_before`` ``(C[, S])`` at the checkpoint.
    * ``pretrain_loss_after`` / ``finetune_loss_after`` ``(C, K[, S])``: the result's losses after
      ``ft_steps`` steps at :math:`\lambda_{c,k}` (interpolated in :math:`(\log\eta, \log y)` by
      ``interpolation``, see :mod:`linoverfit.tuned`); NaN where the run diverged. ``ft_steps`` and
      ``interpolation`` are ``None`` for a result built by hand, e.g. from a rule that stops each
      checkpoint at its own step (F6's matched fine-tuning loss).

    :func:`linoverfit.turning_point` gives one U-curve per tuned curve, over the dimension ``"tuned"``.
    ``to_xarray`` names the axes ``checkpoint``, ``tuned``, ``seed``; ``lr`` is a 2-D coordinate.
    """

    t: np.ndarray
    lr: np.ndarray
    pretrain_loss_before: Any
    finetune_loss_before: Any
    pretrain_loss_after: Any
    finetune_loss_after: Any = None
    steps: np.ndarray | None = None
    ft_steps: int | None = static(None)
    interpolation: str | None = static(None)

    _dims = {
        **{k: ("checkpoint", "seed") for k in ("pretrain_loss_before", "finetune_loss_before")},
        **{k: ("checkpoint", "tuned", "seed") for k in ("pretrain_loss_after", "finetune_loss_after")},
    }

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t), "lr": (("checkpoint", "tuned"), self.lr)}

    def _seeds(self) -> int | None:
        return self.pretrain_loss_before.shape[1] if np.ndim(self.pretrain_loss_before) == 2 else None

    @property
    def forgetting(self) -> np.ndarray:
        """Pre-training loss after fine-tuning at the tuned rate minus before, ``(C, K[, S])``."""
        return np.asarray(self.pretrain_loss_after) - np.expand_dims(np.asarray(self.pretrain_loss_before), 1)

    def _check_consistent(self):
        C = np.size(self.t)
        expect_shape("t", self.t, (C,))
        if np.ndim(self.lr) != 2 or np.shape(self.lr)[0] != C:
            raise ValueError(f"lr has shape {np.shape(self.lr)}, expected ({C}, curves): one rate per checkpoint and curve")
        lead = np.shape(self.pretrain_loss_before)
        if len(lead) not in (1, 2) or lead[0] != C:
            raise ValueError(f"pretrain_loss_before has shape {lead}, expected ({C},) or ({C}, seeds)")
        expect_shape("finetune_loss_before", self.finetune_loss_before, lead)
        after = np.shape(self.lr) + lead[1:]
        expect_shape("pretrain_loss_after", self.pretrain_loss_after, after)
        if self.finetune_loss_after is not None:
            expect_shape("finetune_loss_after", self.finetune_loss_after, after)
        if self.steps is not None:
            expect_shape("steps", self.steps, (C,))


def _grid(result) -> np.ndarray:
    lrs = np.asarray(getattr(result, "lr", None), np.float64)
    if lrs.ndim != 1 or lrs.size == 0:
        raise TypeError(f"result must be a fine-tuning result over a grid of learning rates (lo.finetune, "
                        f"lo.theory.finetune, FinetunePrediction), got {type(result).__name__} with lr {lrs.shape}")
    if not (np.all(np.isfinite(lrs)) and np.all(lrs > 0) and np.all(np.diff(lrs) > 0)):
        raise ValueError(f"at_lr needs the result's learning rates finite, > 0 and strictly increasing (a grid), got "
                         f"{lrs.tolist()}: fine-tune over np.sort(np.unique(lrs))")
    return lrs


def _losses(result, steps):
    """The result's (pre-training, fine-tuning) losses ``(C, R[, S])`` after ``steps`` and that step count."""
    ft_steps = int(result.ft_steps)
    if steps is None or (not isinstance(steps, bool) and isinstance(steps, (int, np.integer)) and steps == ft_steps):
        return result.pretrain_loss_after, result.finetune_loss_after, ft_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int (a recorded fine-tuning step), got {steps!r}")
    record = getattr(result, "record_steps", None)
    hit = np.flatnonzero(np.asarray(record) == steps) if record is not None else np.zeros(0, int)
    if hit.size != 1:
        have = [] if record is None else np.asarray(record).tolist()
        raise ValueError(f"steps={steps} is neither ft_steps={ft_steps} nor a recorded step {have}: fine-tune with "
                         f"lo.finetune(..., record_every=) dividing {steps}, or predict with steps={steps}")
    k = int(hit[0])
    return result.pretrain_loss_trajectory[..., k], result.finetune_loss_trajectory[..., k], int(steps)


def _checked_lr(lr, lrs: np.ndarray, C: int, missing: str) -> np.ndarray:
    """``lr`` as a float64 ``(C, K)`` array inside the grid, or a ValueError naming the fix."""
    try:
        lam = np.asarray(lr, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"lr must be an array of learning rates, shape ({C},) or ({C}, curves), got {lr!r}") from None
    if lam.ndim == 1:
        lam = lam[:, None]
    if lam.ndim != 2 or lam.shape[0] != C:
        raise ValueError(f"lr must hold one rate per checkpoint: shape ({C},) or ({C}, curves), got {np.shape(lr)}; "
                         "pass one entry per checkpoint of the result (its t)")
    nan = np.isnan(lam)
    if nan.any() and missing == "raise":
        where = np.unique(np.argwhere(nan)[:, 0]).tolist()
        raise ValueError(f"lr is NaN at checkpoints {where}; pass missing='nan' if the rule chose no rate there "
                         "(their losses are then NaN and lo.turning_point drops them)")
    bad = ~nan & ~((lam >= lrs[0]) & (lam <= lrs[-1]))
    if bad.any():
        raise ValueError(f"lr has {int(bad.sum())} value(s) outside the result's grid [{lrs[0]:g}, {lrs[-1]:g}] "
                         f"(e.g. {lam[bad][0]!r}): at_lr interpolates, it does not extrapolate; widen the grid of "
                         "lo.finetune(lr=...) or clip the rates to it")
    return lam


def _at(x: np.ndarray, lrs: np.ndarray, v: np.ndarray, ok: np.ndarray, lam: float, quadratic: bool) -> float:
    """One value at rate ``lam`` from values ``v`` ``(R,)`` on the grid ``lrs`` (``x = log lrs``), usable where ``ok``."""
    if math.isnan(lam):
        return math.nan
    hit = np.flatnonzero(lrs == lam)
    if hit.size:  # on the grid: the grid value itself
        return float(v[hit[0]]) if ok[hit[0]] else math.nan
    xi = np.log(lam)
    i = int(np.searchsorted(x, xi)) - 1  # x[i] < xi < x[i + 1]
    if quadratic:
        m = i if xi - x[i] <= x[i + 1] - xi else i + 1
        if 0 < m < len(x) - 1 and ok[m - 1 : m + 2].all():
            s = slice(m - 1, m + 2)
            return float(np.exp(np.polyval(np.polyfit(x[s], np.log(v[s]), 2), xi)))
    if not (ok[i] and ok[i + 1]):
        return math.nan
    w = (xi - x[i]) / (x[i + 1] - x[i])
    return float(np.exp(np.log(v[i]) + w * (np.log(v[i + 1]) - np.log(v[i]))))


def at_lr(result, lr, *, interpolation: str = "linear", steps: int | None = None,
          missing: str = "raise") -> TunedFinetune:
    r"""The result read at one learning rate per checkpoint, :math:`y_c(\lambda_c)`, as a :class:`TunedFinetune`.

    ``result`` fine-tuned every checkpoint :math:`c` at every rate of its grid ``result.lr``
    :math:`\eta_1 < \dots < \eta_R`; ``lr`` gives the rate :math:`\lambda_c` to read each checkpoint at
    (one column per tuned curve). Both losses after fine-tuning are read there: the grid value when
    :math:`\lambda_c` is a grid rate, else interpolated in :math:`(\log\eta, \log y)` (module docstring):

    * ``"linear"``: :math:`\log y = \log y_i + w(\log y_{i+1} - \log y_i)`,
      :math:`w = (\log\lambda_c - \log\eta_i)/(\log\eta_{i+1} - \log\eta_i)` between the grid rates around it;
    * ``"quadratic"``: the parabola through :math:`(\log\eta_j, \log y_{c,j})`, :math:`j = m-1, m, m+1`,
      :math:`m` the nearest grid rate (the lower one on a tie); linear where :math:`m` is an end of
      the grid or a neighbour is unusable.

    A grid point is usable where both its losses are finite and > 0 (a diverged run's are NaN); a value
    that needs an unusable point is NaN. The result is not changed (a new result is returned); the
    checkpoint axis (``t``, ``steps``) and the losses before are the result's.

    Args:
      result: a :class:`~linoverfit.FinetuneResult` (``lo.finetune``, ``lo.theory.finetune``) or a
        :class:`~linoverfit.theory.forgetting.FinetunePrediction`, losses ``(C, R[, S])`` over a grid
        ``lr`` ``(R,)`` that is finite, > 0 and strictly increasing.
      lr: the tuned rates, shape ``(C,)`` (one curve) or ``(C, K)`` (``K`` curves), each inside
        ``[lr[0], lr[-1]]`` (no extrapolation); the same rate for every seed.
      interpolation: ``"linear"`` (default; what a target crossing interpolated in :math:`(\log\eta,\log y)`
        implies) or ``"quadratic"`` (for a rate at a parabolic vertex in :math:`\log\eta`).
      steps: read the losses after this many fine-tuning steps: ``None`` (default) or ``ft_steps``,
        the losses after; another step must be one of ``result.record_steps`` (``lo.finetune(record_every=)``),
        the same runs stopped there.
      missing: ``"raise"`` (default): a NaN rate is a ValueError; ``"nan"``: a NaN rate means the rule
        chose none at that checkpoint, and its losses are NaN (``lo.turning_point`` drops them).

    Returns a :class:`TunedFinetune` with ``lr`` ``(C, K)`` and losses after ``(C, K[, S])``.

    Raises ValueError for a rate outside the grid, a NaN rate (unless ``missing="nan"``), ``lr`` of the
    wrong length, an unknown ``interpolation`` or ``missing``, or a ``steps`` that was not recorded.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> from linoverfit.theory.forgetting import FinetunePrediction
      >>> grid = np.array([0.01, 0.1, 1.0])
      >>> pre = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]])  # (C, R): log-linear in log lr
      >>> pred = FinetunePrediction(t=np.array([1.0, 2.0]), lr=grid, ft_steps=10, tau=10 * grid,
      ...     pretrain_loss_before=np.ones(2), finetune_loss_before=np.ones(2), pretrain_loss_after=pre,
      ...     finetune_loss_after=pre)
      >>> tuned = lo.tuned.at_lr(pred, [np.sqrt(0.1), 0.01])  # half a decade above 0.1; on the grid
      >>> np.round(tuned.pretrain_loss_after[:, 0], 6), tuned.lr.shape
      (array([2.828427, 1.      ]), (2, 1))
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if missing not in ("raise", "nan"):
        raise ValueError(f"missing must be 'raise' (a NaN rate is an error) or 'nan' (no rate chosen: NaN losses), "
                         f"got {missing!r}")
    lrs = _grid(result)
    pre, fin, ft_steps = _losses(result, steps)
    pre, fin = np.asarray(pre, np.float64), np.asarray(fin, np.float64)
    C = pre.shape[0]
    if pre.ndim not in (2, 3) or pre.shape[1] != lrs.size or fin.shape != pre.shape:
        raise ValueError(f"the result's losses have shape {pre.shape}, expected ({C}, {lrs.size}[, seeds])")
    lam = _checked_lr(lr, lrs, C, missing)
    seeds = pre.shape[2:]
    pre3, fin3 = pre.reshape(C, lrs.size, -1), fin.reshape(C, lrs.size, -1)
    ok = np.isfinite(pre3) & np.isfinite(fin3) & (pre3 > 0) & (fin3 > 0)
    x = np.log(lrs)
    quad = interpolation == "quadratic"
    out_pre = np.full(lam.shape + (pre3.shape[2],), np.nan)
    out_fin = np.full_like(out_pre, np.nan)
    for c, k, s in np.ndindex(*out_pre.shape):
        out_pre[c, k, s] = _at(x, lrs, pre3[c, :, s], ok[c, :, s], lam[c, k], quad)
        out_fin[c, k, s] = _at(x, lrs, fin3[c, :, s], ok[c, :, s], lam[c, k], quad)
    t = getattr(result, "t", None)
    steps_c = getattr(result, "steps", None)
    return TunedFinetune(
        t=None if t is None else np.asarray(t, np.float64), lr=lam,
        pretrain_loss_before=np.asarray(result.pretrain_loss_before, np.float64),
        finetune_loss_before=np.asarray(result.finetune_loss_before, np.float64),
        pretrain_loss_after=out_pre.reshape(lam.shape + seeds), finetune_loss_after=out_fin.reshape(lam.shape + seeds),
        steps=None if steps_c is None else np.asarray(steps_c), ft_steps=ft_steps, interpolation=interpolation)
