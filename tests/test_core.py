"""Tasks, networks, checkpoint grids, results I/O and argument validation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import linoverfit as lo


# ----------------------------------------------------------------------------- tasks

def test_power_law_spectrum_and_orthogonality():
    task = lo.tasks.power_law(9, 6, alpha=1.5, key=jax.random.key(0), scale=2.0)
    np.testing.assert_allclose(task.spectrum, 2.0 * np.arange(1, 7) ** -1.5, rtol=1e-12)
    geo = lo.tasks.geometric(5, 5, ratio=0.5, key=jax.random.key(0))
    np.testing.assert_allclose(geo.spectrum, 0.5 ** np.arange(5), rtol=1e-12)


def test_shift_kinds_do_what_they_say():
    key = jax.random.key(1)
    task = lo.tasks.power_law(10, 8, 1.0, key=jax.random.key(0))
    U, s, Vt = task.svd()
    rot = lo.tasks.shifted(task, "rotate", 0.3, key=key)
    np.testing.assert_allclose(rot.spectrum, s, rtol=1e-10)  # rotations keep singular values
    Ur, _, Vtr = rot.svd()
    # the top right singular vector turns by exactly 0.3 rad within its rotation plane
    cos = abs(float(Vt[0] @ Vtr[0]))
    assert abs(np.arccos(min(cos, 1.0)) - 0.3) < 1e-8
    add = lo.tasks.shifted(task, "additive", 0.5, key=key, scale="absolute")
    G = np.asarray(add.teacher - task.teacher)
    assert abs(G.std() * np.sqrt(10) / 0.5 - 1) < 0.2  # entries N(0, size^2/d_in), 80 samples
    sub = lo.tasks.shifted(task, "subspace", 0.1, key=key, rank=3, scale="absolute")
    ev = np.linalg.eigvalsh(np.asarray(sub.input_cov))
    np.testing.assert_allclose(ev[-3:], 1.0, atol=1e-10)
    np.testing.assert_allclose(ev[:-3], 0.0, atol=1e-10)
    spec = lo.tasks.shifted(task, "spectrum", key=key, spectrum=np.linspace(2, 1, 8))
    np.testing.assert_allclose(spec.spectrum, np.linspace(2, 1, 8), rtol=1e-10)
    Us, _, Vts = spec.svd()
    np.testing.assert_allclose(np.abs(np.sum(Us * U, 0)), 1.0, atol=1e-8)  # same singular vectors


def _same_task(a, b):
    return all(np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f))) for f in ("teacher", "input_cov", "noise"))


@settings(max_examples=12, deadline=None)
@example(d_in=32, d_out=32, size=0.1, kind="additive", seed=0)
@example(d_in=256, d_out=256, size=0.1, kind="additive", seed=0)
@example(d_in=256, d_out=256, size=0.5, kind="subspace", seed=1)
@example(d_in=2, d_out=1, size=1e-9, kind="additive", seed=1)  # CI's falsifying example: round-off of B - A
@example(d_in=256, d_out=256, size=1e-12, kind="additive", seed=3)
@given(d_in=st.sampled_from([2, 5, 32, 64, 256]), d_out=st.sampled_from([1, 3, 32, 256]),
       size=st.floats(0.0, 3.0), kind=st.sampled_from(["additive", "subspace"]), seed=st.integers(0, 2**20))
def test_relative_shift_size_is_the_same_at_every_width(d_in, d_out, size, kind, seed):
    """``shifted(kind="additive" | "subspace", size=)`` moves the teacher by ``size`` times its own
    Frobenius norm (the default, ``scale="relative"``): ||B - A||_F / ||A||_F = size at widths 32 and
    256 alike (issue 20: the absolute convention gave 0.45x at width 32 and 1.24x at width 256).
    ``scale="absolute"`` is the old draw, bit for bit, in the same direction."""
    task = lo.tasks.power_law(d_in, d_out, 1.0, key=jax.random.key(seed))
    A = np.asarray(task.teacher, np.float64)
    key = jax.random.key(seed + 1)
    rel = lo.tasks.shifted(task, kind, size, key=key, rank=1)
    # B = A + D is rounded entrywise (error <= eps/2 |B_ij|), so B - A carries an absolute error up to
    # eps ||B||_F ~ eps (1 + size) ||A||_F: the bound, with a factor 4, is the absolute tolerance, and it
    # dominates at tiny sizes (size 1e-9 leaves only ~7 correct digits of B - A)
    rounding = 4 * np.finfo(np.float64).eps * (1 + size) * np.linalg.norm(A)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(rel.teacher) - A), size * np.linalg.norm(A),
                               rtol=1e-12, atol=rounding)
    assert _same_task(rel, lo.tasks.shifted(task, kind, size, key=key, rank=1, scale="relative"))  # the default
    old = lo.tasks.shifted(task, kind, size, key=key, rank=1, scale="absolute")
    k1, _ = jax.random.split(key)  # the draw before 0.2.0: entries N(0, size^2 / d_in)
    want = task.teacher + jax.random.normal(k1, task.teacher.shape, task.teacher.dtype) * (size / np.sqrt(d_in))
    np.testing.assert_array_equal(np.asarray(old.teacher), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(old.input_cov), np.asarray(rel.input_cov))
    if size > 0:  # one direction, two lengths
        d_rel, d_old = np.asarray(rel.teacher) - A, np.asarray(old.teacher) - A
        # each unit vector is off by at most (that rounding) / its length, which exceeds 1e-9 below size ~1e-7
        atol = 1e-9 + 2 * rounding / min(np.linalg.norm(d_rel), np.linalg.norm(d_old))
        np.testing.assert_allclose(d_rel / np.linalg.norm(d_rel), d_old / np.linalg.norm(d_old), atol=atol)


def test_shift_scale_is_checked_and_named():
    task = lo.tasks.power_law(6, 6, 1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="scale must be one of"):
        lo.tasks.shifted(task, "additive", 0.1, key=1, scale="percent")
    zero = lo.Task(teacher=jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="scale='absolute'"):
        lo.tasks.shifted(zero, "additive", 0.1, key=1)
    assert float(jnp.abs(lo.tasks.shifted(zero, "additive", 0.1, key=1, scale="absolute").teacher).max()) > 0
    # rotations (an angle) and spectrum shifts (a log factor) are relative already: scale changes nothing
    for kind in ("rotate", "spectrum"):
        assert _same_task(lo.tasks.shifted(task, kind, 0.2, key=1, scale="absolute"), lo.tasks.shifted(task, kind, 0.2, key=1))


def test_population_and_sample_loss_agree_in_expectation():
    task = lo.tasks.power_law(4, 3, 1.0, key=jax.random.key(0), noise=0.2)
    P = jax.random.normal(jax.random.key(1), (3, 4))
    data = task.sample(200_000, jax.random.key(2))
    # sample mean of 2e5 iid losses: relative standard error ~ sqrt(2/2e5) ~ 3e-3; allow 5x
    np.testing.assert_allclose(data.loss(P), task.loss(P), rtol=1.5e-2)


# ----------------------------------------------------------------------------- networks

@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=6), seed=st.integers(0, 1000))
def test_balanced_init_is_exactly_balanced(widths, seed):
    net = lo.DeepLinear(tuple(widths))
    W = net.init(jax.random.key(seed), scale=0.3, scheme="balanced")
    for l in range(net.depth - 1):
        np.testing.assert_allclose(W[l + 1].T @ W[l + 1], W[l] @ W[l].T, atol=1e-12)
    assert W[0].shape == (widths[1], widths[0])


def test_aligned_init_starts_every_mode_at_scale_to_the_depth():
    task = lo.tasks.power_law(6, 5, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((6, 8, 7, 5))
    W = net.init(jax.random.key(1), scale=0.2, scheme="aligned", task=task)
    U, s, Vt = task.svd()
    P = lo.networks.end_to_end(W)
    np.testing.assert_allclose(U.T @ P @ Vt.T, 0.2**3 * np.eye(5), atol=1e-12)


def test_gaussian_init_scale_and_seeds():
    net = lo.DeepLinear((50, 40, 30))
    W = net.init(jax.random.key(0), scale=1e-3, seeds=3)
    assert W[0].shape == (3, 40, 50) and W[1].shape == (3, 30, 40)
    assert abs(float(jnp.std(W[0])) / 1e-3 - 1) < 0.05
    assert not np.array_equal(W[0][0], W[0][1])


# ----------------------------------------------------------------------------- checkpoints

def test_log_checkpoints_exact_count_and_ends():
    ck = lo.log_checkpoints(32768, 48)
    assert len(ck) == 48 and ck[0] == 1 and ck[-1] == 32768 and np.all(np.diff(ck) > 0)
    r = np.diff(np.log(ck[20:]))  # log-spaced once rounding stops mattering
    assert r.std() < 0.05 * r.mean()
    assert lo.log_checkpoints(10, 10).tolist() == list(range(1, 11))
    assert lo.linear_checkpoints(100, 4).tolist() == [25, 50, 75, 100]


# ----------------------------------------------------------------------------- results I/O

def test_save_load_bit_identical(tmp_path):
    task = lo.tasks.power_law(5, 4, 1.0, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, "additive", 0.3, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((5, 3, 4))
    run = lo.pretrain(net, net.init(jax.random.key(2), 0.1, seeds=2), task, lr=0.1, checkpoints=[3, 30])
    fr = lo.finetune(net, run, ft, lr=(0.01, 0.1), steps=10, record_every=5)
    sens = lo.sensitivity.gaussian(net, run, gamma=0.1, samples=8, key=jax.random.key(3))
    for res in (run, fr, sens):
        path = res.save(tmp_path / type(res).__name__)
        assert path.suffix == ".npz" and path.exists()
        back = type(res).load(path)
        for name, value in res.to_dict().items():
            got = getattr(back, name)
            if isinstance(value, tuple):
                for a, b in zip(value, got):
                    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
            elif isinstance(value, lo.Task):
                assert np.asarray(value.teacher).tobytes() == np.asarray(got.teacher).tobytes()
            elif value is None or isinstance(value, (int, float, str)):
                assert value == got
            else:
                assert value.dtype == np.asarray(got).dtype and value.tobytes() == np.asarray(got).tobytes(), name
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic: no temp files left
    with pytest.raises(ValueError, match="PretrainResult"):
        lo.FinetuneResult.load(tmp_path / "PretrainResult.npz")
    # reloaded results are usable by the API
    back = lo.PretrainResult.load(tmp_path / "PretrainResult.npz")
    again = lo.finetune(net, back, ft, lr=(0.01, 0.1), steps=10)
    np.testing.assert_array_equal(again.pretrain_loss_after, fr.pretrain_loss_after)


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    key = jax.random.key(0)
    task = lo.tasks.power_law(4, 3, key=key)
    net = lo.DeepLinear((4, 5, 3))
    W0 = net.init(key, 0.1)
    with pytest.raises(ValueError, match="depth"):
        lo.DeepLinear((4,))
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        lo.DeepLinear((4, 0, 3))
    with pytest.raises(ValueError, match="task maps 4 -> 3"):
        lo.pretrain(lo.DeepLinear((5, 3)), lo.DeepLinear((5, 3)).init(key), task, lr=0.1, checkpoints=[1])
    with pytest.raises(ValueError, match=r"W0\[1\]"):
        lo.pretrain(net, (W0[0], W0[1][:, :2]), task, lr=0.1, checkpoints=[1])
    with pytest.raises(ValueError, match="input_cov must be square"):
        lo.Task(teacher=np.ones((3, 4)), input_cov=np.ones((4, 3)))
    with pytest.raises(ValueError, match="input_cov must be positive semi-definite"):
        lo.Task(teacher=np.ones((3, 4)), input_cov=np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="input_cov must be symmetric"):
        lo.Task(teacher=np.ones((3, 4)), input_cov=np.eye(4) + np.triu(np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match="teacher contains NaN"):
        lo.Task(teacher=np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="input_cov contains NaN"):
        lo.Task(teacher=np.ones((1, 2)), input_cov=np.array([[1.0, 0], [0, np.inf]]))
    for bad in (0.0, -0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="lr"):
            lo.pretrain(net, W0, task, lr=bad, checkpoints=[1])
    with pytest.raises(ValueError, match="checkpoints must not be empty"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[])
    with pytest.raises(ValueError, match="strictly increasing"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5, 3])
    with pytest.raises(ValueError, match=r"W0\[0\] contains NaN"):
        lo.pretrain(net, (W0[0] * np.nan, W0[1]), task, lr=0.1, checkpoints=[1])
    run = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[1, 2])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        lo.finetune(net, run, task, lr=0.1, steps=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        lo.finetune(net, run, task, lr=(0.1, -1.0), steps=3)
    with pytest.raises(ValueError, match="lr must not be empty"):
        lo.finetune(net, run, task, lr=(), steps=3)
    with pytest.raises(ValueError, match="l2"):
        lo.finetune(net, run, task, lr=0.1, steps=3, l2=-1.0)
    with pytest.raises(ValueError, match="record_every"):
        lo.finetune(net, run, task, lr=0.1, steps=10, record_every=3)
    with pytest.raises(ValueError, match="batch_size needs a finite-sample Dataset"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[1], batch_size=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        lo.tasks.shifted(task, "twist", 0.1, key=key)
    with pytest.raises(ValueError, match="scheme must be one of"):
        net.init(key, 0.1, scheme="orthogonal")
    with pytest.raises(ValueError, match="needs task="):
        net.init(key, 0.1, scheme="aligned")
    with pytest.raises(ValueError, match="n .* is more than"):
        lo.log_checkpoints(10, 11)


def test_float32_default_path_runs_in_float32():
    task = lo.tasks.power_law(6, 6, 1.0, key=jax.random.key(0), dtype=jnp.float32)
    net = lo.DeepLinear((6, 6, 6))
    W0 = net.init(jax.random.key(1), 1e-2, dtype=jnp.float32)
    run = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[10, 100])
    assert run.weights[0].dtype == jnp.float32 and run.loss.dtype == jnp.float32
    assert float(run.loss[1]) < float(run.loss[0])
