"""Linearised (empirical-kernel) fine-tuning prediction (lo.theory.linearised, issue 19, acceptance 3).

Exact for a network linear in its parameters (depth 1); on a tanh MLP its error against real
fine-tuning is O((lr * steps)^2) in the losses as lr * steps -> 0.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.theory import linearised
from linoverfit.errors import DivergenceWarning
from linoverfit.theory.curvature import PastEdgeWarning

FIELDS = ("pretrain_loss_before", "finetune_loss_before", "pretrain_loss_after", "finetune_loss_after",
          "pretrain_loss_trajectory", "finetune_loss_trajectory")


@pytest.fixture(scope="module")
def tasks():
    task = lo.tasks.power_law(4, 3, key=0)
    ft = lo.tasks.shifted(task, "rotate", 0.3, key=2)
    # label noise keeps the fine-tuning loss of a depth-1 network away from 0 (relative comparisons)
    return task, task.sample(32, 1), ft, ft.with_(noise=0.01).sample(32, 3)


def _close(a, b, scale):
    """Equal to float64 round-off of losses of size ``scale`` (1e-12 relative: a few hundred GD steps
    of O(1) arithmetic accumulate ~1e-14; the closed form's eigh ~1e-15)."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("net", [lo.DeepLinear((4, 3)), lo.MLP((4, 3), activation="tanh")], ids=["linear", "mlp"])
def test_exact_for_a_depth_one_network(tasks, net):
    """A depth-1 network is linear in its parameters, so its Taylor model is itself: the closed form
    equals lo.finetune (GD, float64) to round-off, at two rates, with records and a seed axis."""
    _, data, _, ft = tasks
    run = lo.pretrain(net, net.init(1, scale=0.3, seeds=2), data, lr=0.1, checkpoints=[1, 30, 300])
    kw = dict(lr=[0.05, 0.5], steps=200, record_every=50)
    p, s = linearised.finetune(net, run, ft, **kw), lo.finetune(net, run, ft, **kw)
    assert p.exact is True and p.prediction == "linearised" and not np.any(p.past_edge)
    scale = float(np.max(s.finetune_loss_before))
    for f in FIELDS:
        assert np.shape(getattr(p, f)) == np.shape(getattr(s, f)), f
        _close(getattr(p, f), getattr(s, f), scale)
    np.testing.assert_array_equal(p.record_steps, s.record_steps)
    np.testing.assert_array_equal(p.diverged, s.diverged)


def test_exact_for_depth_one_on_the_population_loss(tasks):
    """A population Task (linear networks): the rows Sigma^(1/2), labels Sigma^(1/2) A^T, weight 1
    give the population gradient (P - A) Sigma; depth 1 is exact (round-off)."""
    task, _, ft_task, _ = tasks
    task = task.with_(input_cov=np.diag([2.0, 1.0, 0.5, 0.25]))
    ft_task = ft_task.with_(input_cov=task.input_cov)
    net = lo.DeepLinear((4, 3))
    run = lo.pretrain(net, net.init(1, scale=0.3), task, lr=0.1, checkpoints=[1, 30, 300])
    kw = dict(lr=[0.05, 0.3], steps=100, record_every=25)
    p, s = linearised.finetune(net, run, ft_task, **kw), lo.finetune(net, run, ft_task, **kw)
    for f in FIELDS:
        _close(getattr(p, f), getattr(s, f), float(np.max(s.finetune_loss_before)))


@pytest.fixture(scope="module")
def tanh_run(tasks):
    _, data, _, ft = tasks
    net = lo.MLP((4, 16, 3), activation="tanh")
    return net, lo.pretrain(net, net.init(1, scale=0.5), data, lr=0.1, checkpoints=[10, 300, 3000]), ft


def test_tanh_mlp_error_is_second_order_in_lr_steps(tanh_run):
    """Linearised GD differs from GD on the network through the residual part of the Hessian,
    (1/N) sum r d^2 f, and the Taylor remainder: both O(delta^2) with delta = W_k - W_0 = O(lr k), so
    the loss errors are O((lr k)^2) while the changes they predict are O(lr k). Halving lr * steps
    (0.005 -> 0.0025, 10 steps) divides the errors by 4: measured 3.6 - 4.4 over both losses and
    three checkpoints (the next order, O(lr k) relative, still shows at lr k = 0.005); asserted in
    [3, 5.5]. At lr k = 0.4 the fine-tuning loss change is predicted to 0.5% (measured < 0.1%)."""
    net, run, ft = tanh_run
    lrs = np.array([0.0005, 0.00025])
    p, s = linearised.finetune(net, run, ft, lr=lrs, steps=10), lo.finetune(net, run, ft, lr=lrs, steps=10)
    assert p.exact is False
    for f in ("pretrain_loss_after", "finetune_loss_after"):
        err = np.abs(np.asarray(getattr(p, f)) - np.asarray(getattr(s, f)))  # (C, 2)
        assert np.all(err > 1e-12), err  # far above round-off: the ratio measures the method
        ratio = err[:, 0] / err[:, 1]
        assert np.all((ratio > 3) & (ratio < 5.5)), (f, ratio)
    p, s = linearised.finetune(net, run, ft, lr=0.02, steps=20), lo.finetune(net, run, ft, lr=0.02, steps=20)
    change = np.asarray(s.plasticity)
    assert np.all(change > 0.005)
    assert np.all(np.abs(np.asarray(p.finetune_loss_after - s.finetune_loss_after)) < 0.005 * change)


def test_laid_out_as_lo_finetune_and_turning_point_reads_it(tanh_run):
    net, run, ft = tanh_run
    kw = dict(lr=[0.01, 0.1], steps=20, record_every=10)
    p, s = linearised.finetune(net, run, ft, **kw), lo.finetune(net, run, ft, **kw)
    assert type(p) is type(s) and p.l2 == 0 and p.ft_steps == s.ft_steps and p.weights is None
    for f in FIELDS + ("diverged", "diverged_step"):
        assert np.shape(getattr(p, f)) == np.shape(getattr(s, f)), f
        assert np.asarray(getattr(p, f)).dtype == np.asarray(getattr(s, f)).dtype, f
    np.testing.assert_array_equal(p.t, s.t)
    assert p.past_edge.shape == p.diverged.shape
    _close(p.pretrain_loss_before, s.pretrain_loss_before, 1.0)
    xr = pytest.importorskip("xarray")
    a, b = p.to_xarray(), s.to_xarray()
    assert isinstance(a, xr.Dataset) and {k: a[k].dims for k in a}.items() >= {k: b[k].dims for k in b}.items()
    assert type(lo.turning_point(p)) is type(lo.turning_point(s))


def test_kernel_and_parameter_space_give_the_same_prediction(tanh_run):
    """The closed form is computed from K = J J^T (rows <= parameters) or G = J^T J: the same
    non-zero spectrum, the same prediction (round-off)."""
    net, run, ft = tanh_run
    W = tuple(jnp.asarray(w[1:]) for w in run.weights)  # one checkpoint, batched
    shared = (linearised._rows(ft), ft, run.task, jnp.array([0.01, 0.3]), jnp.array([5.0, 50.0]))
    a, b = (linearised._each_checkpoint(W, shared, linearised.LinearisedRun(kernel=k, net=net)) for k in (True, False))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(a=st.floats(-0.01, 2.5), k=st.integers(1, 60))
def test_geometric_sum(a, k):
    """s_k(a) = sum_{j<k} (1-a)^j for any a (past 2: growing and alternating), round-off relative to
    the largest term."""
    direct = sum((1.0 - a) ** j for j in range(k))
    scale = max(1.0, abs(1.0 - a) ** (k - 1))
    assert abs(float(linearised.geometric_sum(jnp.float64(a), jnp.float64(k))) - direct) <= 1e-11 * scale * k


def test_past_the_edge_warns_and_diverges_by_the_simulation_rule(tanh_run):
    """The linearised objective has curvature w lambda_max(J^T J); past 2 / that, GD on it diverges:
    past_edge is marked with a PastEdgeWarning, and the run is marked diverged (NaN after-losses)."""
    net, run, ft = tanh_run
    with pytest.warns(PastEdgeWarning), pytest.warns(DivergenceWarning):
        p = linearised.finetune(net, run, ft, lr=[0.01, 50.0], steps=200)
    assert np.all(p.past_edge[:, 1]) and not np.any(p.past_edge[:, 0])
    assert np.all(p.diverged[:, 1]) and np.all(np.isnan(p.finetune_loss_after[:, 1]))
    assert not np.any(p.diverged[:, 0]) and np.all(p.diverged_step[:, 0] == -1)


def test_bad_input_is_refused_by_name(tanh_run, tasks):
    net, run, ft = tanh_run
    with pytest.raises(ValueError, match="lr"):
        linearised.finetune(net, run, ft, lr=0.0, steps=5)
    with pytest.raises(ValueError, match="steps"):
        linearised.finetune(net, run, ft, lr=0.1, steps=0)
    with pytest.raises(ValueError, match="record_every"):
        linearised.finetune(net, run, ft, lr=0.1, steps=10, record_every=3)
    with pytest.raises(ValueError, match="population Task"):
        linearised.finetune(net, run, tasks[2], lr=0.1, steps=5)
    with pytest.raises(TypeError, match="PretrainResult"):
        linearised.finetune(net, None, ft, lr=0.1, steps=5)
