"""Learning-rate schedules, momentum / Adam / SAM, online SGD and task mixtures in pre-training."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.objective import online_batch as _online_batch
from linoverfit.sweeps import _program


def _aligned(width=8, scale=0.1, alpha=1.0):
    task = lo.tasks.power_law(width, width, alpha, key=jax.random.key(0))
    net = lo.DeepLinear((width, width, width))
    return task, net, net.init(jax.random.key(1), scale=scale, scheme="aligned", task=task)


# ----------------------------------------------------------------------------- schedules


def test_schedule_time_is_cumulative_lr_and_constant_schedule_is_constant_lr():
    task, net, W0 = _aligned()
    ck = [1, 7, 50, 300]
    sched = optax.warmup_cosine_decay_schedule(0.0, 0.05, 20, 300)
    run = lo.pretrain(net, W0, task, lr=sched, checkpoints=ck)
    lrs = np.array([float(sched(k)) for k in range(300)])
    # t_k = sum_{j<k} eta_j (eta_0 = 0 in a warmup from 0, so t_1 = 0)
    np.testing.assert_allclose(run.t, [lrs[:k].sum() for k in ck], rtol=1e-12, atol=1e-15)
    assert run.t[0] == 0.0 and run.lr == pytest.approx(lrs.max())
    # a schedule that is constant takes the steps of the constant rate (update x 1.0); the other
    # compiled program may fuse the arithmetic differently: float64 round-off over 300 steps only
    const = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck)
    flat = lo.pretrain(net, W0, task, lr=lambda k: 0.05, checkpoints=ck)
    for a, b in zip(const.weights, flat.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(flat.t, const.t, rtol=1e-13)  # a float64 cumulative sum of 300 terms
    # fine-tuning results carry the schedule's time
    ft = lo.finetune(net, run, lo.tasks.shifted(task, "additive", 0.1, key=jax.random.key(2), scale="absolute"), lr=0.01, steps=5)
    np.testing.assert_array_equal(ft.t, run.t)
    # and so do sensitivity results (issue 17: SensitivityResult.t once ignored the schedule and gave
    # lr * steps), measured and predicted alike
    sens = lo.sensitivity.gaussian(net, run, gamma=0.01, samples=4, key=3)
    np.testing.assert_array_equal(sens.t, run.t)
    assert not np.allclose(sens.t, run.lr * np.asarray(ck))  # the bug's value differs here
    pred = lo.theory.gaussian(net, run, gamma=0.01)
    np.testing.assert_array_equal(pred.t, run.t)


def test_bad_schedules_are_rejected():
    task, net, W0 = _aligned()
    with pytest.raises(ValueError, match="lr schedule must give finite"):
        lo.pretrain(net, W0, task, lr=lambda k: -0.1 + 0 * k, checkpoints=[5])
    with pytest.raises(ValueError, match="0 at every step"):
        lo.pretrain(net, W0, task, lr=lambda k: 0.0 * k, checkpoints=[5])


def _perturbed(run, task, gamma):
    """Exact E L(W + gamma E) at every checkpoint (no Monte Carlo): lo.theory.expected_perturbed_loss."""
    return np.asarray(lo.theory.expected_perturbed_loss(run.weights, task, gamma=gamma))[..., 0]  # one gamma: (C[, S], 1)


def test_constant_and_cosine_schedules_agree_in_t_and_match_theory():
    # Acceptance 1: full-batch GD at small lr, aligned init (where the mode theory is exact for the
    # flow). In t = cumulative lr both runs follow the same flow; GD's discretisation error is
    # O(eta * sigma_max) relative in each mode's time (eta <= 0.01, sigma_max = 1), which moves the
    # perturbed loss by ~0.5% where a mode is mid-transition (measured: 1.1% at twice these rates).
    task, net, W0 = _aligned(width=8, scale=0.1)
    gamma, n = 0.03, 8000
    const = lo.pretrain(net, W0, task, lr=0.005, checkpoints=lo.log_checkpoints(n, 40, first=20))
    cosine = optax.cosine_decay_schedule(0.01, n)  # same total t = 40 (every mode learnt), lr decays to 0
    ck = lo.log_checkpoints(n, 120, first=10)
    cos = lo.pretrain(net, W0, task, lr=cosine, checkpoints=ck)
    assert cos.t[-1] == pytest.approx(const.t[-1], rel=1e-3)
    f_const, f_cos = _perturbed(const, task, gamma), _perturbed(cos, task, gamma)
    # the cosine curve, interpolated (log t) onto the constant run's times inside its range
    inside = (const.t >= cos.t[0]) & (const.t <= cos.t[-1])
    f_cos_at = np.interp(np.log(const.t[inside]), np.log(cos.t), f_cos)
    assert np.max(np.abs(f_cos_at / f_const[inside] - 1)) < 0.01
    s0 = 0.1**2
    for run, f in ((const, f_const), (cos, f_cos)):
        pred = lo.theory.curves.perturbed_loss_curve(task, run.t, gamma, widths=net, s0=s0)[:, 0]
        assert np.max(np.abs(f / pred - 1)) < 0.01


# ----------------------------------------------------------------------------- optimisers


def test_optimizer_specs_equal_their_optax_counterparts():
    task, net, W0 = _aligned(width=5, scale=0.3)
    ck = [3, 20]
    pairs = [
        (lo.optimizers.Momentum(0.8), lambda lr: optax.sgd(lr, momentum=0.8), 0.05),
        (lo.optimizers.Adam(0.85, 0.99, 1e-7), lambda lr: optax.adam(lr, 0.85, 0.99, 1e-7), 1e-2),
        ("gd", None, 0.05),
    ]
    for spec, factory, lr in pairs:
        a = lo.pretrain(net, W0, task, lr=lr, checkpoints=ck, optimizer=spec)
        b = lo.pretrain(net, W0, task, lr=lr, checkpoints=ck, optimizer=factory)
        for x, y in zip(a.weights, b.weights):
            # same arithmetic up to operation order inside optax (momentum: trace + scale(-lr) vs sgd)
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


def test_finetune_accepts_momentum_adam_and_sam_like_pretrain():
    """Issue 17: lo.finetune takes the optimizers lo.pretrain takes; each equals an independent loop
    of the optax transformation on the fine-tuning loss plus the layer pull."""
    task, net, W0 = _aligned(width=5, scale=0.3)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=[5, 20])
    ft = lo.tasks.shifted(task, "rotate", 0.3, key=jax.random.key(2))
    lr, steps, l2 = 0.02, 6, 0.1
    cases = [
        (lo.optimizers.Momentum(0.8), optax.sgd(lr, momentum=0.8), 1),
        (lo.optimizers.Adam(0.85, 0.99, 1e-7), optax.adam(lr, 0.85, 0.99, 1e-7), 1),
        # SAM: optax.contrib.sam alternates an adversarial and an outer call per step
        (lo.optimizers.SAM(0.05), optax.contrib.sam(optax.sgd(lr), optax.chain(optax.contrib.normalize(),
                                                                            optax.sgd(0.05)), sync_period=2), 2),
    ]
    for spec, tx, calls in cases:
        got = lo.finetune(net, run, ft, lr=lr, steps=steps, l2=l2, optimizer=spec, return_weights=True)
        for c in range(2):
            W0c = tuple(jnp.asarray(w[c]) for w in run.weights)

            def objective(W, W0c=W0c):
                pull = 0.5 * l2 * sum(jnp.sum((w - w0) ** 2) for w, w0 in zip(W, W0c))
                return ft.loss(lo.networks.end_to_end(W)) + pull

            W, state = W0c, tx.init(W0c)
            for _ in range(calls * steps):
                updates, state = tx.update(jax.grad(objective)(W), state, W)
                W = optax.apply_updates(W, updates)
            for a, b in zip(W, got.weights):
                # float64 round-off of the same updates over 6 steps (operation order inside optax)
                np.testing.assert_allclose(b[c, 0], a, rtol=1e-11, atol=1e-13)


def test_sam_is_optax_contrib_sam_and_rho_zero_is_gd():
    task = lo.tasks.power_law(5, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((5, 3, 4))
    W0 = net.init(jax.random.key(1), scale=0.3)
    rho, lr, n = 0.05, 0.1, 7
    run = lo.pretrain(net, W0, task, lr=lr, checkpoints=[n], optimizer=lo.optimizers.SAM(rho))
    # optax.contrib.sam alternates an adversarial (normalised ascent) call and an outer call
    tx = optax.contrib.sam(optax.sgd(lr), optax.chain(optax.contrib.normalize(), optax.sgd(rho)), sync_period=2)
    W, state = tuple(W0), None
    state = tx.init(W)
    loss = lambda w: task.loss(lo.networks.end_to_end(w))  # noqa: E731
    for _ in range(2 * n):
        updates, state = tx.update(jax.grad(loss)(W), state, W)
        W = optax.apply_updates(W, updates)
    for a, b in zip(W, run.weights):
        np.testing.assert_allclose(b[0], a, rtol=1e-12, atol=1e-14)  # float64 round-off over 7 steps
    gd = lo.pretrain(net, W0, task, lr=lr, checkpoints=[n])
    sam0 = lo.pretrain(net, W0, task, lr=lr, checkpoints=[n], optimizer=lo.optimizers.SAM(0.0))
    for a, b in zip(gd.weights, sam0.weights):
        np.testing.assert_array_equal(a, b)


def test_momentum_follows_the_flow_in_rescaled_time():
    # Heavy ball with beta: in the flow limit W' = -grad L / (1 - beta), i.e. the GD flow in t / (1 - beta).
    # The transient of the momentum buffer lasts ~1/(1-beta) = 2 steps; the second-order term of the
    # heavy-ball modified equation is (1+beta)/(1-beta) = 3 times GD's at the same effective rate
    # eta/(1-beta) = 0.01 (GD there: ~1% where a mode is mid-transition), so 4% on the perturbed loss.
    # Without the 1/(1-beta) the curves would be off by far more than that (a factor 2 in time).
    task, net, W0 = _aligned(width=6, scale=0.1)
    beta, lr = 0.5, 0.005
    run = lo.pretrain(net, W0, task, lr=lr, checkpoints=lo.log_checkpoints(12000, 30, first=50),
                      optimizer=lo.optimizers.Momentum(beta))
    pred = lo.theory.curves.perturbed_loss_curve(task, run.t / (1 - beta), 0.03, widths=net, s0=0.01)[:, 0]
    assert np.max(np.abs(_perturbed(run, task, 0.03) / pred - 1)) < 0.04


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="beta must be < 1"):
        lo.optimizers.Momentum(1.0)
    with pytest.raises(ValueError, match="rho"):
        lo.optimizers.SAM(-0.1)
    with pytest.raises(TypeError, match="SAM\\(base=...\\)"):
        lo.optimizers.SAM(0.1, base=lo.optimizers.SAM(0.1))
    task, net, W0 = _aligned(width=4)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[2], optimizer="lion")


def test_new_optimizer_and_schedule_values_do_not_recompile(count_compiles):
    task, net, W0 = _aligned(width=6, scale=0.1)
    ck = [10, 40]
    specs = [lambda v: lo.optimizers.Momentum(v), lambda v: lo.optimizers.Adam(b1=v),
             lambda v: lo.optimizers.SAM(0.01 * v, base=lo.optimizers.Momentum(v))]
    for make in specs:
        lo.pretrain(net, W0, task, lr=0.01, checkpoints=ck, optimizer=make(0.9))
        before = _program._cache_size()
        with count_compiles() as c:
            lo.pretrain(net, W0, task, lr=0.02, checkpoints=ck, optimizer=make(0.5))
        assert c["n"] == 0 and _program._cache_size() == before, make(0.5)
    lo.pretrain(net, W0, task, lr=optax.cosine_decay_schedule(0.05, 40), checkpoints=ck)
    before = _program._cache_size()
    with count_compiles() as c:  # another schedule of the same length: new values only
        lo.pretrain(net, W0, task, lr=optax.cosine_decay_schedule(0.03, 40, alpha=0.1), checkpoints=ck)
    assert c["n"] == 0
    # another kind of schedule evaluates new (eager) ops on the host, but the training program is reused
    lo.pretrain(net, W0, task, lr=optax.linear_schedule(0.05, 0.01, 40), checkpoints=ck)
    assert _program._cache_size() == before


# ----------------------------------------------------------------------------- online SGD


def test_online_sgd_bitwise_reproducible_and_checkpoint_independent():
    task = lo.tasks.power_law(5, 4, 1.0, key=jax.random.key(0), noise=0.1)
    net = lo.DeepLinear((5, 3, 4))
    W0 = net.init(jax.random.key(2), scale=0.2)
    kw = dict(lr=0.05, batch_size=8, online=True)
    run = lo.pretrain(net, W0, task, checkpoints=[5, 30], key=jax.random.key(3), **kw)
    again = lo.pretrain(net, W0, task, checkpoints=[5, 30], key=jax.random.key(3), **kw)
    single = lo.pretrain(net, W0, task, checkpoints=[30], key=jax.random.key(3), **kw)
    other = lo.pretrain(net, W0, task, checkpoints=[30], key=jax.random.key(4), **kw)
    for a, b, c in zip(run.weights, again.weights, single.weights):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[1], c[0])  # samples come from (key, step), not the grid
    assert not np.array_equal(np.asarray(other.weights[0][0]), np.asarray(single.weights[0][0]))
    np.testing.assert_array_equal(run.samples_seen, [40, 240])
    with pytest.raises(ValueError, match=r"online=True\) needs a Task"):
        lo.pretrain(net, W0, task, lr=0.05, checkpoints=[5], online=True)


def test_online_samples_have_the_task_distribution():
    # x ~ N(0, Sigma), y - A x ~ N(0, noise I): 20000 draws, entries of the covariance estimates
    # have standard error <= sqrt(2/n) * max variance ~ 0.01 * 3; 6 standard errors as bound.
    d = 4
    G = jax.random.normal(jax.random.key(5), (d, d))
    cov = G @ G.T / d + 0.2 * jnp.eye(d)
    task = lo.Task(teacher=jax.random.normal(jax.random.key(6), (3, d)), input_cov=cov, noise=0.3)
    n = 20000
    x, y = _online_batch(task, task.input_sqrt(), jax.random.key(7), 11, n)
    x, r = np.asarray(x), np.asarray(y - x @ task.teacher.T)
    se = np.sqrt(2 / n) * float(np.max(np.diag(cov)))
    np.testing.assert_allclose(x.T @ x / n, cov, atol=6 * se)
    np.testing.assert_allclose(r.T @ r / n, 0.3 * np.eye(3), atol=6 * np.sqrt(2 / n) * 0.3)
    assert abs(float(np.mean(x @ np.ones(d)))) < 6 * np.sqrt(float(jnp.sum(cov)) / n)


def test_online_sgd_with_large_batches_approaches_gd():
    # The minibatch gradient is unbiased with variance ~ 1/B: at B = 4096 the run stays within a few
    # % of full-batch GD on the population loss (a loose bound; it fails if samples were biased).
    task, net, W0 = _aligned(width=6, scale=0.1)
    ck = [200, 2000]
    gd = lo.pretrain(net, W0, task, lr=0.02, checkpoints=ck)
    sgd = lo.pretrain(net, W0, task, lr=0.02, checkpoints=ck, batch_size=4096, online=True, key=1)
    np.testing.assert_allclose(np.asarray(sgd.loss)[0], np.asarray(gd.loss)[0], rtol=0.05)


# ----------------------------------------------------------------------------- mixtures


@settings(max_examples=15, deadline=None)
@given(rho=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), same_cov=st.booleans())
def test_mixture_loss_equals_mixed_losses(rho, seed, same_cov):
    k = jax.random.split(jax.random.key(seed), 5)
    d_in, d_out = 4, 3

    def cov(key):
        G = jax.random.normal(key, (d_in, d_in))
        return G @ G.T / d_in + 0.3 * jnp.eye(d_in)

    c1 = cov(k[0])
    a = lo.Task(teacher=jax.random.normal(k[1], (d_out, d_in)), input_cov=c1, noise=0.2)
    b = lo.Task(teacher=jax.random.normal(k[2], (d_out, d_in)), input_cov=c1 if same_cov else cov(k[3]), noise=0.05)
    m = lo.tasks.mixture(a, b, rho)
    P = jax.random.normal(k[4], (5, d_out, d_in))
    want = (1 - rho) * a.loss(P) + rho * b.loss(P)
    # float64 round-off of the rewritten quadratic (a solve with a covariance of condition < 100)
    np.testing.assert_allclose(m.loss(P), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.grad(P), (1 - rho) * a.grad(P) + rho * b.grad(P), rtol=1e-9, atol=1e-11)


def test_mixture_at_zero_is_the_task_even_with_a_singular_covariance():
    """rho = 0 returns the task itself: no solve, so a singular covariance (zero input variance on
    some features, Feng et al.'s specialised features) is fine (issue 18)."""
    a = lo.Task(teacher=jnp.eye(3), input_cov=jnp.diag(jnp.array([1.0, 1.0, 0.0])))
    b = lo.Task(teacher=-jnp.eye(3))
    assert lo.tasks.mixture(a, b, 0.0) is a
    with pytest.raises(ValueError, match="singular"):  # rho > 0 with this pair: the mixture is singular
        lo.tasks.mixture(a, lo.Task(teacher=-jnp.eye(3), input_cov=jnp.diag(jnp.array([1.0, 0.0, 0.0]))), 0.5)


def test_mixture_rejects_bad_input():
    a = lo.Task(teacher=jnp.eye(2))
    with pytest.raises(ValueError, match="rho must be in"):
        lo.tasks.mixture(a, a, 1.5)
    with pytest.raises(ValueError, match="same teacher shape"):
        lo.tasks.mixture(a, lo.Task(teacher=jnp.eye(3)), 0.5)
    with pytest.raises(TypeError, match="other must be a linoverfit Task"):
        lo.tasks.mixture(a, a.teacher, 0.5)


def test_above_the_edge_constant_lr_ends_on_a_period_two_orbit_that_the_exact_map_predicts():
    """Past the stability edge eta * sigma_1 = 1 of a depth-2 balanced minimum (multiplier 1 - 2 eta sigma_1 of
    the mode map), constant-lr GD does not converge: mode 1 alternates on a period-2 orbit, which
    lo.theory.pretrain's exact per-mode map reproduces (round-off of float32 GD on an attracting orbit:
    measured ~1e-6 relative); a cosine decay from the same peak crosses back below the edge and settles
    (loss ~0). Just below the edge (0.9) both settle."""
    task = lo.tasks.power_law(6, 6, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((6, 6, 6))
    W0 = net.init(jax.random.key(1), scale=0.05, scheme="aligned", task=task)
    n = 600
    for frac, orbit in ((0.9, False), (1.1, True)):
        sim = lo.pretrain(net, W0, task, lr=frac, checkpoints=[n - 1, n])
        with pytest.warns(lo.theory.PastEdgeWarning) if orbit else contextlib.nullcontext():
            th = lo.theory.pretrain(net, W0, task, lr=frac, checkpoints=[n - 1, n])
        np.testing.assert_allclose(np.asarray(sim.loss), np.asarray(th.loss), rtol=1e-4, atol=1e-9)
        sharp = np.asarray(lo.theory.sharpness(sim.weights, task))
        decayed = lo.pretrain(net, W0, task, lr=optax.cosine_decay_schedule(frac, n), checkpoints=[n])
        assert float(decayed.loss[-1]) < 1e-8
        if orbit:
            assert float(sim.loss[-1]) > 1e-3 and abs(sharp[0] - sharp[1]) > 0.5  # alternates: 2.74 / 1.33
        else:
            assert float(sim.loss[-1]) < 1e-8 and abs(sharp[0] - sharp[1]) < 1e-3
