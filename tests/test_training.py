"""Pre-training and fine-tuning against exact recursions, jax.grad and per-checkpoint loops."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.sweeps import _program


def _random_psd(key, d):
    """A well-conditioned, clearly non-identity covariance."""
    G = jax.random.normal(key, (d, d))
    return G @ G.T / d + 0.5 * jnp.eye(d)


def test_depth1_equals_exact_gd_recursion():
    # Depth 1 is linear regression: P_{k+1} = P_k - lr (P_k - A) Sigma exactly.
    # Same arithmetic in float64, so only round-off differs: 1e-10 relative.
    d_in, d_out, lr, n = 7, 5, 0.1, 200
    task = lo.tasks.power_law(d_in, d_out, 1.0, key=jax.random.key(0), input_cov=_random_psd(jax.random.key(1), d_in))
    assert not np.allclose(task.input_cov, np.eye(d_in))
    net = lo.DeepLinear((d_in, d_out))
    W0 = net.init(jax.random.key(2), scale=0.3)
    ck = [1, 10, 57, n]
    run = lo.pretrain(net, W0, task, lr=lr, checkpoints=ck)
    A, S = np.asarray(task.teacher), np.asarray(task.input_cov)
    P = np.asarray(W0[0])
    got = {}
    for k in range(1, n + 1):
        P = P - lr * (P - A) @ S
        got[k] = P.copy()
    for i, k in enumerate(ck):
        np.testing.assert_allclose(run.weights[0][i], got[k], rtol=1e-10, atol=1e-12 * np.abs(A).max())
        loss = 0.5 * np.trace((got[k] - A) @ S @ (got[k] - A).T)
        np.testing.assert_allclose(run.loss[i], loss, rtol=1e-10)


def _chain_rule_grads(Ws, G):
    """dL/dW_l = (W_L..W_{l+1})^T G (W_{l-1}..W_1)^T for dL/dP = G (independent of jax.grad)."""
    L = len(Ws)
    out = []
    for l in range(L):
        left = np.eye(Ws[-1].shape[0])
        for W in Ws[l + 1:][::-1]:
            left = left @ W
        right = np.eye(Ws[0].shape[1])
        for W in Ws[:l]:
            right = W @ right
        out.append(left.T @ G @ right.T)
    return out


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    finite=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_training_gradient_is_grad_of_documented_loss(widths, finite, seed):
    # One GD step at lr = 1 recovers the gradient as W0 - W1; compare with the analytic chain rule
    # of the documented loss and with jax.grad of that loss written here from scratch.
    keys = jax.random.split(jax.random.key(seed), 5)
    d_in, d_out = widths[0], widths[-1]
    cov = _random_psd(keys[0], d_in)
    A = jax.random.normal(keys[1], (d_out, d_in))
    task = lo.Task(teacher=A, input_cov=cov, noise=0.1)
    objective = task.sample(13, keys[2]) if finite else task
    net = lo.DeepLinear(tuple(widths))
    W0 = net.init(keys[3], scale=0.5)
    # a step of lr 1 from scale 0.5 may raise the loss far past the divergence limit; this test is about
    # the gradient, so the limit is lifted (divergence itself is tested in test_bad_input.py)
    run = lo.pretrain(net, W0, objective, lr=1.0, checkpoints=[1], divergence_factor=1e200)
    step = [np.asarray(w0) - np.asarray(w[0]) for w0, w in zip(W0, run.weights)]

    Ws = [np.asarray(w) for w in W0]
    P = np.asarray(lo.networks.end_to_end(W0))
    if finite:
        X, Y = np.asarray(objective.x), np.asarray(objective.y)
        G = (P @ X.T - Y.T) @ X / X.shape[0]

        def loss(ws):
            R = lo.networks.end_to_end(ws) @ X.T - Y.T
            return 0.5 * jnp.sum(R**2) / X.shape[0]
    else:
        G = (P - np.asarray(A)) @ np.asarray(cov)

        def loss(ws):
            D = lo.networks.end_to_end(ws) - A
            return 0.5 * jnp.trace(D @ cov @ D.T) + 0.5 * 0.1 * d_out

    analytic = _chain_rule_grads(Ws, G)
    autodiff = jax.grad(loss)(tuple(W0))
    for s, a, g in zip(step, analytic, autodiff):
        # float64 round-off of recovering g as W0 - (W0 - g) is ~1e-16 * max(|W0|, |g|); 1e-12 leaves
        # room for the different summation orders of the three computations
        tol = 1e-12 * (1 + max(np.abs(w).max() for w in Ws) + np.abs(a).max())
        np.testing.assert_allclose(s, a, atol=tol)
        np.testing.assert_allclose(np.asarray(g), a, atol=tol)


def test_checkpoints_equal_separate_runs_bitwise():
    task = lo.tasks.power_law(6, 5, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((6, 4, 5))
    W0 = net.init(jax.random.key(1), scale=0.1, seeds=2)
    ck = [3, 17, 40, 100]
    run = lo.pretrain(net, W0, task, lr=0.2, checkpoints=ck)
    for i, k in enumerate(ck):
        single = lo.pretrain(net, W0, task, lr=0.2, checkpoints=[k])
        for a, b in zip(run.weights, single.weights):
            assert np.array_equal(np.asarray(a[i]), np.asarray(b[0])), f"checkpoint {k} differs"
        assert np.array_equal(np.asarray(run.loss[i]), np.asarray(single.loss[0]))


def test_minibatch_checkpoints_equal_separate_runs_bitwise():
    # SGD batches are drawn from (key, step), so they do not depend on the checkpoint grid.
    task = lo.tasks.power_law(5, 4, 1.0, key=jax.random.key(0))
    data = task.sample(50, jax.random.key(1))
    net = lo.DeepLinear((5, 3, 4))
    W0 = net.init(jax.random.key(2), scale=0.2)
    run = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[5, 30], batch_size=8, key=jax.random.key(3))
    single = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[30], batch_size=8, key=jax.random.key(3))
    assert np.array_equal(np.asarray(run.weights[1][1]), np.asarray(single.weights[1][0]))
    other = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[30], batch_size=8, key=jax.random.key(4))
    assert not np.array_equal(np.asarray(other.weights[1][0]), np.asarray(single.weights[1][0]))


@pytest.fixture(scope="module")
def sweep():
    task = lo.tasks.power_law(8, 8, 1.0, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, "additive", 0.3, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((8, 8, 8))
    W0 = net.init(jax.random.key(2), scale=1e-2)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(3000, 48))
    return task, ft, net, run


def test_finetune_one_compilation_matches_loop(sweep, count_compiles):
    task, ft, net, run = sweep
    lrs = (0.01, 0.03, 0.1)
    before = _program._cache_size()
    res = lo.finetune(net, run, ft, lr=lrs, steps=50)
    assert _program._cache_size() == before + 1  # 48 checkpoints x 3 lrs: one compiled program
    with count_compiles() as c:  # new values, same shapes: nothing recompiles
        lo.finetune(net, run, ft, lr=(0.02, 0.04, 0.05), steps=60)
    assert c["n"] == 0
    assert res.pretrain_loss_after.shape == (48, 3)
    for i in range(0, 48, 7):
        one = lo.PretrainResult(steps=run.steps[i:i + 1], loss=run.loss[i:i + 1],
                                weights=tuple(w[i:i + 1] for w in run.weights), task=task, lr=run.lr)
        for r, lr in enumerate(lrs):
            ref = lo.finetune(net, one, ft, lr=lr, steps=50)
            # different batch shapes may reorder float64 sums: round-off level only
            np.testing.assert_allclose(res.pretrain_loss_after[i, r], ref.pretrain_loss_after[0, 0], rtol=1e-10)
            np.testing.assert_allclose(res.finetune_loss_after[i, r], ref.finetune_loss_after[0, 0], rtol=1e-10)


def test_finetune_equals_manual_gd_with_l2(sweep):
    # GD on L_ft + lam/2 sum ||W - W0||^2 written out by hand for one checkpoint.
    task, ft, net, run = sweep
    i, lr, lam, n = 30, 0.05, 0.7, 25
    res = lo.finetune(net, run, ft, lr=lr, steps=n, l2=lam, return_weights=True, record_every=5)
    W0 = [np.asarray(w[i]) for w in run.weights]
    W = [w.copy() for w in W0]
    A, S = np.asarray(ft.teacher), np.asarray(ft.input_cov)
    for _ in range(n):
        G = (W[1] @ W[0] - A) @ S
        g0, g1 = W[1].T @ G + lam * (W[0] - W0[0]), G @ W[0].T + lam * (W[1] - W0[1])
        W = [W[0] - lr * g0, W[1] - lr * g1]
    np.testing.assert_allclose(res.weights[0][i, 0], W[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(res.weights[1][i, 0], W[1], rtol=1e-10, atol=1e-13)
    P = W[1] @ W[0]
    np.testing.assert_allclose(res.pretrain_loss_after[i, 0], task.loss(P), rtol=1e-10)
    np.testing.assert_allclose(res.finetune_loss_trajectory[i, 0, -1], ft.loss(P), rtol=1e-10)
    assert res.record_steps.tolist() == [5, 10, 15, 20, 25]
    np.testing.assert_allclose(res.forgetting[i, 0], task.loss(P) - run.loss[i], rtol=1e-9)


def test_seed_axis_layout():
    task = lo.tasks.power_law(6, 6, 1.0, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, "rotate", 0.2, key=jax.random.key(1))
    net = lo.DeepLinear((6, 6, 6))
    W0 = net.init(jax.random.key(2), scale=1e-2, seeds=3)
    run = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[10, 100, 400])
    assert run.loss.shape == (3, 3) and run.weights[0].shape == (3, 3, 6, 6)
    res = lo.finetune(net, run, ft, lr=(0.01, 0.1), steps=20)
    assert res.pretrain_loss_after.shape == (3, 2, 3)
    # entry [c, r, s] is seed s's checkpoint c fine-tuned at lr r
    single = lo.pretrain(net, tuple(w[1] for w in W0), task, lr=0.1, checkpoints=[10, 100, 400])
    one = lo.finetune(net, single, ft, lr=(0.01, 0.1), steps=20)
    np.testing.assert_allclose(res.pretrain_loss_after[:, :, 1], one.pretrain_loss_after, rtol=1e-10)


def test_weight_decay_and_optax_optimizer():
    import optax

    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((4, 4))
    W0 = net.init(jax.random.key(1), scale=0.1)
    lam, lr = 0.3, 0.1
    run = lo.pretrain(net, W0, task, lr=lr, checkpoints=[40], weight_decay=lam)
    P, A = np.asarray(W0[0]), np.asarray(task.teacher)
    for _ in range(40):
        P = P - lr * ((P - A) + lam * P)
    np.testing.assert_allclose(run.weights[0][0], P, rtol=1e-10)
    adam = lo.pretrain(net, W0, task, lr=1e-2, checkpoints=[200], optimizer=optax.adam)
    assert adam.loss[0] < run.loss[0] * 10  # adam also trains (sanity) ...
    ref = lo.pretrain(net, W0, task, lr=1e-2, checkpoints=[200], optimizer=optax.adam(1e-2))
    np.testing.assert_array_equal(adam.weights[0], ref.weights[0])  # ... and factory == instance


def test_keep_weights_false_only_metrics():
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((4, 4, 4))
    W0 = net.init(jax.random.key(1), scale=0.1)
    full = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5, 50])
    lite = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5, 50], keep_weights=False)
    assert lite.weights is None
    np.testing.assert_array_equal(full.loss, lite.loss)
    with pytest.raises(ValueError, match="keep_weights"):
        lo.finetune(net, lite, task, lr=0.1, steps=5)


def test_pretrain_divergence_raises_with_step():
    task = lo.tasks.power_law(5, 5, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((5, 5, 5))
    W0 = net.init(jax.random.key(1), scale=0.5)
    with pytest.raises(lo.errors.DivergenceError, match="diverged at step") as err:
        lo.pretrain(net, W0, task, lr=5.0, checkpoints=[10, 1000])
    assert err.value.step is not None and 0 <= err.value.step < 1000


def test_finetune_divergence_is_marked_not_nan():
    task = lo.tasks.power_law(5, 5, 1.0, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, "additive", 0.2, key=jax.random.key(3), scale="absolute")
    net = lo.DeepLinear((5, 5, 5))
    W0 = net.init(jax.random.key(1), scale=1e-2)
    run = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[10, 500])
    with pytest.warns(lo.errors.DivergenceWarning, match=r"checkpoint step 500 at lr=5"):
        res = lo.finetune(net, run, ft, lr=(0.05, 5.0), steps=200, record_every=10)
    assert not bool(res.diverged[:, 0].any())
    assert bool(res.diverged[1, 1])
    assert int(res.diverged_step[1, 1]) >= 0
    assert np.isnan(res.pretrain_loss_after[1, 1]) and np.isfinite(res.pretrain_loss_after[:, 0]).all()
    # the trajectory is kept up to the divergence and NaN from there on
    traj, k = np.asarray(res.finetune_loss_trajectory[1, 1]), int(res.diverged_step[1, 1])
    assert np.isfinite(traj[res.record_steps < k]).all() and np.isnan(traj[res.record_steps >= k]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo.finetune(net, run, ft, lr=0.05, steps=20)  # healthy runs warn nothing


def test_same_key_same_bits_and_different_key_differs():
    task = lo.tasks.power_law(5, 5, 1.0, key=jax.random.key(0))
    data = task.sample(40, jax.random.key(9))
    net = lo.DeepLinear((5, 5, 5))
    a = net.init(jax.random.key(1), scale=0.1, seeds=2)
    b = net.init(jax.random.key(1), scale=0.1, seeds=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    r1 = lo.pretrain(net, a, data, lr=0.1, checkpoints=[20], batch_size=4, key=jax.random.key(5))
    r2 = lo.pretrain(net, b, data, lr=0.1, checkpoints=[20], batch_size=4, key=jax.random.key(5))
    np.testing.assert_array_equal(r1.weights[0], r2.weights[0])
    t1 = lo.tasks.shifted(task, "subspace", 0.1, key=jax.random.key(3), rank=2, scale="absolute")
    t2 = lo.tasks.shifted(task, "subspace", 0.1, key=jax.random.key(3), rank=2, scale="absolute")
    np.testing.assert_array_equal(t1.teacher, t2.teacher)
    np.testing.assert_array_equal(t1.input_cov, t2.input_cov)


def test_pretrain_values_do_not_recompile(count_compiles):
    net = lo.DeepLinear((6, 6, 6))
    task = lo.tasks.power_law(6, 6, 1.0, key=jax.random.key(0))
    W0 = net.init(jax.random.key(1), scale=1e-2)
    lo.pretrain(net, W0, task, lr=0.05, checkpoints=[10, 20, 40])
    # optimisers of lo.optimizers carry traced hyperparameters: one program per kind, new values reuse it
    optimizers = (lo.optimizers.Momentum, lo.optimizers.Adam, lambda v: lo.optimizers.SAM(v / 10, base=lo.optimizers.Momentum(v)))
    for make in optimizers:
        lo.pretrain(net, W0, task, lr=0.01, checkpoints=[10, 20, 40], optimizer=make(0.9))
    task2 = lo.tasks.power_law(6, 6, 2.0, key=jax.random.key(7))
    W1 = net.init(jax.random.key(2), scale=1e-2)
    before = _program._cache_size()
    with count_compiles() as c:
        lo.pretrain(net, W1, task2, lr=0.07, checkpoints=[5, 50, 400], weight_decay=0.01)
        for make in optimizers:
            lo.pretrain(net, W1, task2, lr=0.02, checkpoints=[5, 50, 400], optimizer=make(0.5), weight_decay=0.01)
    assert c["n"] == 0 and _program._cache_size() == before
