r"""One definition of a U-curve and its turning point, shared by simulation and theory.

A curve :math:`y_0, \dots, y_{n-1}` sampled at increasing times :math:`t_0 < \dots < t_{n-1}`
has a *turning point* when its minimum is interior and the curve rises after it by at least a
stated relative depth :math:`\delta` (default 1%):

.. math:: m = \arg\min_j y_j,\qquad
          \text{rise} = \frac{\max_{j \ge m} y_j - y_m}{|y_m|},\qquad
          \text{turning point} \iff 0 < m < n-1 \ \text{and}\ \text{rise} \ge \delta .

A curve whose interior minimum is shallower than :math:`\delta` (flat within round-off, Monte Carlo
noise or an ODE tolerance) is *not* a U-curve: its argmin is not a property of the model. The
measured curves of the figures and the predicted curves of :func:`~linoverfit.theory.turning.turning_point`
go through this one function, so "U-curve" means the same thing for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
from dataclasses import dataclass

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from ..result_types import FinetuneResult, SensitivityResult
    from ..tuned import TunedFinetune
    from .forgetting import FinetunePrediction


__all__ = ["UCurve", "u_curve", "TurningPoints", "turning_point"]


@dataclass(frozen=True)
class UCurve:
    r"""Turning point of a curve over pre-training time by the shared definition (:func:`u_curve`).

    All fields are plain Python floats, ints and bools.

    * ``t_star``: time of the minimum; when the minimum is interior, the vertex of the parabola
      through the grid minimum and its two neighbours in :math:`\log t`, restricted to ``interval``.
    * ``index``: grid index :math:`m` of the minimum (first one on ties).
    * ``min_value``: :math:`y_m`.
    * ``rise``: :math:`(\max_{j\ge m} y_j - y_m)/|y_m|`, a fraction.
    * ``degradation``: :math:`(y_{n-1} - y_m)/|y_m|`, a fraction (how much worse the last point is).
    * ``depth``: the :math:`\delta` the curve was judged with, a fraction.
    * ``is_turning_point``: :math:`0 < m < n-1` and ``rise >= depth``.
    * ``interval``: ``(t_lo, t_hi)``, the connected range of :math:`t` around the minimum where the
      curve (linear in :math:`\log t` between grid points) stays within ``depth`` of the minimum,
      :math:`y \le y_m + \delta|y_m|`; a wide interval means a flat minimum whose :math:`T^*` is
      not sharp.
    """

    t_star: float
    index: int
    min_value: float
    rise: float
    degradation: float
    depth: float
    is_turning_point: bool
    interval: tuple[float, float]

    def summary(self) -> dict:
        """JSON-ready entry for a figure summary: ``t_star``, ``is_turning_point``,
        ``degradation_percent``, ``rise_percent``, ``depth_percent`` and ``interval``."""
        return {
            "t_star": self.t_star,
            "is_turning_point": self.is_turning_point,
            "degradation_percent": 100.0 * self.degradation,
            "rise_percent": 100.0 * self.rise,
            "depth_percent": 100.0 * self.depth,
            "interval": list(self.interval),
        }


def _relative(diff: float, scale: float) -> float:
    """``diff / scale`` with ``0/0 = 0`` and ``x/0 = inf`` for ``x > 0`` (a minimum of exactly 0)."""
    if scale > 0:
        return diff / scale
    return 0.0 if diff <= 0 else math.inf


def _x(t_pair):
    """Interpolation variable for two or three times: ``log t`` when all are > 0, else ``t``."""
    return np.log(t_pair) if np.all(t_pair > 0) else t_pair, bool(np.all(t_pair > 0))


def _crossing(t_in: float, t_out: float, y_in: float, y_out: float, level: float) -> float:
    """Time between ``t_in`` (``y_in <= level``) and ``t_out`` (``y_out > level``) where the
    straight line in ``log t`` (or ``t`` when a time is 0) through the two points reaches ``level``."""
    pair = np.array([t_in, t_out])
    x, is_log = _x(pair)
    frac = (level - y_in) / (y_out - y_in)
    if frac <= 0:
        return float(t_in)
    xc = x[0] + frac * (x[1] - x[0])
    tc = float(np.exp(xc)) if is_log else float(xc)
    # exp(log(.)) round-off must not carry the crossing past either grid point
    return min(max(tc, min(t_in, t_out)), max(t_in, t_out))


def u_curve(t: ArrayLike, values: ArrayLike, *, depth: float = 0.01) -> UCurve:
    r"""Minimum, rise and turning point of a curve over pre-training time by the shared definition.

    With :math:`m = \arg\min_j y_j` (first on ties) and :math:`\delta` = ``depth``:

    * ``rise`` :math:`= (\max_{j\ge m} y_j - y_m)/|y_m|`, ``degradation`` :math:`= (y_{n-1} - y_m)/|y_m|`;
    * ``is_turning_point`` :math:`\iff 0 < m < n-1` and ``rise`` :math:`\ge \delta`;
    * ``t_star``: for an interior :math:`m`, the vertex of the parabola through
      :math:`(\log t_j, y_j)`, :math:`j = m-1, m, m+1` (in :math:`t` when :math:`t_{m-1} = 0`),
      which lies in :math:`[t_{m-1}, t_{m+1}]` because :math:`y_m` is the smallest of the three,
      then restricted to ``interval`` (the parabola is trusted only where the curve is within the
      depth of its minimum); :math:`t_m` at an end point;
    * ``interval``: the connected set of :math:`t` around :math:`t_m` where the piecewise-linear
      (in :math:`\log t`) curve satisfies :math:`y \le y_m + \delta |y_m|`.

    Assumptions: the curve is sampled finely enough that its minimum lies between the grid
    neighbours of the grid minimum (a log-spaced grid for curves over pre-training time); the
    values are on a ratio scale (losses), so a relative depth is meaningful. A minimum of exactly
    0 makes every positive rise infinite.

    Args:
      t: times, shape ``(n,)``, finite, ``>= 0``, strictly increasing, ``n >= 1``.
      values: the curve at ``t``, shape ``(n,)``, finite (drop diverged points first).
      depth: :math:`\delta \ge 0`, the smallest relative rise after the minimum that counts as a
        turning point (0.01: 1%).

    Returns a :class:`UCurve`.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> t = np.geomspace(1, 100, 21)
      >>> u = lo.theory.u_curve(t, (np.log(t) - np.log(10)) ** 2 + 1)   # minimum 1 at t = 10
      >>> u.is_turning_point, round(u.t_star, 6), round(u.rise, 3)
      (True, 10.0, 5.302)
      >>> lo.theory.u_curve(t, 1 + 1e-4 * (np.log(t) - np.log(10)) ** 2).is_turning_point   # 0.05% deep
      False
    """
    t_arr = np.asarray(t)
    y_arr = np.asarray(values)
    for name, arr in (("t", t_arr), ("values", y_arr)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one entry per pre-training time), got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    t_arr = t_arr.astype(np.float64)
    y_arr = y_arr.astype(np.float64)
    if t_arr.size != y_arr.size:
        raise ValueError(f"t and values must have the same length, got {t_arr.size} and {y_arr.size}")
    if t_arr.size == 0:
        raise ValueError("t and values must not be empty")
    if not np.all(np.isfinite(t_arr)) or np.any(t_arr < 0):
        raise ValueError("t must be finite and >= 0")
    if np.any(np.diff(t_arr) <= 0):
        raise ValueError("t must be strictly increasing (sort the curve by time)")
    if not np.all(np.isfinite(y_arr)):
        raise ValueError("values contains NaN or inf; drop diverged points first, e.g. "
                         "keep = np.isfinite(values); u_curve(t[keep], values[keep])")
    if isinstance(depth, bool) or not isinstance(depth, (int, float, np.integer, np.floating)):
        raise TypeError(f"depth must be a real number (a fraction, 0.01 = 1%), got {depth!r}")
    depth = float(depth)
    if not math.isfinite(depth) or depth < 0:
        raise ValueError(f"depth must be a finite fraction >= 0 (0.01 = 1%), got {depth}")

    n = t_arr.size
    m = int(np.argmin(y_arr))
    y_min = float(y_arr[m])
    scale = abs(y_min)
    rise = _relative(float(np.max(y_arr[m:])) - y_min, scale)
    degradation = _relative(float(y_arr[-1]) - y_min, scale)
    interior = 0 < m < n - 1

    # interval: walk out from m while the curve stays within the depth, then interpolate the crossing
    level = y_min + depth * scale
    lo = m
    while lo > 0 and y_arr[lo - 1] <= level:
        lo -= 1
    hi = m
    while hi < n - 1 and y_arr[hi + 1] <= level:
        hi += 1
    t_lo = float(t_arr[lo]) if lo == 0 else _crossing(t_arr[lo], t_arr[lo - 1], y_arr[lo], y_arr[lo - 1], level)
    t_hi = float(t_arr[hi]) if hi == n - 1 else _crossing(t_arr[hi], t_arr[hi + 1], y_arr[hi], y_arr[hi + 1], level)

    t_star = float(t_arr[m])
    if interior:
        x, is_log = _x(t_arr[m - 1 : m + 2])
        y3 = y_arr[m - 1 : m + 2]
        # vertex of the parabola through three points (divided differences; no polyfit conditioning)
        d1 = (y3[1] - y3[0]) / (x[1] - x[0])
        d2 = (y3[2] - y3[1]) / (x[2] - x[1])
        curv = (d2 - d1) / (x[2] - x[0])
        if curv > 0:
            xv = 0.5 * (x[0] + x[1]) - d1 / (2.0 * curv)
            xv = min(max(xv, x[0]), x[2])
            t_star = float(np.exp(xv)) if is_log else float(xv)
        t_star = min(max(t_star, t_lo), t_hi)
    return UCurve(
        t_star=float(t_star),
        index=m,
        min_value=y_min,
        rise=float(rise),
        degradation=float(degradation),
        depth=depth,
        is_turning_point=bool(interior and rise >= depth),
        interval=(float(t_lo), float(t_hi)),
    )


@dataclass(frozen=True)
class TurningPoints:
    r"""Turning points of every U-curve of one result (:func:`turning_point`), measured or predicted alike.

    The curves run over the checkpoint axis; one per entry of ``dims`` (``("lr",)`` or
    ``("lr", "seed")`` for a fine-tuning result, ``("gamma",)`` or ``("gamma", "seed")`` for a
    sensitivity result, ``("tuned",)`` for a result at one tuned rate per checkpoint). Every array
    field has the shape of ``dims``; entries are the fields of
    :class:`UCurve` (``interval`` split into ``interval_lo`` / ``interval_hi``). A curve with no
    finite point (every run diverged) has ``t_star`` NaN, ``index`` -1 and no turning point.

    * ``quantity``: the result field the curves were read from; ``dims``; ``coords``:
      ``{dim: values}`` (the learning rates or noise scales; seeds ``0..S-1``); ``t`` ``(C,)`` the
      checkpoint times; ``depth``: the ``min_rise`` the curves were judged with.
    """

    quantity: str
    dims: tuple
    coords: dict
    t: np.ndarray
    t_star: np.ndarray
    index: np.ndarray
    min_value: np.ndarray
    rise: np.ndarray
    degradation: np.ndarray
    is_turning_point: np.ndarray
    interval_lo: np.ndarray
    interval_hi: np.ndarray
    depth: float

    def curve(self, *index: int) -> UCurve:
        """The :class:`UCurve` of one entry, e.g. ``tp.curve(r)`` or ``tp.curve(r, seed)``."""
        i = tuple(index)
        return UCurve(t_star=float(self.t_star[i]), index=int(self.index[i]), min_value=float(self.min_value[i]),
                      rise=float(self.rise[i]), degradation=float(self.degradation[i]), depth=self.depth,
                      is_turning_point=bool(self.is_turning_point[i]),
                      interval=(float(self.interval_lo[i]), float(self.interval_hi[i])))


#: the U-curve read by default: fine-tuning results, the pre-training loss after fine-tuning (the
#: forgetting U-curve); sensitivity results, the perturbed loss (catastrophic overtraining under noise)
DEFAULT_QUANTITY = {"lr": "pretrain_loss_after", "gamma": "perturbed_loss"}


def turning_point(result: FinetuneResult | SensitivityResult | FinetunePrediction | TunedFinetune, *, min_rise: float = 0.01,
                  quantity: str | None = None, seeds: str = "each") -> TurningPoints:
    r"""Turning point of each U-curve over pre-training time in a result, measured or predicted alike.

    One definition (:func:`u_curve`) for simulated and predicted results: a fine-tuning result
    (``lo.finetune``, ``lo.theory.finetune``, ``FinetunePrediction``) gives one curve per learning
    rate (and seed), by default its ``pretrain_loss_after`` ``(C, R[, S])``; a result tuned to one
    rate per checkpoint (``result.at_lr(lr)``, a :class:`~linoverfit.tuned.TunedFinetune` whose ``lr``
    is ``(C, K)``) one curve per tuned curve, over the dimension ``"tuned"``; a sensitivity result
    (``lo.sensitivity.gaussian``, ``lo.theory.gaussian``) one per noise scale (and seed), by default
    its ``perturbed_loss`` ``(C, G[, S])``. Non-finite points (diverged runs) are dropped from their
    curve first. The result is recognised by its fields (``lr`` / ``gamma`` and the quantity), so
    this module imports no result class.

    Args:
      result: a fine-tuning or sensitivity result with checkpoint times ``result.t`` ``(C,)``.
      min_rise: :math:`\delta \ge 0`, the relative rise after the minimum that makes a turning
        point (``u_curve``'s ``depth``; 0.01 = 1%).
      quantity: another field with the same axes, e.g. ``"finetune_loss_after"`` or ``"sensitivity"``.
      seeds: ``"each"``, one curve per seed; ``"mean"``, one curve per learning rate or noise scale,
        the mean over seeds :math:`\bar y_c = \frac1S\sum_s y_{c,s}` (a seed whose run diverged at
        checkpoint :math:`c` makes :math:`\bar y_c` non-finite, and the point is dropped). A result
        without a seed axis has one curve either way.

    Returns a :class:`TurningPoints` with arrays over ``("lr"[, "seed"])``, ``("tuned"[, "seed"])`` or
    ``("gamma"[, "seed"])`` (no ``"seed"`` with ``seeds="mean"``).
    """
    if isinstance(min_rise, bool) or not isinstance(min_rise, (int, float, np.integer, np.floating)) \
            or not math.isfinite(min_rise) or min_rise < 0:
        raise ValueError(f"min_rise must be a finite fraction >= 0 (0.01 = 1%), got {min_rise!r}")
    if seeds not in ("each", "mean"):
        raise ValueError(f'seeds must be "each" (one curve per seed) or "mean" (the seed-mean curve), got {seeds!r}')
    axis = "lr" if hasattr(result, "pretrain_loss_after") else "gamma" if hasattr(result, "perturbed_loss") else None
    if axis is None:
        raise TypeError("result must be a fine-tuning result (lo.finetune / lo.theory.finetune) or a sensitivity "
                        f"result (lo.sensitivity.gaussian / lo.theory.gaussian), got {type(result).__name__}")
    quantity = DEFAULT_QUANTITY[axis] if quantity is None else quantity
    values = getattr(result, quantity, None)
    if values is None:
        raise ValueError(f"quantity={quantity!r} is not a field of this {type(result).__name__}")
    values = np.asarray(values, np.float64)
    if getattr(result, "t", None) is None:
        raise ValueError("result has no checkpoint times (result.t is None): predict from a PretrainResult, "
                         "whose times it carries")
    t = np.asarray(result.t, np.float64)
    axis_values = np.asarray(getattr(result, axis))
    if axis == "lr" and axis_values.ndim == 2:  # one tuned rate per checkpoint (TunedFinetune): curves over "tuned"
        if axis_values.shape[0] != t.size:
            raise ValueError(f"lr has shape {axis_values.shape}; a tuned result needs ({t.size}, curves)")
        axis, axis_values = "tuned", np.arange(axis_values.shape[1])
    if values.ndim not in (2, 3) or values.shape[:2] != (t.size, axis_values.size):
        raise ValueError(f"quantity={quantity!r} has shape {values.shape}; a U-curve needs (checkpoint, {axis}[, seed]) "
                         f"= ({t.size}, {axis_values.size}[, S])")
    if seeds == "mean" and values.ndim == 3:
        values = values.mean(axis=2)
    curves = np.moveaxis(values, 0, -1)  # (R[, S], C)
    dims = (axis,) if curves.ndim == 2 else (axis, "seed")
    coords = {axis: axis_values} if curves.ndim == 2 else {axis: axis_values, "seed": np.arange(curves.shape[1])}
    out = {k: np.full(curves.shape[:-1], np.nan) for k in ("t_star", "min_value", "rise", "degradation",
                                                              "interval_lo", "interval_hi")}
    index = np.full(curves.shape[:-1], -1)
    turning = np.zeros(curves.shape[:-1], bool)
    for i in np.ndindex(*curves.shape[:-1]):
        keep = np.isfinite(curves[i])
        if not keep.any():
            continue
        u = u_curve(t[keep], curves[i][keep], depth=min_rise)
        for k in ("t_star", "min_value", "rise", "degradation"):
            out[k][i] = getattr(u, k)
        out["interval_lo"][i], out["interval_hi"][i] = u.interval
        index[i] = np.flatnonzero(keep)[u.index]
        turning[i] = u.is_turning_point
    return TurningPoints(quantity=quantity, dims=dims, coords=coords, t=t, index=index, is_turning_point=turning,
                         depth=float(min_rise), **out)
