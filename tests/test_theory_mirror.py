"""The theory mirror (linoverfit.theory.mirror) against the simulation, through the same calls.

Every case runs ``lo.pretrain`` / ``lo.finetune`` / ``lo.sensitivity.gaussian`` and the mirror's
``pretrain`` / ``finetune`` / ``gaussian`` with the same arguments and checks that the results have
the same type, fields, shapes, dtypes, axes and xarray coordinates, and values within a tolerance
stated where it is used. float64 throughout (conftest enables x64).
"""

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.theory.ucurve import TurningPoints, turning_point

D = 4  # widths: small, so every compiled sweep is cheap
CHECKPOINTS = [3, 10, 30, 100]
LR = 0.1  # below the stability edge 2 / (L sigma_1^(2 - 2/L)) = 2/3 at depth 3 (sigma_1 = 1)
FT_LRS = (0.05, 0.1)  # below the fine-tuning edges of these shifts (checked: result.past_edge is all False)
SHIFTS = {"rotate": dict(size=0.3), "additive": dict(size=0.3), "subspace": dict(size=0.3, rank=2),
          "spectrum": dict(size=0.3)}
#: exact GD maps in float64: the mirror iterates the simulation's map (or its exact per-mode
#: reduction) for at most 100 + 20 steps of O(1) values, so the gap is accumulated round-off,
#: ~1e-15 measured; 1e-10 leaves five orders of margin and still catches any O(lr) or modelling error
EXACT = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def task():
    return lo.tasks.power_law(D, D, alpha=1.0, key=jax.random.key(0))


def _same_layout(sim, th, extra=()):
    """Same class, same fields, each of the same shape and dtype, and the same xarray dims and
    coordinates; ``extra``: data variables only the prediction has (exactness flags)."""
    assert type(sim) is type(th)
    for f in dataclasses.fields(sim):
        a, b = getattr(sim, f.name), getattr(th, f.name)
        if f.name in ("prediction", "exact") or (a is None and f.name in extra):
            continue
        assert (a is None) == (b is None), f.name
        if isinstance(a, tuple):
            assert [np.shape(x) for x in a] == [np.shape(x) for x in b], f.name
            assert [np.asarray(x).dtype for x in a] == [np.asarray(x).dtype for x in b], f.name
        elif hasattr(a, "shape"):
            assert np.shape(a) == np.shape(b), f.name
            assert np.asarray(a).dtype == np.asarray(b).dtype, f.name
    assert sim.prediction is None and isinstance(th.prediction, str)
    xs, xt = sim.to_xarray(), th.to_xarray()
    assert set(xt.data_vars) - set(xs.data_vars) == set(extra)
    assert set(xs.data_vars) <= set(xt.data_vars)
    for name in xs.data_vars:
        assert xs[name].dims == xt[name].dims, name
    assert set(xs.coords) == set(xt.coords)
    for name in xs.coords:
        np.testing.assert_array_equal(xs[name].values, xt[name].values)


def _close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), **tol)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("scheme", ["aligned", "gaussian"])
def test_mirror_matches_simulation(task, depth, scheme):
    net = lo.DeepLinear((D,) * (depth + 1))
    # aligned: modes start at 0.3^L (learnt within the 100 steps); gaussian: a small random start
    W0 = net.init(jax.random.key(1), scale=0.3 if scheme == "aligned" else 0.1, scheme=scheme, task=task, seeds=2)
    sim = lo.pretrain(net, W0, task, lr=LR, checkpoints=CHECKPOINTS)
    th = lo.theory.pretrain(net, W0, task, lr=LR, checkpoints=CHECKPOINTS)
    _same_layout(sim, th)
    # aligned starts take the per-mode map, any other the GD map on its own layers; both exact
    assert th.prediction == ("modes" if scheme == "aligned" else "gd") and th.exact
    _close(sim.loss, th.loss, **EXACT)
    for a, b in zip(sim.weights, th.weights):
        _close(a, b, **EXACT)

    for kind, kw in SHIFTS.items():
        ft = lo.tasks.shifted(task, kind, key=jax.random.key(2), **kw, scale="absolute")
        fs = lo.finetune(net, sim, ft, lr=FT_LRS, steps=20, record_every=5)
        for start in (sim, th):  # run simulated or predicted
            fp = lo.theory.finetune(net, start, ft, lr=FT_LRS, steps=20, record_every=5)
            _same_layout(fs, fp, extra=("past_edge",))
            assert fp.exact and not fp.past_edge.any() and not fp.diverged.any()
            np.testing.assert_array_equal(fp.diverged_step, fs.diverged_step)
            for name in ("pretrain_loss_before", "finetune_loss_before", "pretrain_loss_after", "finetune_loss_after",
                         "pretrain_loss_trajectory", "finetune_loss_trajectory"):
                _close(getattr(fs, name), getattr(fp, name), **EXACT)

    gs = lo.sensitivity.gaussian(net, sim, gamma=(0.03, 0.1), samples=64, key=3)
    gp = lo.theory.gaussian(net, th, gamma=(0.03, 0.1), samples=64, key=3)
    _same_layout(gs, gp)
    assert gp.samples == 0 and not np.any(gp.stderr)
    _close(gs.loss, gp.loss, **EXACT)
    # Monte Carlo: each estimate is within 5 standard errors of the exact expectation (48 entries,
    # correlated through common random numbers; a 5-sigma miss has probability < 1e-5 per entry);
    # 1e-12 covers entries whose standard error is round-off
    assert np.all(np.abs(np.asarray(gs.sensitivity) - gp.sensitivity) <= 5 * np.asarray(gs.stderr) + 1e-12)


def test_flow_prediction_is_first_order_in_lr(task):
    """method='flow' is gradient flow; GD at the same time t differs by O(lr) (the modified equation's
    leading correction -lr/2 Hg), so halving lr halves the gap: the ratio tends to 2."""
    net = lo.DeepLinear((D, D, D))
    W0 = net.init(jax.random.key(1), scale=0.1, seeds=2)
    gaps = []
    for lr in (0.02, 0.01):
        ck = [int(round(5.0 / lr)), int(round(20.0 / lr))]  # t = 5 and 20 at both rates
        gd = lo.theory.pretrain(net, W0, task, lr=lr, checkpoints=ck, method="gd")
        flow = lo.theory.pretrain(net, W0, task, lr=lr, checkpoints=ck, method="flow")
        assert flow.prediction == "flow" and not flow.exact
        np.testing.assert_allclose(flow.t, gd.t)
        gaps.append(np.max(np.abs(gd.loss - flow.loss)))
    # the next order moves the ratio by O(lr) relative: measured 1.995 (1.990 for lr 0.04 / 0.02)
    assert 1.95 < gaps[0] / gaps[1] < 2.05


def test_turning_point_same_type_and_agreement(task):
    """lo.turning_point (ucurve.turning_point) returns one type for measured and predicted results
    of both kinds, and where the prediction is exact (fine-tuning by the exact GD map) the same
    turning points."""
    net = lo.DeepLinear((D, D, D))
    W0 = net.init(jax.random.key(1), scale=1e-2, scheme="aligned", task=task)
    ck = lo.log_checkpoints(3000, 14)
    sim = lo.pretrain(net, W0, task, lr=LR, checkpoints=ck)
    th = lo.theory.pretrain(net, W0, task, lr=LR, checkpoints=ck)
    ft = lo.tasks.shifted(task, "rotate", size=0.5, key=jax.random.key(3))
    fs = lo.finetune(net, sim, ft, lr=(0.1, 0.2), steps=20)
    fp = lo.theory.finetune(net, th, ft, lr=(0.1, 0.2), steps=20)
    ms, mp = turning_point(fs), turning_point(fp)
    assert type(ms) is type(mp) is TurningPoints and ms.dims == mp.dims == ("lr",)
    assert mp.is_turning_point.all()  # this setting has a U-curve at both rates (rise ~4%)
    np.testing.assert_array_equal(ms.index, mp.index)
    np.testing.assert_array_equal(ms.is_turning_point, mp.is_turning_point)
    # t_star is the vertex of a parabola through three points equal to round-off (EXACT)
    np.testing.assert_allclose(ms.t_star, mp.t_star, rtol=1e-8)
    assert isinstance(mp.curve(0), lo.theory.UCurve) and mp.curve(0).t_star == mp.t_star[0]

    gs = lo.sensitivity.gaussian(net, sim, gamma=(0.25, 0.35), samples=32, key=0)
    gp = lo.theory.gaussian(net, th, gamma=(0.25, 0.35))
    a, b = turning_point(gs), turning_point(gp)
    assert type(a) is type(b) is TurningPoints and a.dims == b.dims == ("gamma",)
    np.testing.assert_array_equal(a.coords["gamma"], b.coords["gamma"])


def test_turning_point_of_the_seed_mean(task):
    """seeds="mean" judges the mean over seeds, which is u_curve on that curve; seeds="each" one per
    seed; a result without a seed axis is the same either way; a wrong value names the argument."""
    net = lo.DeepLinear((D, D, D))
    ck = lo.log_checkpoints(3000, 14)
    runs = lo.theory.pretrain(net, net.init(jax.random.key(1), scale=1e-2, seeds=3), task, lr=LR, checkpoints=ck)
    res = lo.theory.gaussian(net, runs, gamma=(0.25, 0.35))  # (C, G, S)
    mean, each = turning_point(res, seeds="mean"), turning_point(res)
    assert mean.dims == ("gamma",) and each.dims == ("gamma", "seed") and each.t_star.shape == (2, 3)
    for g in range(2):
        u = lo.theory.u_curve(res.t, np.asarray(res.perturbed_loss, float)[:, g].mean(-1))
        assert mean.curve(g) == u
        for s in range(3):
            assert each.curve(g, s) == lo.theory.u_curve(res.t, np.asarray(res.perturbed_loss, float)[:, g, s])
    one = lo.theory.gaussian(net, lo.theory.pretrain(net, net.init(jax.random.key(1), scale=1e-2), task, lr=LR,
                                                     checkpoints=ck), gamma=0.3)
    assert turning_point(one, seeds="mean").curve(0) == turning_point(one).curve(0)
    with pytest.raises(ValueError, match="seeds must be"):
        turning_point(res, seeds="median")


def test_per_mode_aligned_init_is_the_mode_theory_start(task):
    """net.init(scheme="aligned", scale=a) with k per-mode values a_i: balanced, P0 = U diag(a^L) V^T, so
    lo.theory.pretrain takes its exact per-mode path, and the simulation agrees with it (float32 GD
    vs exact GD map: ~1e-6 relative, round-off of the float32 simulation)."""
    net = lo.DeepLinear((D, D, D))
    a = np.geomspace(1e-2, 1e-3, D)
    W0 = net.init(jax.random.key(1), scale=a, scheme="aligned", task=task)
    np.testing.assert_allclose(W0[1].T @ W0[1], W0[0] @ W0[0].T, atol=1e-7)
    U, _, Vt = (np.asarray(x, float) for x in task.svd())
    np.testing.assert_allclose(U.T @ np.asarray(lo.networks.end_to_end(W0), float) @ Vt.T, np.diag(a ** 2), atol=1e-8)
    ck = lo.log_checkpoints(2000, 8)
    th = lo.theory.pretrain(net, W0, task, lr=LR, checkpoints=ck)
    assert th.prediction == "modes"
    # atol: once every mode is learnt the loss is ~0 and only float32 round-off (~1e-30 here) remains
    np.testing.assert_allclose(lo.pretrain(net, W0, task, lr=LR, checkpoints=ck).loss, th.loss, rtol=2e-5, atol=1e-12)
    with pytest.raises(ValueError, match="scale has 3 per-mode values"):
        net.init(jax.random.key(1), scale=[0.1, 0.2, 0.3], scheme="aligned", task=task)
    with pytest.raises(ValueError, match="scale"):
        net.init(jax.random.key(1), scale=-a, scheme="aligned", task=task)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), d_in=st.integers(1, 6), d_out=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_dataset_as_task_has_the_sample_loss(n, d_in, d_out, seed):
    """Dataset.as_task: the population loss of the sample's own moments equals the sample loss for any map,
    including N < d_in (singular covariance) and a map off the sample's range (float64 round-off)."""
    rng = np.random.default_rng(seed)
    data = lo.Dataset(x=rng.normal(size=(n, d_in)), y=rng.normal(size=(n, d_out)))
    t = data.as_task()
    assert t.noise >= 0 and t.teacher.shape == (d_out, d_in)
    P = rng.normal(size=(3, d_out, d_in))
    np.testing.assert_allclose(np.asarray(t.loss(P)), np.asarray(data.loss(P)), rtol=1e-9, atol=1e-12)


def test_theory_takes_a_dataset_and_predicts_full_batch_gd_on_it():
    """lo.theory.pretrain / finetune take a Dataset as the simulation does: full-batch GD on the sample
    is GD on its moments, so the prediction equals lo.pretrain / lo.finetune on the sample (exact map,
    float64 round-off) and the fine-tuning turning point on the sample is predicted within 2% (measured:
    equal to 1e-12). The population theory of the teacher the sample came from misses it (~29% at N = 40,
    d = 8): the sample's own moments are what matter."""
    d = 8
    task = lo.tasks.power_law(d, d, 1.0, key=jax.random.key(0))
    data = task.sample(40, key=1)
    shift = lo.tasks.shifted(task, kind="additive", size=0.3, key=jax.random.key(2), scale="absolute")
    ft = shift.sample(40, key=3)
    net = lo.DeepLinear((d, d, d))
    W0 = net.init(jax.random.key(1), scale=1e-2)
    ck = lo.log_checkpoints(4000, 40, first=10)
    sim = lo.pretrain(net, W0, data, lr=0.05, checkpoints=ck)
    th = lo.theory.pretrain(net, W0, data, lr=0.05, checkpoints=ck)
    assert th.task is not None and isinstance(th.task, lo.Dataset) and th.prediction == "gd"
    np.testing.assert_allclose(np.asarray(th.loss), np.asarray(sim.loss), rtol=1e-9)
    fs = lo.finetune(net, sim, ft, lr=0.05, steps=50)
    fp = lo.theory.finetune(net, th, ft, lr=0.05, steps=50)
    a, b = turning_point(fs), turning_point(fp)
    assert bool(a.is_turning_point[0]) and bool(b.is_turning_point[0])
    assert abs(b.t_star[0] / a.t_star[0] - 1) < 0.02
    pop = lo.theory.finetune(net, lo.theory.pretrain(net, W0, task, lr=0.05, checkpoints=ck), shift, lr=0.05,
                             steps=50)
    assert abs(turning_point(pop).t_star[0] / a.t_star[0] - 1) > 0.1


def test_mirror_bad_input(task):
    net = lo.DeepLinear((D, D, D))
    W0 = net.init(jax.random.key(1), scale=0.1)
    with pytest.raises(ValueError, match="method='modes' needs balanced starts aligned"):
        lo.theory.pretrain(net, W0, task, lr=LR, checkpoints=[10], method="modes")
    with pytest.raises(TypeError, match="lr must be a constant"):
        lo.theory.pretrain(net, W0, task, lr=lambda k: 0.1, checkpoints=[10])
    with pytest.raises(TypeError, match="must be a linoverfit Task"):
        lo.theory.pretrain(net, W0, {"x": 1}, lr=LR, checkpoints=[10])
    run = lo.theory.pretrain(net, W0, task, lr=LR, checkpoints=[10])
    with pytest.raises(ValueError, match="method='gd'.*method='modes'"):
        lo.theory.finetune(net, run, task, lr=0.1, steps=5, l2=0.1, method="layers")
    with pytest.raises(ValueError, match="l2_on must be one of"):
        lo.theory.finetune(net, run, task, lr=0.1, steps=5, l2=0.1, l2_on="foo")
    with pytest.raises(ValueError, match="method='modes' needs balanced starts"):
        lo.theory.finetune(net, run, task, lr=0.1, steps=5, l2=0.1, method="modes")
    with pytest.raises(ValueError, match="gd_order must be 'auto' or 'exact'"):
        lo.theory.finetune(net, run, task, lr=0.1, steps=5, l2=0.1, gd_order=2)
    with pytest.raises(TypeError, match="fine-tuning result"):
        turning_point(run)
    with pytest.raises(ValueError, match="min_rise"):
        turning_point(lo.theory.gaussian(net, run, gamma=0.1), min_rise=-1)
    with pytest.raises(ValueError, match="quantity='loss'"):
        turning_point(lo.theory.gaussian(net, run, gamma=0.1), quantity="loss")


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(1, 3), st.booleans(), st.data())
def test_turning_point_is_u_curve_per_entry(C, G, seeds, data):
    """Each entry of turning_point(result) is u_curve of that curve over result.t with its non-finite
    points dropped (one definition for every result); an all-NaN curve has no turning point."""
    shape = (C, G, 2) if seeds else (C, G)
    vals = np.array(data.draw(st.lists(st.one_of(st.floats(0.01, 10.0), st.just(np.nan)),
                                       min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))).reshape(shape)
    steps = np.cumsum(data.draw(st.lists(st.integers(1, 50), min_size=C, max_size=C)))
    res = lo.sensitivity.SensitivityResult(steps=steps, gamma=np.linspace(0.1, 0.2, G), samples=2, pretrain_lr=0.1,
                                           loss=np.ones(shape[:1] + shape[2:]), perturbed_loss=vals,
                                           sensitivity=vals - 1.0, stderr=np.zeros(shape))
    tp = turning_point(res, min_rise=0.02)
    assert tp.dims == (("gamma", "seed") if seeds else ("gamma",)) and tp.t_star.shape == shape[1:]
    for i in np.ndindex(*shape[1:]):
        curve = vals[(slice(None),) + i]
        keep = np.isfinite(curve)
        if not keep.any():
            assert tp.index[i] == -1 and not tp.is_turning_point[i] and np.isnan(tp.t_star[i])
            continue
        u = lo.theory.u_curve(res.t[keep], curve[keep], depth=0.02)
        assert tp.curve(*i) == dataclasses.replace(u, index=int(np.flatnonzero(keep)[u.index]))
