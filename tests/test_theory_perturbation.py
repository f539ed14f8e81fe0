"""lo.theory.perturbation: exact E[L(W + gamma E)] against subset enumeration and Monte Carlo
(docs/theory.md, section 2)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import linoverfit as lo
from linoverfit.theory import expected_perturbed_loss
from linoverfit.theory.perturbation import perturbation_coefficients, perturbation_sensitivity, sensitivity_from_spectrum


def _segment_norm(W, a, b, cov):
    """||W_{b-1} ... W_{a+1}||_F^2 between perturbed layers a < b (0-based layers, a = -1 is the input,
    b = L the output); the input segment carries Sigma; an empty segment is the identity of its width."""
    layers = range(a + 1, b)
    if not layers:
        return float(np.trace(cov)) if a == -1 else float(W[a].shape[0])
    M = np.eye(W[a + 1].shape[1])
    for l in layers:
        M = W[l] @ M
    return float(np.trace(M @ cov @ M.T)) if a == -1 else float(np.sum(M * M))


def _brute_force(W, A, cov, gamma, noise=0.0):
    """docs/design.md closed form 2 term by term: L(W) + 1/2 sum over every non-empty set of perturbed layers
    of gamma^(2|S|) times the product of its segment norms (2^L - 1 terms)."""
    L = len(W)
    P = np.linalg.multi_dot(W[::-1]) if L > 1 else W[0]
    D = P - A
    total = 0.5 * np.trace(D @ cov @ D.T) + 0.5 * noise * A.shape[0]
    for k in range(1, L + 1):
        for S in itertools.combinations(range(L), k):
            cuts = (-1,) + S + (L,)
            total += 0.5 * gamma ** (2 * k) * np.prod([_segment_norm(W, a, b, cov) for a, b in zip(cuts, cuts[1:])])
    return total


def _random_problem(rng, widths, cov_rank=None):
    W = [rng.normal(size=(widths[l + 1], widths[l])) / np.sqrt(widths[l]) for l in range(len(widths) - 1)]
    A = rng.normal(size=(widths[-1], widths[0]))
    X = rng.normal(size=(widths[0], cov_rank or widths[0]))
    return W, A, X @ X.T / X.shape[1]  # PSD, rank-deficient when cov_rank < d_in


# each new shape costs one XLA compilation (~0.5 s), so few random cases, plus every depth 1-5 explicitly
@settings(max_examples=10, deadline=None)
@example(widths=[3, 2], gamma=0.7, cov_rank=2, noise=0.1, seed=1)
@example(widths=[2, 5, 3], gamma=1.3, cov_rank=1, noise=0.0, seed=2)
@example(widths=[4, 1, 3, 2], gamma=0.2, cov_rank=4, noise=0.5, seed=3)
@example(widths=[2, 3, 4, 2, 3], gamma=0.9, cov_rank=3, noise=0.0, seed=4)
@example(widths=[3, 4, 2, 5, 1, 3], gamma=0.5, cov_rank=2, noise=0.2, seed=5)
@given(
    widths=st.lists(st.integers(1, 5), min_size=2, max_size=6),
    gamma=st.floats(0.0, 2.0),
    cov_rank=st.integers(1, 5),
    noise=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_equals_subset_enumeration(widths, gamma, cov_rank, noise, seed):
    """Depths 1-5, random widths, random (possibly singular) PSD Sigma, label noise."""
    W, A, cov = _random_problem(np.random.default_rng(seed), widths, cov_rank)
    got = float(expected_perturbed_loss(W, A, input_cov=cov, gamma=gamma, noise=noise)[0])  # one gamma: (1,)
    want = _brute_force(W, A, cov, gamma, noise)
    # two different float64 algorithms (covariance recursion vs explicit products) over at most
    # 2^5 positive terms of similar size: they agree to a few ulps of the total, far below 1e-12
    assert abs(got - want) <= 1e-12 * abs(want), (got, want)


def test_depth2_identity_covariance_formula():
    rng = np.random.default_rng(0)
    W1, W2 = rng.normal(size=(7, 5)), rng.normal(size=(3, 7))
    c = np.asarray(perturbation_coefficients((W1, W2)))
    np.testing.assert_allclose(c, [0.5 * (5 * np.sum(W2**2) + 3 * np.sum(W1**2)), 0.5 * 5 * 7 * 3], rtol=1e-13)


@pytest.mark.parametrize("widths", [(3, 4, 2), (2, 3, 3, 2), (3, 2, 4, 2, 3)])
def test_agrees_with_monte_carlo(widths):
    """10^5 perturbations: the exact value lies within 4 standard errors of the sample mean."""
    rng = np.random.default_rng(len(widths))
    W, A, cov = _random_problem(rng, widths)
    gamma, n = 0.3, 100_000
    task = lo.Task(teacher=A, input_cov=cov, noise=0.1)
    keys = jax.random.split(jax.random.key(0), len(W))
    E = [jax.random.normal(k, (n,) + w.shape, jnp.float64) for k, w in zip(keys, W)]
    P = lo.networks.end_to_end(tuple(jnp.asarray(w) + gamma * e for w, e in zip(W, E)))
    losses = np.asarray(task.loss(P))
    mean, se = losses.mean(), losses.std(ddof=1) / np.sqrt(n)
    exact = float(expected_perturbed_loss(W, task, gamma=gamma)[0])
    # the sample mean of 1e5 iid losses is normal to excellent accuracy (CLT); |z| > 4 has
    # probability 6e-5, and the keys are fixed, so this either always passes or always fails
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    # the band is narrow compared with the sensitivity itself, so the check can fail
    assert 4 * se < 0.2 * float(perturbation_sensitivity(W, gamma, cov)[0])


def test_batched_checkpoints_gamma_axis_jit_and_vmap():
    rng = np.random.default_rng(1)
    widths = (4, 5, 3)
    C, G = 6, 3
    W = [rng.normal(size=(C, widths[l + 1], widths[l])) for l in range(2)]
    A = rng.normal(size=(3, 4))
    gammas = jnp.array([0.0, 0.1, 0.5])
    out = expected_perturbed_loss(W, A, gamma=gammas)
    assert out.shape == (C, G)
    for c in range(C):
        for g in range(G):
            want = _brute_force([w[c] for w in W], A, np.eye(4), float(gammas[g]))
            np.testing.assert_allclose(out[c, g], want, rtol=1e-12)
    jitted = jax.jit(expected_perturbed_loss)(tuple(jnp.asarray(w) for w in W), A, gamma=gammas)
    np.testing.assert_allclose(jitted, out, rtol=1e-13)
    vm = jax.vmap(lambda g: perturbation_sensitivity(W, g))(gammas)  # (G, C, 1): each scalar keeps its axis
    assert vm.shape == (G, C, 1)
    np.testing.assert_allclose(vm[..., 0].T, out - out[:, :1], rtol=1e-12, atol=1e-12)


def test_matches_monte_carlo_engine_on_a_run():
    """The closed form and lo.sensitivity.gaussian estimate the same thing on pre-trained checkpoints."""
    task = lo.tasks.power_law(6, 5, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((6, 4, 4, 5))
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=0.1), task, lr=0.05, checkpoints=[10, 300, 3000])
    sens = lo.sensitivity.gaussian(net, run, gamma=(0.05, 0.2), samples=5000, key=jax.random.key(2))
    exact = perturbation_sensitivity(run.weights, jnp.array([0.05, 0.2]))
    z = (np.asarray(sens.sensitivity) - np.asarray(exact)) / np.asarray(sens.stderr)
    assert np.all(np.abs(z) < 4), z  # CLT, fixed keys (see test_agrees_with_monte_carlo)


@pytest.mark.parametrize("widths", [(3, 3), (4, 5, 3), (3, 6, 4, 5), (5, 3, 4, 3, 6)])
def test_spectrum_formula_equals_weight_space_for_balanced_aligned_weights(widths):
    rng = np.random.default_rng(3)
    L, k = len(widths) - 1, min(widths)
    s = np.sort(rng.uniform(0.0, 2.0, size=(4, k)))[:, ::-1]  # 4 spectra, a batch axis
    Q = [np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k] for n in widths]
    W = [np.einsum("ik,bk,jk->bij", Q[l + 1], s ** (1 / L), Q[l]) for l in range(L)]
    gammas = np.array([0.05, 0.3])
    np.testing.assert_allclose(sensitivity_from_spectrum(s, gammas, widths),
                               perturbation_sensitivity(W, gammas), rtol=1e-12)
    if L == 2:  # docs/design.md: gamma^2/2 (d_in + d_out) sum s + gamma^4/2 d_in h d_out
        d_in, h, d_out = widths
        want = 0.5 * gammas**2 * (d_in + d_out) * s.sum(-1, keepdims=True) + 0.5 * gammas**4 * d_in * h * d_out
        np.testing.assert_allclose(sensitivity_from_spectrum(s, gammas, widths), want, rtol=1e-13)


def test_bad_arguments_are_named():
    W = (np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="teacher"):
        expected_perturbed_loss(W, np.ones((3, 3)), gamma=0.1)
    with pytest.raises(ValueError, match="input_cov"):
        expected_perturbed_loss(W, np.ones((2, 3)), input_cov=-np.eye(3), gamma=0.1)
    with pytest.raises(ValueError, match="gamma"):
        perturbation_sensitivity(W, -0.1)
    with pytest.raises(TypeError, match="gamma"):
        expected_perturbed_loss(W, np.ones((2, 3)))
    with pytest.raises(ValueError, match="input_cov"):
        expected_perturbed_loss(W, lo.Task(teacher=np.ones((2, 3))), input_cov=np.eye(3), gamma=0.1)
    with pytest.raises(ValueError, match="weights"):
        perturbation_sensitivity((np.ones((2, 3)), np.ones((2, 5))), 0.1)
    with pytest.raises(ValueError, match="modes"):
        sensitivity_from_spectrum(np.ones(4), 0.1, (3, 5, 3))


def test_one_gamma_keeps_its_axis_in_theory_and_simulation():
    """One convention (issue 20): a noise scale passed as a scalar or as ``[gamma]`` is a gamma axis
    of length 1 in every theory function, as in ``lo.sensitivity.gaussian`` (``(C, 1)``, not ``(C,)``)."""
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((4, 4, 4))
    run = lo.pretrain(net, net.init(jax.random.key(1), scale=0.3, scheme="aligned", task=task), task, lr=0.05,
                      checkpoints=[10, 100, 1000])
    C, gamma = 3, 0.05
    sim = lo.sensitivity.gaussian(net, run, task, gamma=gamma, samples=8, key=jax.random.key(2))
    assert sim.sensitivity.shape == (C, 1)
    s = np.linalg.svd(np.asarray(run.end_to_end, np.float64), compute_uv=False)  # (C, M)
    for g in (gamma, [gamma], np.float32(gamma), jnp.asarray(gamma), jnp.asarray([gamma])):
        shapes = {
            "perturbation_sensitivity": perturbation_sensitivity(run.weights, g).shape,
            "expected_perturbed_loss": expected_perturbed_loss(run.weights, task, gamma=g).shape,
            "theory.gaussian": lo.theory.gaussian(net, run, task, gamma=g).sensitivity.shape,
            "sensitivity_from_spectrum": sensitivity_from_spectrum(s, g, net).shape,
            "perturbed_loss_curve": lo.theory.curves.perturbed_loss_curve(task, run.t, g, widths=net, s0=0.09).shape,
        }
        assert set(shapes.values()) == {(C, 1)}, (g, shapes)
    # a scalar and a one-entry list give the same numbers, and several scales the same per scale
    np.testing.assert_array_equal(perturbation_sensitivity(run.weights, gamma),
                                  perturbation_sensitivity(run.weights, [gamma]))
    two = expected_perturbed_loss(run.weights, task, gamma=[gamma, 0.1])
    np.testing.assert_array_equal(expected_perturbed_loss(run.weights, task, gamma=gamma)[:, 0], two[:, 0])
    assert lo.theory.curves.perturbed_loss_curve(task, 5.0, gamma, widths=net, s0=0.09).shape == (1,)  # t scalar


def test_expected_perturbed_loss_positional_arguments_are_deprecated(monkeypatch):
    """``input_cov``, ``gamma`` and ``noise`` are keyword-only; the old positional call works until
    0.3.0 with one DeprecationWarning that names the keywords (linoverfit.deprecation.keyword_only)."""
    import inspect
    import warnings

    from linoverfit import deprecation

    params = inspect.signature(expected_perturbed_loss).parameters
    assert [p.name for p in params.values() if p.kind is p.KEYWORD_ONLY] == ["input_cov", "gamma", "noise"]
    monkeypatch.setattr(deprecation, "_warned", set())
    W, A, cov = _random_problem(np.random.default_rng(0), (3, 4, 2), 3)
    want = expected_perturbed_loss(W, A, input_cov=cov, gamma=0.2, noise=0.1)
    with pytest.warns(DeprecationWarning) as record:
        old = expected_perturbed_loss(W, A, cov, 0.2, 0.1)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller's line
    message = str(record[0].message)
    assert "0.3.0" in message and "input_cov=" in message and "gamma=" in message and "noise=" in message
    np.testing.assert_array_equal(old, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(expected_perturbed_loss(W, A, cov, 0.2, 0.1), want)  # once per process
    with pytest.raises(TypeError, match="multiple values for argument 'input_cov'"):
        expected_perturbed_loss(W, A, cov, input_cov=cov, gamma=0.2)
    with pytest.raises(TypeError, match="positional"):
        expected_perturbed_loss(W, A, cov, 0.2, 0.1, 7)
