"""Monte Carlo sensitivity against the depth-2 closed form (docs/design.md, closed form 2)."""

import jax
import numpy as np
import pytest

import linoverfit as lo
from linoverfit.sweeps import _program


def _depth2_formula(W1, W2, gamma):
    # S = gamma^2/2 (d_in ||W2||^2 + d_out ||W1||^2) + gamma^4/2 d_in h d_out   (Sigma = I)
    h, d_in = W1.shape
    d_out = W2.shape[0]
    return 0.5 * gamma**2 * (d_in * np.sum(W2**2) + d_out * np.sum(W1**2)) + 0.5 * gamma**4 * d_in * h * d_out


@pytest.fixture(scope="module")
def run():
    task = lo.tasks.power_law(12, 10, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((12, 7, 10))
    W0 = net.init(jax.random.key(1), scale=1e-2, seeds=2)
    return net, lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(4000, 6))


def test_monte_carlo_matches_depth2_closed_form_within_4_se(run):
    net, r = run
    gammas = (0.02, 0.1)
    sens = lo.sensitivity.gaussian(net, r, gamma=gammas, samples=4000, key=jax.random.key(5))
    assert sens.sensitivity.shape == (6, 2, 2)
    for c in range(6):
        for g, gamma in enumerate(gammas):
            for s in range(2):
                exact = _depth2_formula(np.asarray(r.weights[0][c, s]), np.asarray(r.weights[1][c, s]), gamma)
                est, se = float(sens.sensitivity[c, g, s]), float(sens.stderr[c, g, s])
                # the estimator is an average of 4000 iid draws, so by the CLT it lies within 4 SE
                # of the expectation except with probability ~6e-5 per entry (24 entries here)
                assert abs(est - exact) < 4 * se, (c, gamma, s, est, exact, se)
                if c == 5:  # trained weights: the 4-SE band is a few % of the quantity, so the check has teeth
                    assert se < 0.02 * exact, (gamma, se, exact)
    np.testing.assert_allclose(sens.perturbed_loss - sens.sensitivity, np.broadcast_to(np.asarray(sens.loss)[:, None, :], (6, 2, 2)), rtol=1e-12)


def test_same_key_same_bits_other_key_differs(run):
    net, r = run
    a = lo.sensitivity.gaussian(net, r, gamma=0.05, samples=64, key=jax.random.key(1))
    b = lo.sensitivity.gaussian(net, r, gamma=0.05, samples=64, key=jax.random.key(1))
    c = lo.sensitivity.gaussian(net, r, gamma=0.05, samples=64, key=jax.random.key(2))
    np.testing.assert_array_equal(a.sensitivity, b.sensitivity)
    assert not np.array_equal(np.asarray(a.sensitivity), np.asarray(c.sensitivity))


def test_gamma_values_do_not_recompile(run, count_compiles):
    net, r = run
    lo.sensitivity.gaussian(net, r, gamma=(0.01, 0.02), samples=32, key=jax.random.key(0))
    before = _program._cache_size()
    with count_compiles() as c:
        lo.sensitivity.gaussian(net, r, gamma=(0.05, 0.3), samples=32, key=jax.random.key(3))
    assert c["n"] == 0 and _program._cache_size() == before


def test_bad_arguments(run):
    net, r = run
    with pytest.raises(ValueError, match="gamma"):
        lo.sensitivity.gaussian(net, r, gamma=-0.1, samples=8, key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples"):
        lo.sensitivity.gaussian(net, r, gamma=0.1, samples=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        lo.sensitivity.gaussian(net, r, gamma=0.1, samples=8)
    with pytest.raises(ValueError, match="task"):
        lo.sensitivity.gaussian(net, r, lo.tasks.power_law(3, 10, key=jax.random.key(0)), gamma=0.1, samples=8, key=jax.random.key(0))
