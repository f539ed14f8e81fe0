"""Issue 11: nothing silent, nothing raw. Divergence on every step, 64-bit step counts, one dtype
policy, one key check, memory estimates, and a table of bad inputs that must each raise a clear
linoverfit error naming the argument."""

import subprocess
import sys
import textwrap
import traceback
import warnings

import jax
import optax
import jax.numpy as jnp
import numpy as np
import pytest

import linoverfit as lo
from linoverfit import validation as _v


@pytest.fixture(scope="module")
def setup():
    key = jax.random.key(0)
    task = lo.tasks.power_law(4, 4, 1.0, key=key)
    ft = lo.tasks.shifted(task, "additive", 0.3, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((4, 4, 4))
    W0 = net.init(jax.random.key(2), 0.3)
    run = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5, 50])
    data = task.sample(16, jax.random.key(3))
    return task, ft, net, W0, run, data


# ----------------------------------------------------------------------------- divergence


def _last_step_case(dtype):
    # From this init, GD at lr = 3 on ``ft`` keeps the losses before each of the 5 updates below
    # the explosion limit (1e4 x 0.82: 0.82, 0.79, 0.51, 1.5, 5e2) and explodes after the 5th
    # (4e10): only a check after the last update sees it.
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0), dtype=dtype)
    ft = lo.tasks.shifted(task, "additive", 0.3, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((4, 4, 4))
    W = net.init(jax.random.key(2), 0.02, dtype=dtype)
    return task, ft, net, W


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_divergence_at_the_last_step_is_reported(dtype):
    task, ft, net, W = _last_step_case(dtype)
    with pytest.raises(lo.errors.DivergenceError, match="diverged at step 5") as err:
        lo.pretrain(net, W, ft, lr=3.0, checkpoints=[5])
    assert err.value.step == 5 and err.value.checkpoint == 0
    run0 = lo.pretrain(net, W, task, lr=0.1, checkpoints=[0])
    with pytest.warns(lo.errors.DivergenceWarning, match=r"lr=3 \(step 5\)"):
        res = lo.finetune(net, run0, ft, lr=3.0, steps=5)
    assert bool(res.diverged[0, 0]) and int(res.diverged_step[0, 0]) == 5
    assert np.isnan(res.finetune_loss_after[0, 0])
    # the same run one step shorter is healthy: the check is exactly at the last update
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = lo.finetune(net, run0, ft, lr=3.0, steps=4)
    assert np.isfinite(ok.finetune_loss_after[0, 0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_divergence_in_one_huge_step_is_reported(dtype, setup):
    task, ft, net, W0, run, _ = setup
    W = tuple(jnp.asarray(w, dtype) for w in W0)
    with pytest.raises(lo.errors.DivergenceError, match="diverged at step 1"):
        lo.pretrain(net, W, task, lr=1e20, checkpoints=[1])
    run_d = lo.pretrain(net, W, task, lr=0.1, checkpoints=[5, 50])
    with pytest.warns(lo.errors.DivergenceWarning):
        res = lo.finetune(net, run_d, ft, lr=1e20, steps=1, record_every=1)
    assert bool(np.all(res.diverged)) and np.all(np.asarray(res.diverged_step) == 1)
    assert np.all(np.isnan(res.finetune_loss_trajectory))


def test_sensitivity_overflow_warns_naming_gamma(setup):
    """A gamma whose perturbation alone overflows the dtype is refused at the boundary, naming the largest
    usable gamma; one that passes it but whose perturbed loss (~gamma^(2L)) overflows is computed and
    warned about by name (inf/NaN in the result)."""
    task, ft, net, W0, _, _ = setup
    W = tuple(jnp.asarray(w, jnp.float32) for w in W0)
    run32 = lo.pretrain(net, W, task, lr=0.1, checkpoints=[5])
    with pytest.raises(ValueError, match="gamma=1e\\+20 overflows float32.*use a gamma below"):
        lo.sensitivity.gaussian(net, run32, gamma=(0.1, 1e20), samples=4, key=0)
    with pytest.warns(lo.sensitivity.NonFiniteWarning, match="gamma=1e\\+14"):
        lo.sensitivity.gaussian(net, run32, gamma=(0.1, 1e14), samples=4, key=0)


# ----------------------------------------------------------------------------- step counts


def test_step_counters_follow_x64(setup):
    assert jnp.dtype(_v.step_dtype()) == jnp.int64  # conftest turns x64 on
    task, ft, net, W0, run, _ = setup
    # the compiled loops count steps in int64 (their first-bad-step output carries the counter type)
    one_run = lo.pretraining.PretrainRun(make_opt=optax.sgd, batch_size=None, keep_weights=False, identity=False,
                                         online=False)
    shared = lambda s: (task, jnp.asarray(0.1), jnp.asarray(0.0), s, s[0], jnp.asarray(1e4), None, None, None, None)  # noqa: E731
    out = jax.eval_shape(lambda s: one_run((tuple(W0), jax.random.key(0)), shared(s)),
                         jnp.asarray([2**32 + 3], jnp.int64))
    assert out[2].dtype == jnp.int64
    res = lo.finetune(net, run, ft, lr=0.1, steps=3)
    assert res.diverged_step.dtype == jnp.int64


def test_minibatch_keys_beyond_2_32_steps_are_distinct():
    key = jax.random.key(7)
    low = lo.objective.step_key(key, jnp.asarray(3, jnp.int64))
    assert np.array_equal(jax.random.key_data(low), jax.random.key_data(jax.random.fold_in(key, 3)))
    high = lo.objective.step_key(key, jnp.asarray(2**32 + 3, jnp.int64))
    assert not np.array_equal(jax.random.key_data(low), jax.random.key_data(high))


X32_STEPS = """
import jax, linoverfit as lo
assert not jax.config.jax_enable_x64
task = lo.tasks.power_law(4, 4, key=0); net = lo.DeepLinear((4, 4)); W = net.init(1, 0.1)
run = lo.pretrain(net, W, task, lr=0.1, checkpoints=[2])
for call, name in ((lambda: lo.pretrain(net, W, task, lr=1e-9, checkpoints=[2**32 + 3]), "checkpoints"),
                   (lambda: lo.pretrain(net, W, task, lr=1e-9, checkpoints=[2**31]), "checkpoints"),
                   (lambda: lo.finetune(net, run, task, lr=1e-9, steps=2**31), "steps")):
    try:
        call()
    except ValueError as err:
        assert name in str(err) and "2147483647" in str(err) and "jax_enable_x64" in str(err), err
    else:
        raise AssertionError(name + " wrapped around silently")
# toggling x64 between building the inputs and training: one working dtype per call
jax.config.update("jax_enable_x64", True)
r = lo.pretrain(net, W, task, lr=0.1, checkpoints=[3]); assert r.loss.dtype == "float32"
ft = lo.tasks.power_law(4, 4, key=2)  # float64 task, float32 weights: cast to the weights'
f = lo.finetune(net, run, ft, lr=0.1, steps=3); assert f.finetune_loss_after.dtype == "float32"
W64 = net.init(1, 0.1); run64 = lo.pretrain(net, W64, ft, lr=0.1, checkpoints=[2])
jax.config.update("jax_enable_x64", False)
r = lo.pretrain(net, W64, ft, lr=0.1, checkpoints=[3]); assert r.loss.dtype == "float32"
f = lo.finetune(net, run64, task, lr=0.1, steps=3); assert f.finetune_loss_after.dtype == "float32"
print("OK")
"""


def test_x32_step_limits_and_x64_toggling_in_a_fresh_process():
    # a fresh interpreter: 64-bit mode off at start (the test session has it on)
    p = subprocess.run([sys.executable, "-c", X32_STEPS], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]


# ----------------------------------------------------------------------------- keys


def test_keys_accepted_everywhere(setup):
    task, ft, net, W0, run, data = setup
    for k in (3, np.int64(3), np.uint32(3), jax.random.key(3), jax.random.PRNGKey(3)):
        t = lo.tasks.power_law(4, 4, key=k)
        assert np.array_equal(t.teacher, lo.tasks.power_law(4, 4, key=jax.random.key(3)).teacher)
        net.init(k, 0.1)
        lo.pretrain(net, W0, data, lr=0.1, checkpoints=[2], batch_size=4, key=k)
        lo.finetune(net, run, data, lr=0.1, steps=2, batch_size=4, key=k)
        lo.sensitivity.gaussian(net, run, gamma=0.1, samples=4, key=k)


@pytest.mark.parametrize("bad", [None, "abc", 1.5, True, -1, 2**32, np.random.default_rng(0),
                                 jax.random.split(jax.random.key(0), 3)])
def test_bad_keys_rejected_everywhere(setup, bad):
    task, ft, net, W0, run, data = setup
    calls = {
        "power_law": lambda: lo.tasks.power_law(4, 4, key=bad),
        "shifted": lambda: lo.tasks.shifted(task, key=bad),
        "sample": lambda: task.sample(3, key=bad),
        "init": lambda: net.init(bad, 0.1),
        "pretrain": lambda: lo.pretrain(net, W0, data, lr=0.1, checkpoints=[2], batch_size=4, key=bad),
        "finetune": lambda: lo.finetune(net, run, data, lr=0.1, steps=2, batch_size=4, key=bad),
        "gaussian": lambda: lo.sensitivity.gaussian(net, run, gamma=0.1, samples=4, key=bad),
    }
    for name, call in calls.items():
        with pytest.raises((TypeError, ValueError), match="key") as err:
            call()
        _assert_raised_by_linoverfit(err.value, name)


def test_full_batch_gd_needs_no_key(setup):
    task, ft, net, W0, run, data = setup
    a = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[3])
    b = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[3], key=5)  # unused by full-batch GD
    np.testing.assert_array_equal(a.loss, b.loss)


# ----------------------------------------------------------------------------- the table


def _assert_raised_by_linoverfit(err, what):
    frames = traceback.extract_tb(err.__traceback__)
    assert "/linoverfit/" in frames[-1].filename, f"{what}: raised from {frames[-1].filename}: {err}"
    assert "JAX" not in str(err), f"{what}: JAX internals in the message: {err}"


def _table(task, ft, net, W0, run, data):
    c = 1 + 1j
    return [
        # (case, call, error type, the words the message must contain)
        ("complex teacher", lambda: lo.Task(teacher=np.ones((3, 4)) * c), TypeError, "teacher"),
        ("complex input_cov", lambda: lo.Task(teacher=np.ones((3, 4)), input_cov=np.eye(4) * c), TypeError, "input_cov"),
        ("complex Dataset x", lambda: lo.Dataset(x=np.ones((5, 4)) * c, y=np.ones((5, 4))), TypeError, "x"),
        ("complex weights", lambda: lo.pretrain(net, tuple(w * c for w in W0), task, lr=0.1, checkpoints=[2]),
         TypeError, r"W0\[0\]"),
        ("int weights", lambda: lo.pretrain(net, tuple(np.ones((4, 4), int) for _ in W0), task, lr=0.1, checkpoints=[2]),
         TypeError, r"W0\[0\].*float"),
        ("bool weights", lambda: lo.pretrain(net, tuple(np.ones((4, 4), bool) for _ in W0), task, lr=0.1, checkpoints=[2]),
         TypeError, r"W0\[0\]"),
        ("float16 weights", lambda: lo.pretrain(net, tuple(np.asarray(w, np.float16) for w in W0), task, lr=0.1,
                                                checkpoints=[2]), TypeError, r"W0\[0\].*float16"),
        ("float16 run weights", lambda: lo.finetune(net, lo.PretrainResult(
            steps=run.steps, loss=run.loss, weights=tuple(np.asarray(w, np.float16) for w in run.weights),
            task=task, lr=0.1), ft, lr=0.1, steps=2), TypeError, r"run.weights\[0\]"),
        ("(0, 4) teacher", lambda: lo.Task(teacher=np.ones((0, 4))), ValueError, "teacher must have at least one row"),
        ("set of widths", lambda: lo.DeepLinear({4, 5, 3}), TypeError, "widths must be an ordered sequence"),
        ("dict of widths", lambda: lo.DeepLinear({4: 1, 5: 2}), TypeError, "widths"),
        ("chunk=0 pretrain", lambda: lo.pretrain(net, W0, task, lr=0.1, checkpoints=[2], layout=lo.Layout(chunk=0)), ValueError, "chunk"),
        ("chunk=0 finetune", lambda: lo.finetune(net, run, ft, lr=0.1, steps=2, layout=lo.Layout(chunk=0)), ValueError, "chunk"),
        ("chunk=1.5 sensitivity", lambda: lo.sensitivity.gaussian(net, run, samples=4, key=0, layout=lo.Layout(chunk=1.5)), TypeError,
         "chunk"),
        ("gaussian_init_s0 modes=2.5", lambda: lo.theory.modes.gaussian_init_s0(0.1, (4, 4, 4), modes=2.5), TypeError, "modes"),
        ("perturbed_loss_curve gamma<0", lambda: lo.theory.curves.perturbed_loss_curve(
            task, np.geomspace(1, 100, 5), -0.1, widths=(4, 4, 4), s0=1e-4), ValueError, "gamma"),
        ("perturbation_threshold overflow", lambda: lo.theory.turning.perturbation_threshold(1e100, (4, 4, 4, 4, 4)),
         ValueError, "gamma"),
        ("minibatch SGD without key", lambda: lo.pretrain(net, W0, data, lr=0.1, checkpoints=[2], batch_size=4),
         TypeError, "key is required for minibatch SGD"),
        ("minibatch fine-tuning without key", lambda: lo.finetune(net, run, data, lr=0.1, steps=2, batch_size=4),
         TypeError, "key is required for minibatch SGD"),
        ("power_law 10**5 x 10**5", lambda: lo.tasks.power_law(10**5, 10**5, key=0), lo.errors.MemoryBudgetError,
         "d_in=100000"),
    ]


def test_bad_input_table(setup):
    for case, call, etype, words in _table(*setup):
        with pytest.raises(etype, match=words) as err:
            call()
        _assert_raised_by_linoverfit(err.value, case)


def test_perturbation_threshold_scales_exactly_for_every_gamma():
    # sigma*(gamma) = gamma^L sigma*(1) exactly (every term of Delta carries gamma^(2L) once
    # sigma = gamma^L u); tiny gamma used to loop forever, huge gamma to give a solver NaN
    for widths in ((4, 4, 4, 4), (5, 7, 3, 6, 2)):
        L = len(widths) - 1
        one = float(lo.theory.turning.perturbation_threshold(1.0, widths))
        g = np.array([1e-60, 1e-50, 1e-3, 0.3, 1e50])
        got = lo.theory.turning.perturbation_threshold(g, widths)
        np.testing.assert_allclose(got, g**L * one, rtol=1e-12)
    # the depth-2 closed form gamma^2 (d_in + d_out) is the same law
    np.testing.assert_allclose(lo.theory.turning.perturbation_threshold(1e-80, (3, 5, 4)), 1e-160 * 7, rtol=1e-14)


# ----------------------------------------------------------------------------- memory


def test_finetune_indexes_its_start_points(setup):
    # the compiled sweep holds the C x S starting networks once: no (C * S * R)-sized weight array
    task, ft, net, W0, run, _ = setup
    lrs = jnp.linspace(0.01, 0.1, 7)
    one_run = lo.finetuning.FinetuneRun(make_opt=optax.sgd, batch_size=None, n_records=1, return_weights=False,
                                        identity=False)
    runs = (jnp.repeat(jnp.arange(2, dtype=jnp.int32), 7), jnp.tile(lrs, 2), jax.random.split(jax.random.key(0), 14))
    shared = (run.weights, ft, task, jnp.asarray(0.0), jnp.asarray(2), jnp.asarray(3), jnp.asarray(1e4), None)
    text = lo.sweeps._program.lower(runs, shared, np.int32(0), fn=one_run, mesh=None, chunk=4, parts=1,
                                    tick=True).as_text()
    assert "tensor<2x4x4xf64>" in text and "tensor<14x4x4xf64>" not in text  # 2 checkpoints, 7 lrs


def test_memory_estimate_refuses_early_and_names_the_option(setup, monkeypatch):
    task, ft, net, W0, run, _ = setup
    W50 = net.init(0, 0.1, seeds=50)  # 25.6 KB of weights: made before the (tiny) limit is set
    monkeypatch.setenv("LINOVERFIT_MEMORY_LIMIT", "20K")
    with pytest.raises(lo.errors.MemoryBudgetError, match="return_weights=False") as err:
        lo.finetune(net, run, ft, lr=np.linspace(0.01, 0.1, 50), steps=2, return_weights=True)
    assert "2 checkpoints x 1 seed(s) x 50 learning rate(s)" in str(err.value) and err.value.needed > 20 * 1024
    with pytest.raises(lo.errors.MemoryBudgetError, match="keep_weights=False"):
        lo.pretrain(net, W50, task, lr=0.1, checkpoints=lo.log_checkpoints(100, 50))
    with pytest.raises(lo.errors.MemoryBudgetError, match="fewer samples"):
        lo.sensitivity.gaussian(net, run, samples=5000, key=0)
    monkeypatch.setenv("LINOVERFIT_MEMORY_LIMIT", "off")
    lo.finetune(net, run, ft, lr=np.linspace(0.01, 0.1, 50), steps=2, return_weights=True)


def test_available_memory_is_read():
    avail = lo.memory.available_bytes()
    assert avail is None or avail > 0


# ----------------------------------------------------------------------------- issue 20: nothing silent


def test_newcomer_mistakes_get_named_errors(tmp_path):
    net = lo.DeepLinear((4, 4, 4))
    with pytest.raises(ValueError, match="include_zero=True gives only step 0.*n >= 2"):
        lo.linear_checkpoints(10, 1, include_zero=True)
    np.testing.assert_array_equal(lo.linear_checkpoints(10, 2, include_zero=True), [0, 10])  # the suggested fix
    for bad in (jnp.complex64, jnp.float16, jnp.int32):
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            net.init(0, dtype=bad)
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            lo.tasks.power_law(4, 4, key=0, dtype=bad)
    with pytest.raises(TypeError, match="teacher has dtype float16"):
        lo.Task(jnp.eye(3, dtype=jnp.float16))
    with pytest.raises(TypeError, match="x must be"):
        lo.Dataset(jnp.ones((3, 2), jnp.bfloat16), jnp.ones((3, 2)))
    (tmp_path / "notes.txt").write_text("not a result")
    with pytest.raises(lo.errors.ResultFileError, match="not a readable .npz result file.*Result.save"):
        lo.PretrainResult.load(tmp_path / "notes.txt")


def test_weights_too_large_to_allocate_are_refused_before_jax_aborts(monkeypatch):
    """A 4 TB init once aborted the whole process inside XLA; now the memory check refuses it."""
    monkeypatch.setenv("LINOVERFIT_MEMORY_LIMIT", "1G")
    with pytest.raises(lo.errors.MemoryBudgetError, match="net.init.*use smaller widths or fewer seeds"):
        lo.DeepLinear((100_000, 100_000, 100_000)).init(0)
    with pytest.raises(lo.errors.MemoryBudgetError, match="1000 seeds"):
        lo.DeepLinear((300, 300, 300)).init(0, seeds=1000)


def test_a_network_computing_something_else_is_refused_not_trained_as_linear():
    """Issue 20: a DeepLinear subclass applying tanh was trained as the linear network (reported loss
    3.9e-12 where its true loss was 0.026)."""
    class Tanh(lo.DeepLinear):
        def __call__(self, weights, x):
            return jnp.tanh(super().__call__(weights, x))

    task = lo.tasks.power_law(4, 4, key=0)
    net = Tanh((4, 4, 4))
    W0 = lo.DeepLinear((4, 4, 4)).init(0, scale=0.1)
    with pytest.raises(TypeError, match="Tanh, a DeepLinear subclass that overrides __call__"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5])
    run = lo.pretrain(lo.DeepLinear((4, 4, 4)), W0, task, lr=0.1, checkpoints=[5])
    with pytest.raises(TypeError, match="overrides __call__"):
        lo.finetune(net, run, task, lr=0.1, steps=2)
    with pytest.raises(TypeError, match="overrides __call__"):
        lo.sensitivity.gaussian(net, run, gamma=0.1, samples=2, key=0)

    class Plain(lo.DeepLinear):  # a subclass that computes the same thing is fine
        pass

    lo.pretrain(Plain((4, 4, 4)), W0, task, lr=0.1, checkpoints=[5])
