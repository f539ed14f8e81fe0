"""lo.theory.u_curve: the shared definition of a U-curve (interior minimum + rise >= depth)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linoverfit.theory import u_curve

T = np.geomspace(1.0, 1e4, 41)


def _bowl(t, t0, depth_frac):
    """A smooth U in log t with minimum 1 at t0, rising by ``depth_frac`` from t0 to the end of T."""
    x = np.log(t / t0)
    return 1.0 + depth_frac * x**2 / np.log(t[-1] / t0) ** 2


curves = st.integers(3, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(1e-3, 10.0), min_size=n, max_size=n),          # positive gaps -> increasing t
        st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n),           # positive losses
        st.floats(0.0, 0.5),
    )
)


@settings(max_examples=200, deadline=None)
@given(curves)
def test_random_curves_obey_the_definition(case):
    gaps, values, depth = case
    t = np.cumsum(gaps)
    y = np.asarray(values)
    u = u_curve(t, y, depth=depth)
    m = u.index
    assert y[m] == y.min() and m == int(np.argmin(y)) and u.min_value == y.min()
    assert math.isclose(u.rise, (y[m:].max() - y[m]) / y[m], rel_tol=1e-12)
    assert math.isclose(u.degradation, (y[-1] - y[m]) / y[m], rel_tol=1e-12)
    assert u.is_turning_point == (0 < m < t.size - 1 and u.rise >= depth)
    assert u.depth == depth
    lo, hi = u.interval
    # the interval contains the minimum and t_star, and the t_star refinement stays between the grid
    # neighbours of the grid minimum
    assert lo <= t[m] <= hi
    assert lo <= u.t_star <= hi
    assert t[max(m - 1, 0)] <= u.t_star <= t[min(m + 1, t.size - 1)]
    # the interval is connected within the depth: every grid point inside it is within the depth
    level = y[m] * (1 + depth)
    inside = (t >= lo) & (t <= hi)
    assert np.all(y[inside] <= level * (1 + 1e-12))
    # and it stops at the first grid points outside the depth (or at the ends of the grid)
    if lo > t[0]:
        assert y[np.flatnonzero(t < lo)[-1]] > level
    if hi < t[-1]:
        assert y[np.flatnonzero(t > hi)[0]] > level
    # plain Python types: summaries are JSON-ready
    assert type(u.t_star) is float and type(u.index) is int and type(u.is_turning_point) is bool
    assert all(type(x) is float for x in (u.min_value, u.rise, u.degradation, u.depth, *u.interval))


@pytest.mark.parametrize("t0", [3.0, 100.0, 2.5e3])
def test_clear_u_is_a_turning_point_with_refined_t_star(t0):
    y = _bowl(T, t0, 0.3)
    u = u_curve(T, y)
    assert u.is_turning_point and 0 < u.index < T.size - 1
    # a parabola in log t is refined exactly (up to round-off of log/exp), between grid points too
    assert u.t_star == pytest.approx(t0, rel=1e-10)
    # the grid minimum lies within half a grid step of t0, i.e. above 1 by < a (step/2)^2 ~ 4e-4
    assert u.rise == pytest.approx(0.3, rel=1e-3) and u.min_value == y.min()
    lo, hi = u.interval
    # the 1%-level of 1 + a x^2 is |x| = sqrt(0.01 / a); linear interpolation between grid points
    # overestimates it by at most one grid step in log t (0.23)
    a = 0.3 / np.log(T[-1] / t0) ** 2
    half = np.sqrt(0.01 / a)
    step = np.log(T[1] / T[0])
    want_lo, want_hi = max(T[0], t0 * np.exp(-half)), min(T[-1], t0 * np.exp(half))   # clipped to the grid
    assert abs(np.log(hi / want_hi)) < step and abs(np.log(lo / want_lo)) < step


@pytest.mark.parametrize("curve", [
    np.ones_like(T),                                  # flat
    _bowl(T, 100.0, 1e-4),                            # 0.01% deep
    _bowl(T, 100.0, 0.0099),                          # just under the default 1%
])
def test_flat_and_shallow_curves_are_not_turning_points(curve):
    u = u_curve(T, curve)
    assert not u.is_turning_point
    assert u.rise < 0.01 and u.depth == 0.01
    # the whole curve lies within the depth: the interval is the whole grid, T* is not sharp
    assert u.interval == (T[0], T[-1])


def test_depth_is_the_only_switch():
    y = _bowl(T, 100.0, 1e-4)
    assert u_curve(T, y, depth=0.999e-4).is_turning_point
    assert not u_curve(T, y, depth=1.001e-4).is_turning_point


def test_monotone_curves():
    down = u_curve(T, 1 + 1 / T)
    assert down.index == T.size - 1 and down.t_star == T[-1] and not down.is_turning_point
    assert down.rise == 0 and down.degradation == 0
    up = u_curve(T, 1 + T)
    assert up.index == 0 and up.t_star == T[0] and not up.is_turning_point
    assert up.rise == pytest.approx((T[-1] - T[0]) / 2) and up.degradation == up.rise


def test_time_zero_refines_in_t():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([3.0, 1.0, 3.0, 5.0])
    u = u_curve(t, y)
    assert u.is_turning_point and u.t_star == pytest.approx(1.0)


def test_zero_minimum():
    u = u_curve([1.0, 2.0, 3.0], [1.0, 0.0, 1.0])
    assert u.is_turning_point and u.rise == math.inf
    assert not u_curve([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).is_turning_point


@pytest.mark.parametrize("t, y, kw, err, match", [
    ([1, 2], [1.0], {}, ValueError, "same length"),
    ([[1, 2]], [[1, 2]], {}, ValueError, "1-D"),
    ([], [], {}, ValueError, "empty"),
    ([2, 1], [1, 2], {}, ValueError, "increasing"),
    ([1, 1], [1, 2], {}, ValueError, "increasing"),
    ([-1, 1], [1, 2], {}, ValueError, ">= 0"),
    ([1, 2], [1, np.nan], {}, ValueError, "diverged"),
    ([1, 2], [1, 2], {"depth": -0.1}, ValueError, "depth"),
    ([1, 2], [1, 2], {"depth": "1%"}, TypeError, "depth"),
    ([1, 2], ["a", "b"], {}, TypeError, "values"),
])
def test_bad_input(t, y, kw, err, match):
    with pytest.raises(err, match=match):
        u_curve(t, y, **kw)
