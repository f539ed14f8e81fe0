"""Performance properties that can be checked without timing anything.

* new *values* (learning rates, noise scales, teachers, initialisations, l2) reuse compiled code;
* the population-loss gradient uses the minimal matmul count (closed form pulled back by vjp);
* a sweep sharded over 4 (simulated CPU) devices equals the single-device sweep.

Speed itself is measured by ``python -m benchmarks.run`` (see benchmarks/README.md), not here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linoverfit as lo
from linoverfit.sweeps import _program
from linoverfit.objective import prepared as _prepared
from linoverfit.objective import value_and_grad as _value_and_grad
from linoverfit.sweeps import _program

ROOT = Path(__file__).resolve().parents[1]


def _psd(key, d):
    G = jax.random.normal(key, (d, d))
    return G @ G.T / d + 0.5 * jnp.eye(d)


# ----------------------------------------------------------------------------- compilation


def test_new_values_never_recompile(count_compiles):
    net = lo.DeepLinear((6, 5, 4))
    ck = [5, 20, 60]

    def sweep(seed, lr, ft_lrs, gammas, l2, cov):
        keys = jax.random.split(jax.random.key(seed), 4)
        task = lo.tasks.power_law(6, 4, 1.0 + seed, key=keys[0], input_cov=cov)
        ft = lo.tasks.shifted(task, "additive", 0.2 + 0.1 * seed, key=keys[1], scale="absolute")
        W0 = net.init(keys[2], scale=0.05 * (1 + seed), seeds=3)
        run = lo.pretrain(net, W0, task, lr=lr, checkpoints=ck)
        lo.finetune(net, run, ft, lr=ft_lrs, steps=30, l2=l2, record_every=10)
        lo.sensitivity.gaussian(net, run, gamma=gammas, samples=16, key=keys[3])

    cov = _psd(jax.random.key(9), 6)
    sweep(0, 0.05, (0.01, 0.1), (0.01, 0.1), 0.0, None)  # identity covariance: compiles once
    sweep(0, 0.05, (0.01, 0.1), (0.01, 0.1), 0.0, cov)  # a general covariance: compiles once more
    size = _program._cache_size()
    with count_compiles() as c:
        sweep(1, 0.07, (0.02, 0.05), (0.03, 0.2), 0.5, None)  # every value changed, l2 switched on
        sweep(2, 0.03, (0.04, 0.06), (0.02, 0.05), 0.0, 2.0 * cov)
    assert c["n"] == 0
    assert _program._cache_size() == size


# ----------------------------------------------------------------------------- matmul count


def _dots(fn, *args):
    """Matrix products in the traced program (before XLA optimisation)."""
    return len(re.findall(r"stablehlo\.dot_general", jax.jit(fn).lower(*args).as_text()))


@pytest.mark.parametrize("widths", [(5, 4, 3), (6, 5, 4, 3), (3, 4, 5, 6, 7), (4, 3)])
@pytest.mark.parametrize("identity", [True, False])
def test_population_gradient_uses_minimal_matmuls(widths, identity):
    # product: L - 1, (P - A) Sigma: 1 unless Sigma = I, chain rule back: 2 (L - 1)
    L = len(widths) - 1
    net = lo.DeepLinear(widths)
    cov = None if identity else _psd(jax.random.key(1), widths[0])
    task = _prepared(lo.tasks.power_law(widths[0], widths[-1], 1.0, key=jax.random.key(0), input_cov=cov))
    W = net.init(jax.random.key(2), scale=0.3)
    n = _dots(lambda W, task: _value_and_grad(task, W, None, 0, None, identity), W, task)
    assert n == 3 * (L - 1) + (0 if identity else 1)
    # ... and it is the gradient of the documented loss
    loss, g = _value_and_grad(task, W, None, 0, None, identity)
    ref_loss, ref_g = jax.value_and_grad(lambda W: task.loss(lo.networks.end_to_end(W)))(W)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for a, b in zip(g, ref_g):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------- sharding

_SHARDED_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import linoverfit as lo

assert len(jax.devices()) == 4, jax.devices()
key = jax.random.split(jax.random.key(0), 4)
net = lo.DeepLinear((64, 64, 64))
task = lo.tasks.power_law(64, 64, 1.0, key=key[0])
ft = lo.tasks.shifted(task, "additive", 0.1, key=key[1], scale="absolute")
out = {}
for seeds, n_ck in ((4, 12), (3, 5)):  # 4 seeds / 144 runs: even split; 3 seeds / 45 runs: padding
    W0 = net.init(key[2], scale=1e-3, seeds=seeds)
    ck = lo.log_checkpoints(400, n_ck)
    res = {}
    for name, devices in (("one", 1), ("all", None)):
        run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck, layout=lo.Layout(devices=devices))
        f = lo.finetune(net, run, ft, lr=(0.01, 0.03, 0.1), steps=40, record_every=10, return_weights=True,
                        layout=lo.Layout(devices=devices))
        s = lo.sensitivity.gaussian(net, run, gamma=(0.01, 0.03), samples=32, key=key[3], layout=lo.Layout(devices=devices))
        arrays = {"pre_loss": run.loss, "pre_w0": run.weights[0], "pre_w1": run.weights[1],
                  "ft_pre": f.pretrain_loss_after, "ft_ft": f.finetune_loss_after,
                  "ft_traj": f.finetune_loss_trajectory, "ft_w1": f.weights[1],
                  "sens": s.sensitivity, "se": s.stderr}
        res[name] = {k: np.asarray(v) for k, v in arrays.items()}
        if devices is None:
            # the sweep really was spread over the 4 devices
            assert lo.parallel.Plan(None, seeds).mesh.size == min(4, seeds)
    for k in res["one"]:
        a, b = res["one"][k], res["all"][k]
        scale = max(np.abs(a).max(), 1e-300)
        out[f"{seeds}/{k}"] = {"bitwise": bool(np.array_equal(a, b)), "max_rel": float(np.abs(a - b).max() / scale),
                               "shape": list(a.shape)}
# finite-sample objective with minibatches (per-run keys) and a general input covariance
small = lo.DeepLinear((8, 6, 5))
cov_task = lo.tasks.power_law(8, 5, 1.0, key=key[0], input_cov=np.diag(np.linspace(0.5, 2.0, 8)))
data = cov_task.sample(64, key[1])
W0 = small.init(key[2], scale=0.1, seeds=3)
res = {}
for name, devices in (("one", 1), ("all", None)):
    run = lo.pretrain(small, W0, data, lr=0.05, checkpoints=[10, 50, 100, 200, 300], batch_size=8, key=key[3],
                      layout=lo.Layout(devices=devices))
    f = lo.finetune(small, run, cov_task, lr=(0.01, 0.05), steps=30, batch_size=None, layout=lo.Layout(devices=devices))
    g = lo.finetune(small, run, data, lr=(0.01, 0.05), steps=30, batch_size=4, key=key[2], layout=lo.Layout(devices=devices))
    res[name] = [np.asarray(x) for x in (run.weights[0], f.pretrain_loss_after, g.finetune_loss_after)]
for i, (a, b) in enumerate(zip(res["one"], res["all"])):
    out[f"data/{i}"] = {"bitwise": bool(np.array_equal(a, b)), "max_rel": float(np.abs(a - b).max() / np.abs(a).max()),
                        "shape": list(a.shape)}
print("@@" + json.dumps(out))
"""


def test_sharded_sweep_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("@@", 1)[1])
    assert len(out) == 21
    bad = {k: v for k, v in out.items() if not (v["bitwise"] or v["max_rel"] <= 1e-12)}
    assert not bad, bad


def test_devices_argument_validation():
    net = lo.DeepLinear((3, 3))
    task = lo.tasks.power_law(3, 3, 1.0, key=jax.random.key(0))
    W0 = net.init(jax.random.key(1), scale=0.1)
    with pytest.raises(ValueError, match="devices"):
        lo.pretrain(net, W0, task, checkpoints=[3], layout=lo.Layout(devices=len(jax.devices()) + 1))
    with pytest.raises(TypeError, match="devices"):
        lo.pretrain(net, W0, task, checkpoints=[3], layout=lo.Layout(devices="gpu"))
    one = lo.pretrain(net, W0, task, checkpoints=[3], layout=lo.Layout(devices=jax.devices()[:1]))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    other = lo.pretrain(net, W0, task, checkpoints=[3], layout=lo.Layout(devices=mesh))
    np.testing.assert_array_equal(one.weights[0], other.weights[0])


def test_use_cpu_devices_refuses_after_backend_start():
    jax.devices()  # the backend is running in the test process
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        lo.parallel.use_cpu_devices(2)


_MULTIHOST_SCRIPT = r"""
import json, sys
import jax
pid, port = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
import numpy as np
import linoverfit as lo
assert len(jax.devices()) == 2 and len(jax.local_devices()) == 1
key = jax.random.split(jax.random.key(0), 4)
net = lo.DeepLinear((8, 8, 8))
task = lo.tasks.power_law(8, 8, 1.0, key=key[0])
ft = lo.tasks.shifted(task, "additive", 0.1, key=key[1], scale="absolute")
W0 = net.init(key[2], scale=1e-2, seeds=3)
run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(300, 5))
f = lo.finetune(net, run, ft, lr=(0.01, 0.1), steps=30)
s = lo.sensitivity.gaussian(net, run, gamma=(0.01, 0.03), samples=16, key=key[3])
print("@@" + json.dumps({"pre": np.asarray(run.loss).tolist(), "ft": np.asarray(f.pretrain_loss_after).tolist(),
                         "sens": np.asarray(s.sensitivity).tolist()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU multi-process collectives (gloo) on Linux")
def test_two_process_sweep_equals_single_process():
    # jax.distributed with 2 processes x 1 CPU device: the sweep is sharded over both processes'
    # devices and every process gets the whole result, equal to a single-process run.
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", _MULTIHOST_SCRIPT, str(i), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
        outs.append(json.loads(out.split("@@", 1)[1]))
    key = jax.random.split(jax.random.key(0), 4)
    net = lo.DeepLinear((8, 8, 8))
    task = lo.tasks.power_law(8, 8, 1.0, key=key[0])
    ft = lo.tasks.shifted(task, "additive", 0.1, key=key[1], scale="absolute")
    W0 = net.init(key[2], scale=1e-2, seeds=3)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(300, 5))
    f = lo.finetune(net, run, ft, lr=(0.01, 0.1), steps=30)
    s = lo.sensitivity.gaussian(net, run, gamma=(0.01, 0.03), samples=16, key=key[3])
    ref = {"pre": run.loss, "ft": f.pretrain_loss_after, "sens": s.sensitivity}
    for out in outs:
        for k, v in ref.items():
            np.testing.assert_allclose(np.asarray(out[k]), np.asarray(v), rtol=1e-12, atol=0)


def test_threaded_parts_equal_one_part(monkeypatch):
    # on a lone CPU device a sweep is cut into parts run concurrently from threads; any number of
    # parts (uneven splits and padding included) gives the same result as one part: bitwise where
    # the per-chunk program is the same (fine-tuning, sensitivity), else (pre-training puts all of
    # a part's seeds in one vmap, and a batch of 1 compiles to an unbatched matmul) to round-off
    net = lo.DeepLinear((6, 5, 4))
    task = lo.tasks.power_law(6, 4, 1.0, key=jax.random.key(0), input_cov=_psd(jax.random.key(1), 6))
    ft = lo.tasks.shifted(task, "additive", 0.2, key=jax.random.key(2), scale="absolute")
    W0 = net.init(jax.random.key(3), scale=0.05, seeds=3)
    results = {}
    for threads in (1, 2, 3, 5):
        monkeypatch.setattr(lo.parallel, "CPU_THREADS", threads)
        if jax.devices()[0].platform == "cpu" and len(jax.devices()) == 1:
            assert lo.parallel.Plan(None, 3 * 7 * 2).parts == min(threads, 11)
        run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(200, 7))
        f = lo.finetune(net, run, ft, lr=(0.01, 0.1), steps=25, record_every=5, return_weights=True)
        s = lo.sensitivity.gaussian(net, run, gamma=(0.01, 0.1), samples=8, key=jax.random.key(4))
        results[threads] = [np.asarray(x) for x in (run.weights[1], run.loss, f.weights[0], f.pretrain_loss_trajectory,
                                                    f.finetune_loss_before, s.sensitivity, s.stderr)]
    for threads, arrays in results.items():
        for a, b in zip(results[1], arrays):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=f"{threads} parts")
    # with the same per-seed programs the pre-trained weights are bitwise equal too
    monkeypatch.setattr(lo.parallel, "CPU_THREADS", 3)
    again = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(200, 7), layout=lo.Layout(chunk=1))
    monkeypatch.setattr(lo.parallel, "CPU_THREADS", 1)
    one = lo.pretrain(net, W0, task, lr=0.05, checkpoints=lo.log_checkpoints(200, 7), layout=lo.Layout(chunk=1))
    np.testing.assert_array_equal(np.asarray(again.weights[0]), np.asarray(one.weights[0]))
