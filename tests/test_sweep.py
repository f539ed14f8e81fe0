"""Issue 17: ``lo.sweep`` is the one seam from a single-run function to a laid-out sweep, usable on a
user's own function; issue 20: an interrupted sweep stops its compiled work.

The multi-device checks run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(the flag must be set before JAX initialises its backend, which this test process has done).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linoverfit as lo

# The documented example (linoverfit/sweeps.py module docstring): a user's single-run function.
USER_SWEEP = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    import linoverfit as lo

    def run_gd(run, shared):
        lr, w0 = run
        x, y = shared
        def step(_, w):
            return w - lr * jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return jax.lax.fori_loop(0, 100, step, w0)

    def inputs():
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(k1, (64, 8))
        y = x @ jax.random.normal(k2, (8,))
        lrs = jnp.asarray([0.01, 0.05, 0.1])
        starts = jax.random.normal(k3, (3, 8))
        runs = (jnp.repeat(lrs, 3), jnp.tile(starts, (3, 1)))   # 9 runs: not a multiple of 2 devices
        return runs, (x, y)
''')


def _run_python(code, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_user_function_sweep_equals_vmap_in_process():
    ns = {}
    exec(USER_SWEEP, ns)
    runs, shared = ns["inputs"]()
    got = lo.sweep(ns["run_gd"], runs, shared, layout=lo.Layout(devices=1, chunk=2, progress=False))
    want = jax.vmap(ns["run_gd"], in_axes=(0, None))(runs, shared)
    assert got.shape == (9, 8)
    # the same per-run arithmetic, batched differently (chunks of 2 vs all 9): equal to float32 round-off
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_user_function_sharded_over_two_devices_has_the_bits_of_one():
    code = USER_SWEEP + textwrap.dedent('''
        import sys
        assert len(jax.devices()) == 2, jax.devices()
        runs, shared = inputs()
        outs = {}
        for name, devices in (("one", 1), ("two", 2)):
            outs[name] = np.asarray(lo.sweep(run_gd, runs, shared, layout=lo.Layout(devices=devices, chunk=2, progress=False)))
        # pre-training through the same seam, sharded its seeds over the two devices
        task = lo.tasks.power_law(6, 6, key=1)
        net = lo.DeepLinear((6, 6, 6))
        W0 = net.init(2, scale=1e-2, seeds=4)
        for name, devices in (("pre_one", 1), ("pre_two", 2)):
            r = lo.pretrain(net, W0, task, lr=0.1, checkpoints=[0, 10, 50],
                            layout=lo.Layout(devices=devices, progress=False))
            outs[name] = np.asarray(r.loss)
        np.savez(sys.argv[1] if len(sys.argv) > 1 else "/dev/null", **outs)
        print({k: v.shape for k, v in outs.items()})
        print("EQUAL", all(np.array_equal(outs[a], outs[b]) for a, b in (("one", "two"), ("pre_one", "pre_two"))))
    ''')
    out = _run_python(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert "EQUAL True" in out, out


INTERRUPTED = textwrap.dedent('''
    import json, os, sys, threading, time
    import jax, jax.numpy as jnp
    import linoverfit as lo

    task = lo.tasks.power_law(48, 48, key=0)
    net = lo.DeepLinear((48, 48, 48, 48))
    W0 = net.init(1, scale=1e-2)
    W2 = net.init(1, scale=1e-2, seeds=2)
    layout = lo.Layout(progress=False)

    def small():
        t = time.monotonic()
        lo.pretrain(net, W0, task, lr=0.05, checkpoints=[0, 200], layout=layout)
        return time.monotonic() - t

    small()                                   # compile the small call
    baseline = small()                        # its normal speed
    long = lambda: lo.pretrain(net, W2, task, lr=0.05, checkpoints=[0, 10, 3_000_000], layout=layout)
    print("READY", flush=True)
    t0 = time.monotonic()
    try:
        long()
        interrupted = None
    except KeyboardInterrupt:
        interrupted = time.monotonic()
    t_sig = float(sys.stdin.readline())      # when the parent sent SIGINT (its monotonic clock)
    after = small()
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(1.0)                           # nothing of ours runs now: no busy thread may remain
    idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    print(json.dumps({"interrupted": interrupted, "t0": t0, "returned_after": None if interrupted is None else interrupted - t_sig,
                      "baseline": baseline, "after": after, "idle_cpu": idle_cpu, "threads": threading.active_count()}), flush=True)
''')


def test_interrupted_sweep_stops_its_compiled_work():
    """Issue 20, acceptance 2: Ctrl-C in the middle of a sweep of well over 20 s returns within 2 s,
    the next small call runs at its normal speed, and no thread keeps a core busy."""
    p = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's Ctrl-C, even
    # when the test runner itself was started in the background of a shell (which ignores SIGINT)
    try:
        assert p.stdout.readline().strip() == "READY", p.stderr.read()
        time.sleep(3.0)  # well inside the long sweep (3 million steps of a depth-3 width-48 net: minutes)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.stdin.write(f"{sent}\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err[-3000:]
    r = json.loads(out.strip().splitlines()[-1])
    assert r["interrupted"] is not None, "the long sweep finished instead of being interrupted"
    # monotonic clocks are system-wide on Linux, so parent and child times compare directly
    assert r["returned_after"] < 2.0, r
    # "normal speed": the same small call before and after, with slack for a loaded CI machine
    assert r["after"] < 3 * r["baseline"] + 0.5, r
    assert r["idle_cpu"] < 0.3, r  # a leftover compiled loop would hold a core: ~1.0 here
