"""Nonlinear networks through the same calls (issue 19): lo.MLP, lo.Model, the Network protocol.

The multi-device check runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(see tests/test_sweep.py).
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import linoverfit as lo

MODEL = '''
import jax, jax.numpy as jnp, numpy as np
import linoverfit as lo

def init(key):
    k1, k2 = jax.random.split(key)
    return {"W1": 0.4 * jax.random.normal(k1, (12, 6)), "b1": jnp.full((12,), 0.1),
            "W2": 0.4 * jax.random.normal(k2, (4, 12))}

def apply(p, x):
    return jnp.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T

model = lo.Model(init, apply, d_in=6, d_out=4)
task = lo.tasks.power_law(6, 4, key=0)
data = task.sample(64, 1)
ft = lo.tasks.shifted(task, "additive", 0.2, key=2, scale="absolute").sample(64, 3)

def sweeps(layout):
    """Outputs of the three sweeps as a flat dict of numpy arrays."""
    run = lo.pretrain(model, model.init(4, seeds=3), data, lr=0.1, checkpoints=[1, 20, 100], layout=layout)
    f = lo.finetune(model, run, ft, lr=[0.02, 0.1], steps=30, l2=0.05, return_weights=True, layout=layout)
    s = lo.sensitivity.gaussian(model, run, gamma=[0.01, 0.1], samples=8, key=5, layout=layout)
    out = {"pre_loss": run.loss, "ft_after": f.finetune_loss_after, "pre_after": f.pretrain_loss_after,
           "ft_before": f.finetune_loss_before, "sens": s.sensitivity, "stderr": s.stderr}
    out.update({f"pre_w_{k}": v for k, v in run.weights.items()})
    out.update({f"ft_w_{k}": v for k, v in f.weights.items()})
    return {k: np.asarray(v) for k, v in out.items()}
'''


@pytest.fixture(scope="module")
def setting():
    task = lo.tasks.power_law(6, 4, key=0)
    data = task.sample(48, 1)
    ft = lo.tasks.shifted(task, "rotate", 0.3, key=2)
    return task, data, ft, ft.sample(48, 3)


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_identity_mlp_is_deep_linear_bit_for_bit(setting, dtype):
    """Acceptance 1 of issue 19. The identity MLP is linear (it has end_to_end), so it runs the
    DeepLinear code path, the end-to-end map: the same bits on a Dataset, minibatches and a Task."""
    task, data, ft, ft_data = setting
    lin, mlp = lo.DeepLinear((6, 8, 4)), lo.MLP((6, 8, 4), activation="identity")
    W0 = lin.init(7, scale=0.1, seeds=2, dtype=dtype)
    assert _same(W0, mlp.init(7, scale=0.1, seeds=2, dtype=dtype))
    for objective, kw in ((data, {}), (data, dict(batch_size=8, key=3)), (task, {})):
        a, b = (lo.pretrain(n, W0, objective, lr=0.1, checkpoints=[1, 10, 60], **kw) for n in (lin, mlp))
        assert _same((a.loss, a.weights), (b.loss, b.weights))
        fa, fb = (lo.finetune(n, r, ft_data, lr=[0.01, 0.1], steps=20, l2=0.1, return_weights=True)
                  for n, r in ((lin, a), (mlp, b)))
        assert _same(fa, fb)
        sa, sb = (lo.sensitivity.gaussian(n, r, objective, gamma=[0.01, 0.1], samples=8, key=4)
                  for n, r in ((lin, a), (mlp, b)))
        assert _same(sa, sb)


def test_tanh_mlp_pretraining_matches_an_independent_loop(setting):
    """A tanh MLP trained by lo.pretrain (GD, float64) is plain gradient descent on
    1/(2N) sum ||f(x) - y||^2: the same losses and weights as an optax loop, to round-off."""
    _, data, _, _ = setting
    net = lo.MLP((6, 10, 10, 4), activation="tanh")
    W0 = net.init(2, scale=0.4)
    assert W0[0].dtype == jnp.float64
    run = lo.pretrain(net, W0, data, lr=0.05, checkpoints=[5, 50, 200])

    def loss(W):
        h = jnp.tanh(data.x @ W[0].T)
        h = jnp.tanh(h @ W[1].T)
        r = h @ W[2].T - data.y
        return 0.5 * jnp.mean(jnp.sum(r * r, axis=1))

    tx, W, losses, weights = optax.sgd(0.05), W0, [], []
    state = tx.init(W)
    for step in range(1, 201):
        updates, state = tx.update(jax.grad(loss)(W), state, W)
        W = optax.apply_updates(W, updates)
        if step in (5, 50, 200):
            losses.append(loss(W))
            weights.append(W)
    np.testing.assert_allclose(run.loss, losses, rtol=1e-12)
    assert run.loss[-1] < 0.5 * run.loss[0]
    for c, Wc in enumerate(weights):
        for l in range(3):
            np.testing.assert_allclose(run.weights[l][c], Wc[l], rtol=1e-10, atol=1e-13)


def test_user_model_through_the_three_sweeps_and_online(setting):
    ns = {}
    exec(MODEL, ns)
    out = ns["sweeps"](None)
    assert out["pre_loss"].shape == (3, 3) and out["ft_after"].shape == (3, 2, 3) and out["sens"].shape == (3, 2, 3)
    assert np.all(out["pre_loss"][-1] < out["pre_loss"][0]) and np.all(np.isfinite(out["sens"]))
    assert out["pre_w_b1"].shape == (3, 3, 12) and out["ft_w_W1"].shape == (3, 2, 3, 12, 6)
    # online SGD on a Task: its losses are measured on a fixed sample of the task, the run's task
    model, task = ns["model"], ns["task"]
    run = lo.pretrain(model, model.init(0), task, lr=0.1, checkpoints=[10, 200], online=True, batch_size=16,
                      key=1, optimizer="adam")
    assert isinstance(run.task, lo.Dataset) and run.task.n == lo.pretraining.EVAL_SAMPLES
    assert run.loss[-1] < run.loss[0]
    s = lo.sensitivity.gaussian(model, run, gamma=0.05, samples=4, key=2)
    assert s.sensitivity.shape == (2, 1)


def test_user_model_sharded_over_two_devices_has_the_bits_of_one():
    code = MODEL + textwrap.dedent('''
        assert len(jax.devices()) == 2, jax.devices()
        one, two = (sweeps(lo.Layout(devices=d, chunk=2, progress=False)) for d in (1, 2))
        print("EQUAL", sorted(one) == sorted(two) and all(np.array_equal(one[k], two[k]) for k in one))
    ''')
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "EQUAL True" in p.stdout, p.stdout


def test_population_task_with_a_nonlinear_net_is_refused_by_name(setting):
    task, data, ft, ft_data = setting
    net = lo.MLP((6, 8, 4), activation="relu")
    W0 = net.init(0, scale=0.3)
    with pytest.raises(ValueError, match=r"task.sample\(n, key\).*online=True"):
        lo.pretrain(net, W0, task, lr=0.1, checkpoints=[5])
    run = lo.pretrain(net, W0, data, lr=0.1, checkpoints=[5])
    with pytest.raises(ValueError, match=r"population Task.*task.sample\(n, key\)") as err:
        lo.finetune(net, run, ft, lr=0.1, steps=5)
    assert "online" not in str(err.value)  # lo.finetune has no online= (issue 20): only lo.pretrain suggests it
    with pytest.raises(ValueError, match="pretrain_task is a population Task"):
        lo.finetune(net, run, ft_data, lr=0.1, steps=5, pretrain_task=task)
    with pytest.raises(ValueError, match="population Task") as err:
        lo.sensitivity.gaussian(net, run, task, gamma=0.1, samples=4, key=0)
    assert "online" not in str(err.value)
    with pytest.raises(ValueError, match="l2_on='layers'"):
        lo.finetune(net, run, ft_data, lr=0.1, steps=5, l2=0.1, l2_on="map")
    with pytest.raises(ValueError, match="activation must be one of"):
        lo.MLP((6, 4), activation="sigmoid")


def test_check_network_accepts_the_protocol_and_refuses_a_disguised_deep_linear():
    from linoverfit.networks import check_network

    class Tanh(lo.DeepLinear):
        def apply(self, weights, x):
            return jnp.tanh(super().apply(weights, x))

    with pytest.raises(TypeError, match="overrides apply.*lo.MLP"):
        check_network(Tanh((4, 4)))
    with pytest.raises(TypeError, match="must be a network"):
        check_network(object())
    with pytest.raises(TypeError, match=r"deep linear network.*got MLP\(activation='tanh'\)"):
        lo.theory.pretrain(lo.MLP((4, 4, 4)), lo.MLP((4, 4, 4)).init(0), lo.tasks.power_law(4, 4, key=0),
                          lr=0.1, checkpoints=[5])
    assert check_network(lo.MLP((4, 4))) == lo.MLP((4, 4))


def test_identity_mlp_runs_the_linear_theory_of_its_deep_linear():
    """An identity MLP is a deep linear network: lo.theory predicts it as the DeepLinear of its widths,
    with the same bits (the same weights go through the same closed forms)."""
    task = lo.tasks.power_law(5, 4, 1.0, key=0, dtype=jnp.float64)
    ft = lo.tasks.shifted(task, "additive", 0.2, key=1)
    out = {}
    for net in (lo.MLP((5, 6, 4), "identity"), lo.DeepLinear((5, 6, 4))):
        W0 = net.init(2, scale=0.1, seeds=2, dtype=jnp.float64)
        run = lo.theory.pretrain(net, W0, task, lr=0.05, checkpoints=[0, 10, 100])
        fr = lo.theory.finetune(net, run, ft, lr=(0.01, 0.05), steps=20)
        sens = lo.theory.gaussian(net, run, gamma=0.03)
        out[type(net).__name__] = [run.loss, *run.weights, fr.pretrain_loss_after, fr.finetune_loss_after,
                                   sens.sensitivity]
    for a, b in zip(out["MLP"], out["DeepLinear"]):
        np.testing.assert_array_equal(a, b)


def test_results_with_a_params_pytree_refuse_to_save(tmp_path):
    ns = {}
    exec(MODEL, ns)
    model, data = ns["model"], ns["data"]
    run = lo.pretrain(model, model.init(0), data, lr=0.1, checkpoints=[2])
    with pytest.raises(ValueError, match="keep_weights=False"):
        run.save(tmp_path / "run.npz")
    xr = pytest.importorskip("xarray")
    ds = run.to_xarray()
    assert isinstance(ds, xr.Dataset) and ds["weights_W1"].shape == (1, 12, 6)
    lean = lo.pretrain(model, model.init(0), data, lr=0.1, checkpoints=[2], keep_weights=False)
    back = lo.PretrainResult.load(lean.save(tmp_path / "lean.npz"))
    assert np.array_equal(back.loss, lean.loss)
    # an MLP's weights are a tuple of matrices and save as DeepLinear's do
    mlp = lo.MLP((6, 5, 4), activation="gelu")
    r = lo.pretrain(mlp, mlp.init(0, scale=0.3), data, lr=0.1, checkpoints=[2, 4])
    back = lo.PretrainResult.load(r.save(tmp_path / "mlp.npz"))
    assert _same(back.weights, r.weights)
