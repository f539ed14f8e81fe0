"""lo.theory.sharpness: Lanczos sharpness against the dense Hessian, the aligned closed form against
Lanczos, and the stability edge against gradient descent (docs/theory.md, section 7)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linoverfit as lo
from linoverfit.theory import PastEdgeWarning, sharpness, stability_edge
from linoverfit.theory.curvature import sharpness_from_spectrum


def _dense_top(W, task):
    """Top eigenvalue of the full Hessian (jax.hessian + eigvalsh): the reference."""
    shapes = [w.shape for w in W]
    cuts = np.cumsum([np.prod(s) for s in shapes])[:-1]

    def f(x):
        return task.loss(lo.networks.end_to_end([p.reshape(s) for p, s in zip(jnp.split(x, cuts), shapes)]))

    x = jnp.concatenate([jnp.ravel(w) for w in W])
    return np.linalg.eigvalsh(np.asarray(jax.hessian(f)(x)))[-1]


def _aligned(task, widths, s, rng):
    """Balanced aligned weights W_l = Q_l diag(s^(1/L)) Q_{l-1}^T with Q_0 = V, Q_L = U (random hidden bases)."""
    L, k = len(widths) - 1, min(widths)
    U, _, Vt = (np.asarray(x) for x in task.svd())
    Q = [Vt[:k].T] + [np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k] for n in widths[1:-1]] + [U[:, :k]]
    a = np.asarray(s) ** (1.0 / L)
    return tuple((Q[l + 1] * a) @ Q[l].T for l in range(L))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_lanczos_is_the_top_eigenvalue_of_the_hessian(depth):
    widths = (5,) + (7,) * (depth - 1) + (4,)
    task = lo.tasks.power_law(5, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear(widths)
    W = net.init(jax.random.key(1), scale=0.4, scheme="gaussian", seeds=2)  # generic: no structure
    got = sharpness(W, task)
    assert got.shape == (2,)
    want = [_dense_top(tuple(w[i] for w in W), task) for i in range(2)]
    # with iters = 96 >= n_params the Krylov basis spans everything: round-off only (measured 1e-15)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    if depth != 2:
        return
    # a Dataset loss and weight decay (+ lambda I)
    data = task.sample(50, key=jax.random.key(3))
    W0 = tuple(w[0] for w in W)
    np.testing.assert_allclose(sharpness(W0, data, weight_decay=0.1), _dense_top(W0, data) + 0.1, rtol=1e-10)


def test_lanczos_converges_below_full_dimension():
    """A 10-wide depth-3 net has 300 parameters; 96 Krylov steps reach the top eigenvalue to round-off."""
    task = lo.tasks.power_law(10, 10, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((10, 10, 10, 10))
    W = net.init(jax.random.key(1), scale=0.5, scheme="gaussian")
    top = _dense_top(W, task)
    # top Ritz value of a Krylov space converges like a Chebyshev polynomial in the gap; measured 1e-15
    np.testing.assert_allclose(sharpness(W, task), top, rtol=1e-10)
    assert sharpness(W, task, iters=8) <= top * (1 + 1e-12)  # a Ritz value never exceeds lambda_max


@pytest.mark.parametrize(
    "widths", [(6, 9, 4), (4, 7, 6), (5, 7, 6, 7, 4)], ids=lambda w: "x".join(map(str, w))
)
def test_closed_form_matches_lanczos_on_aligned_weights(widths):
    d_in, d_out = widths[0], widths[-1]
    k = min(widths)
    rng = np.random.default_rng(len(widths) * 10 + widths[1])
    task = lo.tasks.power_law(d_in, d_out, 1.0, key=jax.random.key(0))
    sigma = np.asarray(task.spectrum)[:k]
    cases = [rng.uniform(0.0, 1.3, size=k) * sigma,  # partly learnt, some overshoot
             sigma,                                  # the minimum
             np.full(k, 1e-4),                       # near the origin (residual terms dominate)
             np.concatenate([sigma[: k // 2], np.zeros(k - k // 2)])]  # staircase, rank deficient
    for s in cases:
        W = _aligned(task, widths, s, rng)
        closed = sharpness_from_spectrum(s, task, widths)
        # both are float64 eigenvalue computations of the same operator: round-off (measured <= 2e-15)
        np.testing.assert_allclose(closed, sharpness(W, task), rtol=1e-8)
    L = len(widths) - 1
    np.testing.assert_allclose(sharpness_from_spectrum(sigma, task, widths), L * sigma[0] ** (2 - 2 / L), rtol=1e-12)
    # batched spectra (checkpoints)
    batch = sharpness_from_spectrum(np.stack(cases[:2]), task, widths)
    np.testing.assert_allclose(batch, [sharpness_from_spectrum(c, task, widths) for c in cases[:2]], rtol=1e-14)


def test_closed_form_with_a_covariance_diagonal_in_the_teacher_basis():
    base = lo.tasks.power_law(5, 5, 1.0, key=jax.random.key(0))
    _, _, Vt = (np.asarray(x) for x in base.svd())
    lam = np.array([2.0, 0.5, 1.5, 0.2, 1.0])
    task = base.with_(input_cov=Vt.T @ np.diag(lam) @ Vt)
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, 5) * np.asarray(task.spectrum)
    for widths in [(5, 5, 5), (5, 6, 6, 5)]:
        W = _aligned(task, widths, s, rng)
        np.testing.assert_allclose(sharpness_from_spectrum(s, task, widths), sharpness(W, task), rtol=1e-8)
    rot = lo.tasks.shifted(base, "subspace", 0.0, key=jax.random.key(1), rank=2, scale="absolute")  # not diagonal in V
    with pytest.raises(ValueError, match="input_cov"):
        sharpness_from_spectrum(s, rot, (5, 5, 5))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gradient_descent_converges_below_the_edge_and_not_above(depth):
    """Start next to the minimum of a balanced aligned net: 0.9 x edge converges, 1.1 x edge leaves it."""
    d = 4
    task = lo.tasks.power_law(d, d, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((d,) * (depth + 1))
    W = _aligned(task, net.widths, np.asarray(task.spectrum), np.random.default_rng(0))
    edge = stability_edge(W, task)
    np.testing.assert_allclose(edge, 2.0 / (depth * 1.0 ** (2 - 2 / depth)), rtol=1e-10)  # sigma_1 = 1
    W0 = tuple(jnp.asarray(w) + 1e-3 * jax.random.normal(jax.random.key(i), w.shape) for i, w in enumerate(W))
    start = float(task.loss(lo.networks.end_to_end(W0)))
    below = lo.pretrain(net, W0, task, lr=0.9 * edge, checkpoints=[3000])
    assert float(below.loss[0]) < 1e-12 * start  # linear convergence at rate |1 - 0.9 * 2| = 0.8 per step
    if depth == 1:  # a quadratic: the top direction grows by |1 - 2.2| = 1.2 per step, to infinity
        with pytest.raises(lo.errors.DivergenceError):
            lo.pretrain(net, W0, task, lr=1.1 * edge, checkpoints=[3000])
    else:  # no minimum is flat enough (balanced is the flattest): GD settles on a period-2 orbit
        above = lo.pretrain(net, W0, task, lr=1.1 * edge, checkpoints=[2000, 3000])
        assert np.all(np.asarray(above.loss) > 1e3 * start)


def test_sharpness_of_a_run_and_bad_arguments():
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((4, 5, 4))
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=0.1, scheme="aligned", task=task), task, lr=0.05,
                      checkpoints=[0, 100, 1000])
    got = sharpness(run)
    assert got.shape == (3,)
    s = np.asarray(jnp.linalg.svd(run.end_to_end, compute_uv=False))
    np.testing.assert_allclose(got, sharpness_from_spectrum(s, task, net), rtol=1e-8)
    with pytest.raises(TypeError, match="task"):
        sharpness(run.weights)
    with pytest.raises(ValueError, match="task maps"):
        sharpness(run.weights, lo.tasks.power_law(3, 4, 1.0, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="s must"):
        sharpness_from_spectrum(np.ones(5), task, net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert issubclass(PastEdgeWarning, UserWarning)


def test_a_prediction_that_diverges_is_marked_not_raised():
    """GD far past the edge overflows inside the prediction: it is marked and warned about (its loss is
    NaN), never a raw linear-algebra error from the sharpness of a non-finite map."""
    task = lo.tasks.power_law(8, 8, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1), scale="absolute")
    with pytest.warns(PastEdgeWarning, match="stability edge"):
        pred = lo.theory.forgetting.predict_finetune(np.asarray(task.teacher), ft, lr=(0.01, 5.0), steps=200, depth=2,
                                          pretrain_task=task)
    assert pred.past_edge.tolist() == [False, True]
    after = np.asarray(pred.pretrain_loss_after)
    assert np.isfinite(after[0]) and not np.isfinite(after[1])


# ----------------------------------------------------------------------------- nonlinear networks


def _dense_top_net(net, lanes, data):
    """Top eigenvalue of the dense Hessian of the sample loss in every leaf of the params, for each lane
    of ``lanes`` (a params pytree with one leading axis): the reference, one compiled vmap."""
    from jax.flatten_util import ravel_pytree

    _, unravel = ravel_pytree(jax.tree.map(lambda w: w[0], lanes))
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(lanes)
    hess = jax.jit(jax.vmap(jax.hessian(lambda x: lo.objective.sample_loss(net, unravel(x), data.x, data.y))))
    return np.linalg.eigvalsh(np.asarray(hess(flat)))[:, -1]


def _mlp_data(d_in=6, d_out=4, n=20):
    x = jax.random.normal(jax.random.key(1), (n, d_in), jnp.float64)
    return lo.Dataset(x, jnp.tanh(x[:, :d_out] - 0.5 * x[:, d_out - 1::-1][:, :d_out]))


def _model_init(key):
    k1, k2 = jax.random.split(key)
    return {"W1": 0.7 * jax.random.normal(k1, (5, 6)), "b1": 0.1 * jnp.ones(5), "W2": 0.7 * jax.random.normal(k2, (4, 5))}


def _model_apply(p, x):
    return jnp.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_nonlinear_sharpness_is_the_top_eigenvalue_of_the_hessian(activation):
    """A nonlinear network's sharpness is the dense Hessian's top eigenvalue of its sample loss, for every
    lane of leading (checkpoint, seed) axes. 66 parameters < 96: the Krylov basis is the whole space,
    so the Rayleigh-Ritz value is exact up to round-off (1e-10 relative, float64)."""
    data = _mlp_data()
    net = lo.MLP((6, 5, 4, 4), activation)
    W = net.init(jax.random.key(2), scale=0.6, seeds=3, dtype=jnp.float64)
    W = tuple(jnp.stack([w, 1.3 * w]) for w in W)  # leading axes (2, 3)
    got = sharpness(W, data, net=net)
    assert got.shape == (2, 3)
    ref = _dense_top_net(net, tuple(w.reshape((6,) + w.shape[2:]) for w in W), data).reshape(2, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_sharpness_of_a_user_model_and_of_an_mlp_run():
    data = _mlp_data()
    model = lo.Model(_model_init, _model_apply, d_in=6, d_out=4)
    P = model.init(jax.random.key(3), seeds=2, dtype=jnp.float64)
    got = sharpness(P, data, net=model, weight_decay=0.25)
    np.testing.assert_allclose(got, _dense_top_net(model, P, data) + 0.25, rtol=1e-10)
    # a run carries its Dataset: sharpness(run, net=net), one value per checkpoint
    net = lo.MLP((6, 5, 4), "tanh")
    run = lo.pretrain(net, net.init(jax.random.key(4), scale=0.3, dtype=jnp.float64), data, lr=0.1,
                      checkpoints=[0, 20, 200])
    got = sharpness(run, net=net)
    np.testing.assert_allclose(got, _dense_top_net(net, run.weights, data), rtol=1e-10)


def test_nonlinear_sharpness_converges_below_full_dimension():
    """At F12's size (depth 3, width 16: 768 parameters) the default 96 Lanczos steps span a small part
    of the space; the top Ritz value still converges to the dense Hessian's top eigenvalue (measured
    agreement ~1e-14; 1e-8 leaves room for a start vector that converges more slowly, never for a
    wrong eigenvalue: the next one is well separated at these weights)."""
    x = jax.random.normal(jax.random.key(7), (64, 16), jnp.float64)
    data = lo.Dataset(x, jnp.tanh(x[:, ::-1]))
    net = lo.MLP((16, 16, 16, 16), "tanh")
    W = net.init(jax.random.key(8), scale=0.4, seeds=2, dtype=jnp.float64)
    got = sharpness(W, data, net=net)
    np.testing.assert_allclose(got, _dense_top_net(net, W, data), rtol=1e-8)


def test_identity_mlp_sharpness_is_the_deep_linear_one():
    data = _mlp_data()
    lin = lo.DeepLinear((6, 5, 4))
    W = lin.init(jax.random.key(5), scale=0.5, seeds=2, dtype=jnp.float64)
    np.testing.assert_array_equal(sharpness(W, data, net=lo.MLP((6, 5, 4), "identity")), sharpness(W, data))


def test_nonlinear_sharpness_refuses_a_population_task_and_wrong_params():
    net = lo.MLP((6, 5, 4), "tanh")
    W = net.init(jax.random.key(0), scale=0.3)
    task = lo.tasks.power_law(6, 4, 1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"population Task.*Dataset"):
        sharpness(W, task, net=net)
    with pytest.raises(ValueError, match="weights"):
        sharpness(W[:1], _mlp_data(), net=net)
    with pytest.raises(ValueError, match="maps"):
        sharpness(W, _mlp_data(d_in=5), net=net)
    stacked = net.init(jax.random.key(0), scale=0.3, seeds=2)
    with pytest.raises(ValueError, match="leaf 1 has leading"):
        sharpness((stacked[0], stacked[1][0]), _mlp_data(), net=net)
    with pytest.raises(TypeError, match=r"widths must be a deep linear network.*MLP\(activation='tanh'\)"):
        lo.theory.curvature.sharpness_from_spectrum(np.array([1.0, 0.5]), lo.tasks.power_law(2, 2, key=0),
                                                    lo.MLP((2, 2, 2), "tanh"))
