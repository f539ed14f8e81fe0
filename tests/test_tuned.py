"""One tuned learning rate per checkpoint (``linoverfit.tuned``): ``result.at_lr(lr)`` on a simulated and a
predicted fine-tuning result gives one result type that ``lo.turning_point`` judges, with the turning
points F6 computed from its arrays before (issue 17, acceptance 2)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.experiments.f6_tuned_lr import best_lr, tune_to_target
from linoverfit.theory.forgetting import FinetunePrediction, predict_finetune
from linoverfit.theory.ucurve import TurningPoints, u_curve
from linoverfit.tuned import TunedFinetune, at_lr

D = 8
LRS = 10.0 ** (np.arange(-8, 2) / 4)  # 0.01 .. 1.78, 4 per decade: one step past GD's edge ~1 (as F6's grid)
STEPS, EVERY = 60, 10


@pytest.fixture(scope="module")
def sweep():
    """F6 in small: depth 2, sigma_i = 1/i, aligned init, additive shift; every checkpoint fine-tuned at
    every lr of a log grid (float64, conftest), simulated and predicted (exact GD on the balanced factors)."""
    task = lo.tasks.power_law(D, D, alpha=1.0, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, kind="additive", size=0.25, key=jax.random.key(2), scale="absolute")
    net = lo.DeepLinear((D, D, D))
    W0 = net.init(jax.random.key(1), scale=1e-3, scheme="aligned", task=task)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(4096, 14, first=16))
    with warnings.catch_warnings():  # the grid's last lr diverges by design
        warnings.simplefilter("ignore", lo.errors.DivergenceWarning)
        sim = lo.finetune(net, run, ft, lr=LRS, steps=STEPS, record_every=EVERY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lo.theory.PastEdgeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of the predicted runs past the edge
        pred = predict_finetune(run, ft, lr=LRS, steps=STEPS)
    return sim, pred


def _old_way(t, y):
    """F6 before issue 17: ``u_curve`` on the finite points of an array (the removed ``_common.turning``);
    its ``index`` counts the finite points, ``lo.turning_point``'s all of them: returned mapped."""
    ok = np.isfinite(y)
    if not ok.any():
        return None, -1
    u = u_curve(np.asarray(t, float)[ok], np.asarray(y, float)[ok], depth=0.01)
    return u, int(np.flatnonzero(ok)[u.index])


def _selections(pre, fin):
    """F6's criteria on arrays ``(C, R)``: (name, lr, value the selection computed, interpolation)."""
    out = []
    for g in (np.nanquantile(fin, 0.3), np.nanquantile(fin, 0.6)):
        lr, v = tune_to_target(LRS, fin, pre, g)
        out.append((f"target={g:.3g}", lr, v, "linear"))
    lr, v = best_lr(LRS, fin, pre)
    out.append(("best_finetune_loss", lr, v, "quadratic"))
    lr, v = best_lr(LRS, fin + pre, pre)
    out.append(("best_sum", lr, v, "quadratic"))
    return out


def _assert_same_u(new, old_and_index, label):
    old, index = old_and_index
    if old is None:  # no finite point: no curve
        assert new.index == -1 and not new.is_turning_point, label
        return
    assert new.index == index and new.is_turning_point == old.is_turning_point, label
    for f in ("t_star", "min_value", "rise", "degradation"):
        # the tuned values equal the selection's to round-off (log lr read back from lr: <= 3 ulp measured)
        np.testing.assert_allclose(getattr(new, f), getattr(old, f), rtol=1e-12, atol=1e-15, err_msg=f"{label} {f}")
    np.testing.assert_allclose(new.interval, old.interval, rtol=1e-12, err_msg=label)


@pytest.mark.parametrize("side", ["measured", "predicted"])
def test_turning_point_of_the_tuned_result_is_the_one_from_the_arrays(sweep, side):
    """Acceptance 2 for F6: each criterion's rates, read by ``at_lr`` from the simulated (``lo.finetune``,
    at a recorded budget too) and the predicted result, give through ``lo.turning_point`` the turning
    point F6 computed from its arrays with ``u_curve`` before (float64)."""
    sim, pred = sweep
    res = sim if side == "measured" else pred
    budgets = (30, STEPS) if side == "measured" else (STEPS,)  # a prediction holds its ft_steps only
    seen_u = False
    for b in budgets:
        if b == STEPS:
            pre, fin = np.asarray(res.pretrain_loss_after, float), np.asarray(res.finetune_loss_after, float)
        else:
            k = list(res.record_steps).index(b)
            pre, fin = (np.asarray(x, float)[..., k] for x in (res.pretrain_loss_trajectory, res.finetune_loss_trajectory))
        for name, lr, v, kind in _selections(pre, fin):
            tuned = res.at_lr(lr, interpolation=kind, steps=b, missing="nan")
            assert isinstance(tuned, TunedFinetune) and tuned.lr.shape == (len(res.t), 1)
            np.testing.assert_allclose(tuned.pretrain_loss_after[:, 0], v, rtol=1e-14, err_msg=name)
            tp = lo.turning_point(tuned)
            assert isinstance(tp, TurningPoints) and tp.dims == ("tuned",)
            _assert_same_u(tp.curve(0), _old_way(res.t, v), f"{side} budget {b} {name}")
            seen_u |= bool(tp.is_turning_point[0])
    if side == "measured":
        assert seen_u  # the budget criterion keeps the fixed-lr U-curve (F6): the comparison covers one


def test_measured_and_predicted_give_one_type(sweep):
    """The same rates read from the simulation and its prediction: same type, shapes, dims and coords;
    the values agree below GD's stability edge (exact GD predicted in float64: round-off; 1e-9 leaves
    room for 60 steps of it)."""
    sim, pred = sweep
    fin = np.asarray(sim.finetune_loss_after, float)
    lr, _ = tune_to_target(LRS, fin, np.asarray(sim.pretrain_loss_after, float), float(np.nanmedian(fin)))
    a, b = sim.at_lr(lr, missing="nan"), pred.at_lr(lr, missing="nan")
    assert type(a) is type(b) and a.pretrain_loss_after.shape == b.pretrain_loss_after.shape
    ta, tb = lo.turning_point(a), lo.turning_point(b)
    assert type(ta) is type(tb) and ta.dims == tb.dims and ta.coords.keys() == tb.coords.keys()
    below = lr < 0.6
    assert below.sum() >= 5
    np.testing.assert_allclose(b.pretrain_loss_after[below], a.pretrain_loss_after[below], rtol=1e-9)
    np.testing.assert_array_equal(a.t, b.t)


def test_several_curves_seeds_xarray_and_save(tmp_path):
    """``lr`` ``(C, K)`` gives ``K`` curves; a seed axis is read seed by seed at the same rate; the result
    names its axes in ``to_xarray`` (``lr`` a 2-D coordinate) and saves and loads bit for bit."""
    rng = np.random.default_rng(0)
    C, R, S = 5, 6, 3
    grid = np.geomspace(0.01, 1.0, R)
    pre = np.exp(rng.normal(size=(C, R, S)))
    pred = FinetunePrediction(t=np.arange(1.0, C + 1), lr=grid, ft_steps=7, tau=7 * grid,
                              pretrain_loss_before=np.ones((C, S)), finetune_loss_before=np.ones((C, S)),
                              pretrain_loss_after=pre, finetune_loss_after=pre[::-1].copy())
    lam = np.exp(rng.uniform(np.log(0.01), 0.0, size=(C, 2)))
    tuned = pred.at_lr(lam, interpolation="quadratic")
    assert tuned.pretrain_loss_after.shape == (C, 2, S)
    for s in range(S):
        one = FinetunePrediction(t=pred.t, lr=grid, ft_steps=7, tau=pred.tau, pretrain_loss_before=np.ones(C),
                                 finetune_loss_before=np.ones(C), pretrain_loss_after=pre[:, :, s],
                                 finetune_loss_after=pre[::-1, :, s].copy())
        np.testing.assert_array_equal(one.at_lr(lam, interpolation="quadratic").pretrain_loss_after,
                                      tuned.pretrain_loss_after[:, :, s])
    tp = lo.turning_point(tuned)
    assert tp.dims == ("tuned", "seed") and tp.t_star.shape == (2, S)
    assert lo.turning_point(tuned, seeds="mean").dims == ("tuned",)
    pytest.importorskip("xarray")
    ds = tuned.to_xarray()
    assert ds.pretrain_loss_after.dims == ("checkpoint", "tuned", "seed")
    assert ds.lr.dims == ("checkpoint", "tuned") and ds.attrs["interpolation"] == "quadratic"
    back = TunedFinetune.load(tuned.save(tmp_path / "tuned.npz"))
    np.testing.assert_array_equal(back.lr, tuned.lr)
    np.testing.assert_array_equal(back.pretrain_loss_after, tuned.pretrain_loss_after)
    assert back.ft_steps == 7 and back.interpolation == "quadratic"


# ----------------------------------------------------------------------------- the interpolation


def _pred(grid, pre, fin=None):
    C = pre.shape[0]
    return FinetunePrediction(t=np.arange(1.0, C + 1), lr=grid, ft_steps=1, tau=grid, pretrain_loss_before=np.ones(C),
                              finetune_loss_before=np.ones(C), pretrain_loss_after=pre,
                              finetune_loss_after=pre if fin is None else fin)


@settings(max_examples=40, deadline=None)
@given(st.floats(-3.0, 0.0), st.integers(4, 10), st.integers(3, 10),
       st.lists(st.floats(-2.0, 2.0), min_size=30, max_size=30), st.lists(st.floats(0.05, 0.95), min_size=3, max_size=3))
def test_at_lr_reads_what_the_selections_computed(e0, per, R, logs, q):
    """On any log grid and positive losses: a rate on the grid reads the grid value exactly; the
    quadratic rule at ``best_lr``'s vertex and the linear rule at ``tune_to_target``'s crossing give the
    values those selections computed (round-off); log-linear losses are read exactly by the linear rule."""
    grid = 10.0 ** (e0 + np.arange(R) / per)
    rng = np.random.default_rng(abs(hash(tuple(logs))) % 2**32)
    crit = np.exp(np.resize(np.asarray(logs), (3, R)) + 0.01 * rng.normal(size=(3, R)))
    value = np.exp(rng.normal(size=(3, R)))
    # no near-ties at the grid minimum (the vertex then sits on a midpoint, where "nearest" is a coin toss)
    j = np.argmin(crit, axis=1)
    for c in range(3):
        nb = crit[c, [i for i in (j[c] - 1, j[c] + 1) if 0 <= i < R]]
        assume(np.all(nb > crit[c, j[c]] * (1 + 1e-6)))
    lr, v = best_lr(grid, crit, value)
    np.testing.assert_allclose(_pred(grid, value).at_lr(lr, interpolation="quadratic").pretrain_loss_after[:, 0], v,
                               rtol=1e-12)
    fin = np.sort(crit, axis=1)[:, ::-1]  # falls with lr, so a target between its ends is crossed
    target = np.exp(np.log(fin[:, -1]) + np.asarray(q) * (np.log(fin[:, 0]) - np.log(fin[:, -1])))
    for c in range(3):
        lr_t, p = tune_to_target(grid, fin[c:c + 1], value[c:c + 1], target[c])
        got = _pred(grid, value[c:c + 1], fin[c:c + 1]).at_lr(lr_t, missing="nan")
        np.testing.assert_allclose(got.pretrain_loss_after[:, 0], p, rtol=1e-12)
    k = rng.integers(0, R, size=3)
    on = _pred(grid, value).at_lr(grid[k], interpolation="quadratic")
    np.testing.assert_array_equal(on.pretrain_loss_after[:, 0], value[np.arange(3), k])
    slope = rng.normal()
    loglin = np.exp(slope * np.log(grid))[None]
    lam = np.exp(rng.uniform(np.log(grid[0]), np.log(grid[-1])))
    np.testing.assert_allclose(_pred(grid, loglin).at_lr([lam]).pretrain_loss_after[0, 0], lam ** slope, rtol=1e-12)


def test_quadratic_is_exact_on_parabolas_and_falls_back_to_linear():
    """Log losses quadratic in log lr are read exactly by the quadratic rule; next to an unusable
    (diverged, NaN) point it falls back to the linear rule, and a value that needs one is NaN."""
    grid = 10.0 ** (np.arange(-8, 1) / 4)
    x = np.log(grid)
    pre = np.exp(0.3 * (x + 2.0) ** 2 - 1.0)[None]
    lam = np.exp(-2.0 + 0.37)
    got = _pred(grid, pre).at_lr([lam], interpolation="quadratic").pretrain_loss_after[0, 0]
    assert abs(got / np.exp(0.3 * 0.37**2 - 1.0) - 1) < 1e-12
    i = int(np.searchsorted(x, np.log(lam))) - 1
    bad = pre.copy()
    assert np.log(lam) - x[i] < x[i + 1] - np.log(lam)  # the nearest grid point is i
    bad[0, i - 1] = np.nan  # the quadratic's stencil i - 1, i, i + 1 needs i - 1; the linear rule does not
    lin = _pred(grid, bad).at_lr([lam], interpolation="quadratic").pretrain_loss_after[0, 0]
    ref = _pred(grid, pre).at_lr([lam]).pretrain_loss_after[0, 0]
    assert lin == ref and abs(lin / got - 1) > 1e-3
    bad[0, i + 1] = np.nan
    assert np.isnan(_pred(grid, bad).at_lr([lam], interpolation="quadratic").pretrain_loss_after[0, 0])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument_and_the_fix(sweep):
    sim, _ = sweep
    C = len(sim.t)
    ok = np.full(C, LRS[2])
    with pytest.raises(ValueError, match=r"lr has 1 value\(s\) outside the result's grid .*widen the grid"):
        sim.at_lr(np.r_[ok[:-1], 2.0])
    with pytest.raises(ValueError, match=r"outside"):
        sim.at_lr(np.r_[ok[:-1], LRS[0] / 2])
    with pytest.raises(ValueError, match=rf"one rate per checkpoint: shape \({C},\)"):
        sim.at_lr(ok[:-1])
    with pytest.raises(ValueError, match=r"lr is NaN at checkpoints \[3\]; pass missing='nan'"):
        sim.at_lr(np.where(np.arange(C) == 3, np.nan, ok))
    assert np.isnan(sim.at_lr(np.where(np.arange(C) == 3, np.nan, ok), missing="nan").pretrain_loss_after[3, 0])
    with pytest.raises(ValueError, match="interpolation must be one of"):
        sim.at_lr(ok, interpolation="cubic")
    with pytest.raises(ValueError, match="missing must be"):
        sim.at_lr(ok, missing="drop")
    with pytest.raises(ValueError, match=r"steps=25 is neither ft_steps=60 nor a recorded step .*record_every="):
        sim.at_lr(ok, steps=25)
    with pytest.raises(TypeError, match="steps must be an int"):
        sim.at_lr(ok, steps=30.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        at_lr(_pred(np.array([0.1, 0.01]), np.ones((1, 2))), [0.05])
    with pytest.raises(TypeError, match="fine-tuning result over a grid"):
        at_lr(object(), [0.05])
