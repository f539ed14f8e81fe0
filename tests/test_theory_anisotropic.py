"""Anisotropic inputs sharing the teacher's right singular vectors, Sigma v_i = kappa_i v_i (issue 10,
acceptance 5; docs/theory.md section 1.8): the per-mode input variance in the mode dynamics (flow and exact
GD), the turning points and fine-tuning predictions built on them against float64 GD, and the errors for
every covariance the theory does not cover."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.theory import expected_perturbed_loss
from linoverfit.theory.curves import finetune_curve, perturbed_loss_curve
from linoverfit.theory.forgetting import predict_finetune
from linoverfit.theory.modes import input_variance, mode_asymptote, mode_trajectory, mode_velocity
from linoverfit.theory.turning import turning_point

D, GAMMA, LR = 8, 0.0968, 0.01  # GAMMA as in test_theory_turning: a clear U-curve with T* ~ 14
KAPPA = np.geomspace(2.0, 0.5, D)  # the input variance falls along the spectrum: the mode order is kept


def _task(kappa=KAPPA):
    return lo.tasks.power_law(D, D, 1.0, key=jax.random.key(0), input_var=kappa)


def _scale(depth):
    return 0.03 if depth == 2 else 0.2


# ----------------------------------------------------------------------------- against simulation


@pytest.mark.parametrize("depth, anisotropic", [(2, False), (2, True), (3, True)])
def test_gd_modes_curve_and_turning_point_match_simulation(depth, anisotropic):
    """mode_trajectory(input_var=, lr=) is GD on an aligned net exactly; T* with pretrain_lr is GD's argmin step."""
    task = _task(KAPPA if anisotropic else None)
    U, sig, Vt = (np.asarray(x) for x in task.svd())
    kappa = input_variance(task)
    widths, scale = (D,) * (depth + 1), _scale(depth)
    s0 = scale**depth
    tp = turning_point(task, gamma=GAMMA, widths=widths, s0=s0)
    tpg = turning_point(task, gamma=GAMMA, widths=widths, s0=s0, pretrain_lr=LR)
    n_star = int(round(tpg.t_star / LR))
    assert tpg.is_turning_point and abs(n_star * LR - tpg.t_star) < 1e-9  # a multiple of the learning rate
    total = int(round(2.5 * tp.t_star / LR))
    grid = lo.linear_checkpoints(total, 300, include_zero=True)
    ck = sorted(set(grid) | set(range(n_star - 25, n_star + 26)))  # every step around the predicted T*
    net = lo.DeepLinear(widths)
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=scale, scheme="aligned", task=task), task, lr=LR,
                      checkpoints=ck)
    t = np.asarray(run.t)
    s_sim = np.einsum("ik,tij,kj->tk", U, np.asarray(run.end_to_end), Vt)
    # exact GD map (1.9a) with kappa: the same float64 recursion in another order of operations (measured <= 3e-14)
    np.testing.assert_allclose(mode_trajectory(sig, t, s0, depth, lr=LR, input_var=kappa), s_sim, rtol=1e-11)
    # the flow lags GD by O(lr kappa sigma log(sigma/s0)) (eq. 1.9; measured 0.62% of sigma_1 for Sigma = I,
    # 1.24% with kappa_1 = 2, at both depths): bounded by 3%, and really off, so the check above means something
    gap = np.max(np.abs(mode_trajectory(sig, t, s0, depth, input_var=kappa) - s_sim)) / sig[0]
    assert 1e-3 < gap < 0.03, gap
    f_sim = np.asarray(expected_perturbed_loss(run.weights, task, gamma=GAMMA))[:, 0]  # one gamma: (C, 1)
    # the curve on exact GD spectra: round-off of two code paths (measured <= 5e-15)
    np.testing.assert_allclose(perturbed_loss_curve(task, t, GAMMA, widths=widths, s0=s0, pretrain_lr=LR)[:, 0], f_sim,
                               rtol=1e-10)
    i = int(np.argmin(f_sim))
    # the predicted step is the simulated argmin, and the runner-up lies above it by more than the round-off
    # bound above (one step from a quadratic minimum: ~ f'' lr^2 / 2, measured >= 4e-10 relative), so the
    # agreement is not a tie broken by chance
    assert int(round(t[i] / LR)) == n_star, (t[i], tpg.t_star)
    assert np.partition(f_sim, 1)[1] / f_sim[i] - 1 > 1e-11
    # the flow's T* (grid argmin, spacing 0.8% of T*): measured -0.2% for both covariances at lr 0.01
    t_grid = np.isin(np.asarray(ck), grid)
    assert abs(t[np.argmin(np.where(t_grid, f_sim, np.inf))] / tp.t_star - 1) < 0.02


@pytest.mark.parametrize("depth", [2, 3])
def test_anisotropic_finetune_predictions_match_simulation(depth):
    """finetune_curve / turning_point(finetune=) with pretrain_lr, and predict_finetune(run), against lo.finetune."""
    task = _task()
    ft = lo.tasks.shifted(task, kind="additive", size=0.3, key=jax.random.key(2), scale="absolute")  # keeps Sigma: a U-curve
    widths, scale = (D,) * (depth + 1), _scale(depth)
    s0, ft_lr, steps = scale**depth, 0.05, 40
    tp = turning_point(task, finetune=ft, lr=ft_lr, steps=steps, widths=widths, s0=s0, pretrain_lr=LR, t_max=40.0,
                       grid=48)
    assert tp.is_turning_point
    n_end = int(np.ceil(2 * tp.t_star / LR))
    net = lo.DeepLinear(widths)
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=scale, scheme="aligned", task=task), task, lr=LR,
                      checkpoints=list(range(1, n_end + 1)))  # every step up to twice T*
    sim = lo.finetune(net, run, ft, lr=ft_lr, steps=steps)
    after = np.asarray(sim.pretrain_loss_after)[:, 0]
    pred = finetune_curve(task, ft, np.asarray(run.t), widths=widths, s0=s0, lr=ft_lr, steps=steps, pretrain_lr=LR)
    # exact GD spectra, then GD of the balanced factors (gd_order "auto"): round-off (measured <= 7e-15 on the
    # loss after, <= 1.3e-13 on the forgetting, a difference of two close losses)
    np.testing.assert_allclose(pred.pretrain_loss_after[:, 0], after, rtol=1e-10)
    np.testing.assert_allclose(pred.forgetting[:, 0], np.asarray(sim.forgetting)[:, 0], rtol=1e-9)
    np.testing.assert_allclose(predict_finetune(run, ft, lr=ft_lr, steps=steps).pretrain_loss_after[:, 0], after,
                               rtol=1e-10)
    # T* is refined between steps (the curve interpolated linearly in each step): within one step of GD's argmin
    i = int(np.argmin(after))
    assert 0 < i < after.size - 1
    assert abs(float(run.t[i]) - tp.t_star) <= LR, (float(run.t[i]), tp.t_star)
    # pre-training by the flow instead: O(lr) off (measured 0.38% at depth 2, 0.24% at depth 3)
    flow = finetune_curve(task, ft, np.asarray(run.t), widths=widths, s0=s0, lr=ft_lr, steps=steps)
    assert np.max(np.abs(flow.pretrain_loss_after[:, 0] / after - 1)) < 0.02
    # scored on another task (lo.finetune's pretrain_task=): the same maps, that task's loss (round-off)
    other = lo.tasks.shifted(task, kind="rotate", size=0.4, key=jax.random.key(5))
    sim_o = lo.finetune(net, run, ft, lr=ft_lr, steps=steps, pretrain_task=other)
    pred_o = finetune_curve(task, ft, np.asarray(run.t), widths=widths, s0=s0, lr=ft_lr, steps=steps, pretrain_lr=LR,
                            pretrain_task=other, return_maps=True)
    np.testing.assert_allclose(pred_o.pretrain_loss_after[:, 0], np.asarray(sim_o.pretrain_loss_after)[:, 0],
                               rtol=1e-10)
    np.testing.assert_allclose(pred_o.pretrain_loss_after[:, 0], other.loss(pred_o.end_to_end[:, 0]), rtol=1e-12)
    np.testing.assert_array_equal(pred_o.finetune_loss_after, pred.finetune_loss_after)


@settings(max_examples=6, deadline=None)
@given(depth=st.sampled_from([2, 3]), log_kappa=st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4),
       lam=st.sampled_from([0.0, 0.02]), frac=st.floats(0.05, 0.8))
def test_exact_gd_map_for_random_input_variances(depth, log_kappa, lam, frac):
    """Any kappa, with weight decay, at any learning rate below the edge (1.13): the map (1.12) is the simulation."""
    from linoverfit.theory.modes import _aligned_sharpness

    kappa = np.exp(np.asarray(log_kappa))
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0), input_var=kappa)  # fixed shapes: one compilation
    U, sig, Vt = (np.asarray(x) for x in task.svd())
    lr = frac * 2.0 / (_aligned_sharpness(sig, depth, kappa) + lam)
    net = lo.DeepLinear((4,) * (depth + 1))
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=0.3, scheme="aligned", task=task), task, lr=lr,
                      weight_decay=lam, checkpoints=[0, 50, 200, 400])
    s_sim = np.einsum("ik,tij,kj->tk", U, np.asarray(run.end_to_end), Vt)
    # round-off of the same float64 recursion (measured <= 3e-14 relative above); atol for modes weight decay kills
    np.testing.assert_allclose(mode_trajectory(sig, run.t, 0.3**depth, depth, lam, lr=lr, input_var=input_variance(task)),
                               s_sim, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------- exact properties


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(1, 4), kappa=st.floats(0.1, 4.0), sigma=st.floats(0.05, 2.0), lam=st.sampled_from([0.0, 0.01]),
       log_s0=st.floats(-8.0, -1.0))
def test_input_variance_is_a_change_of_time(depth, kappa, sigma, lam, log_s0):
    """kappa rescales time and weight decay exactly: s(t; kappa, lam) = s(kappa t; 1, lam/kappa) for the flow,
    and the GD map at lr eta equals the kappa = 1 map at lr eta kappa (section 1.8)."""
    s0, t = np.exp(log_s0), np.array([0.0, 0.7, 3.0, 20.0])
    flow = mode_trajectory(sigma, t, s0, depth, lam, input_var=kappa)
    ref = mode_trajectory(sigma, kappa * t, s0, depth, lam / kappa)
    # closed forms at depths 1, 2 (round-off); depth >= 3: two ODE solves at rtol 1e-11 (~1e-10 each)
    np.testing.assert_allclose(flow, ref, rtol=1e-12 if depth <= 2 else 1e-8, atol=1e-300)
    eta = 0.02
    gd = mode_trajectory(sigma, t, s0, depth, lam, lr=eta, input_var=kappa)
    np.testing.assert_allclose(gd, mode_trajectory(sigma, kappa * t, s0, depth, lam / kappa, lr=eta * kappa),
                               rtol=1e-12, atol=1e-300)
    for lr in (None, eta):  # the field itself (flow, and the modified equation at lr eta <-> eta kappa)
        v = mode_velocity(flow, sigma, depth, lam, input_var=kappa, lr=lr)
        ref_v = kappa * mode_velocity(flow, sigma, depth, lam / kappa, lr=None if lr is None else lr * kappa)
        # near the fixed point the field is a difference of terms ~ L kappa sigma^2: round-off relative to those
        np.testing.assert_allclose(v, ref_v, rtol=1e-12, atol=1e-13 * depth * kappa * max(sigma, 1.0) ** 2)
    np.testing.assert_allclose(mode_asymptote(sigma, s0, depth, lam, input_var=kappa),
                               mode_asymptote(sigma, s0, depth, lam / kappa), rtol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_the_edge_is_the_networks_not_only_each_mode_maps(depth):
    """The warning sits at 2 / lambda_max of the aligned net at its minimum, eq. (1.13), which equals the closed-form
    sharpness of the whole network (d_in = number of modes), and lies below every mode map's own edge here."""
    kappa = np.geomspace(0.5, 4.0, D)  # a large input variance under a small singular value: modes mix
    task, widths = _task(kappa), (D,) * (depth + 1)
    sig = np.asarray(task.spectrum)
    edge = 2.0 / float(lo.theory.curvature.sharpness_from_spectrum(sig, task, widths))
    assert edge < 0.5 * np.min(2.0 / (depth * kappa * sig ** (2.0 - 2.0 / depth)))  # the mode maps' edges
    with pytest.warns(lo.theory.PastEdgeWarning, match="stability edge"):
        mode_trajectory(sig, [1.0], 1e-2, depth, lr=1.01 * edge, input_var=kappa)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mode_trajectory(sig, [1.0], 1e-2, depth, lr=0.99 * edge, input_var=kappa)
    if depth == 2:  # and GD of the network itself, where the mode maps alone are stable (edge 4.5x further out)
        U, _, Vt = (np.asarray(x) for x in task.svd())
        net = lo.DeepLinear(widths)
        W0 = net.init(jax.random.key(1), scale=0.3, scheme="aligned", task=task)
        for factor in (0.9, 1.1):
            run = lo.pretrain(net, W0, task, lr=factor * edge, checkpoints=list(range(0, 1501, 10)))
            s_sim = np.einsum("ik,tij,kj->tk", U, np.asarray(run.end_to_end), Vt)
            err = np.max(np.abs(s_sim - mode_trajectory(sig, run.t, 0.09, 2, lr=factor * edge, input_var=kappa)))
            # below the edge: the exact map, round-off (measured 1e-15); above it the mode-mixing directions
            # grow from round-off and GD leaves the aligned manifold for a flatter minimum (measured 0.03)
            assert err < 1e-12 if factor < 1 else err > 1e-3, (factor, err)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), shape=st.sampled_from([(6, 4), (4, 6)]),  # few shapes: few compilations
       dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_input_var_tasks_share_the_basis_and_others_are_refused(seed, shape, dtype, data):
    d_in, d_out = shape
    r = min(d_in, d_out)
    kappa = np.asarray(data.draw(st.lists(st.floats(0.1, 5.0), min_size=r, max_size=r)))
    task = lo.tasks.power_law(d_in, d_out, 1.0, key=jax.random.key(seed), input_var=kappa, dtype=dtype)
    assert task.input_cov.dtype == dtype
    # float32 storage: kappa to its epsilon times the spread of the covariance
    np.testing.assert_allclose(input_variance(task), kappa, rtol=1e-5 if dtype == np.float32 else 1e-12)
    # a symmetric perturbation that mixes v_1 and v_2, 1e-3 of the covariance: above sqrt(eps) for both dtypes
    _, _, Vt = np.linalg.svd(np.asarray(task.teacher, np.float64))
    mix = 1e-3 * np.linalg.norm(np.asarray(task.input_cov, np.float64)) * (np.outer(Vt[0], Vt[1]) + np.outer(Vt[1], Vt[0]))
    bad = task.with_(input_cov=np.asarray(task.input_cov, np.float64) + mix)
    with pytest.raises(ValueError, match="right singular vectors"):
        input_variance(bad)


# ----------------------------------------------------------------------------- refusals


def test_every_entry_point_refuses_a_covariance_that_does_not_share_the_basis():
    task = _task(None)
    X = np.random.default_rng(0).normal(size=(D, D))
    bad = task.with_(input_cov=X @ X.T / D + np.eye(D))
    ft = lo.tasks.shifted(task, kind="additive", size=0.3, key=jax.random.key(2), scale="absolute")
    kw = dict(widths=(D, D, D), s0=1e-3)
    calls = [
        lambda: input_variance(bad),
        lambda: perturbed_loss_curve(bad, [1.0], GAMMA, **kw),
        lambda: perturbed_loss_curve(bad, [1.0], GAMMA, pretrain_lr=LR, **kw),
        lambda: turning_point(bad, gamma=GAMMA, **kw),
        lambda: turning_point(bad, gamma=GAMMA, pretrain_lr=LR, **kw),
        lambda: turning_point(bad, finetune=ft, lr=0.05, steps=4, pretrain_lr=LR, **kw),
        lambda: finetune_curve(bad, ft, [1.0], lr=0.05, steps=4, **kw),
        lambda: finetune_curve(bad, ft, [1.0], lr=0.05, steps=4, pretrain_lr=LR, **kw),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="share the teacher's right singular vectors"):
            call()


def test_input_var_and_its_sigma_cannot_be_mismatched():
    sig = np.array([1.0, 0.5, 0.25])
    for kw in (dict(), dict(lr=0.01)):
        with pytest.raises(ValueError, match="input_var must be a scalar or one input variance per singular value"):
            mode_trajectory(sig, [1.0], 1e-3, 2, input_var=[1.0, 2.0], **kw)
    with pytest.raises(ValueError, match="input_var"):
        mode_velocity(0.1, sig, 2, input_var=np.ones(4))
    with pytest.raises(ValueError, match="input_var"):
        mode_asymptote(sig, 1e-3, 3, 0.01, input_var=[1.0, 2.0])
    with pytest.raises(ValueError, match="input_var must be >= 0"):
        mode_trajectory(sig, [1.0], 1e-3, 2, input_var=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="input_cov= .* or input_var="):
        lo.tasks.power_law(3, 3, key=jax.random.key(0), input_var=[1.0, 2.0, 3.0], input_cov=np.eye(3))
    with pytest.raises(ValueError, match=r"input_var must be a scalar or have one entry per singular value \(3,\)"):
        lo.tasks.power_law(3, 3, key=jax.random.key(0), input_var=[1.0, 2.0])
    with pytest.raises(TypeError, match="task must be a linoverfit Task"):
        input_variance(sig)
