"""The benchmark's MLP comparison (``python -m benchmarks.run W1 --mlp``, issue 19 acceptance 5) counts
what it claims and runs end to end. Its speed is measured by the benchmark, not here."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pytest

import linoverfit as lo
from benchmarks import run as bench
from benchmarks import workloads
from linoverfit import objective


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_step_flops_are_the_traced_matmuls(depth, activation):
    """One full-batch GD step of an MLP is ``3L - 1`` matrix products (``L`` forward, ``L`` weight
    gradients, ``L - 1`` hidden-activation gradients), and ``sample_step_flops`` is their FLOPs: XLA's
    own count of the compiled step exceeds it only by elementwise work (activation, its derivative,
    residual, loss), at most 16 FLOPs per hidden or output element (measured 5)."""
    d, n = 16, 32
    widths = (d,) * (depth + 1)
    net = lo.MLP(widths, activation)
    W = lo.DeepLinear(widths).init(jax.random.key(0), scale=0.3)
    x = jax.random.normal(jax.random.key(1), (n, d))
    data = lo.Dataset(x, x[:, ::-1])
    lowered = jax.jit(lambda W, data: objective.value_and_grad(data, W, net=net)).lower(W, data)
    assert len(re.findall(r"stablehlo\.dot_general", lowered.as_text())) == 3 * depth - 1
    cost = lowered.compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    counted = workloads.sample_step_flops(widths, n)
    assert counted <= xla <= counted + 16 * n * sum(widths[1:]), (counted, xla)


def test_mlp_variant_shares_the_workload_teacher_and_init():
    spec = workloads.W1.with_(width=8)
    _, task, ft, W0 = workloads.build(spec)
    net, data, ft_data, W0_mlp = workloads.build_mlp(spec, 16)
    assert isinstance(net, lo.MLP) and net.widths == spec.widths and net.activation == "tanh"
    for a, b in zip(W0, W0_mlp):
        np.testing.assert_array_equal(a, b)
    # noiseless teachers: the samples' labels are the (shifted) teacher's outputs
    np.testing.assert_allclose(data.y, data.x @ np.asarray(task.teacher).T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ft_data.y, ft_data.x @ np.asarray(ft.teacher).T, rtol=1e-5, atol=1e-6)
    assert data.x.shape == (16, 8) and ft_data.x.shape == (16, 8)


def test_mlp_comparison_runs_and_reports_each_phase(capsys):
    """``--mlp`` on a small W1-shaped workload: every phase timed for both networks without recompiling
    on new values, FLOPs as counted, and the printed ratio MLP / DeepLinear is the ratio of the times."""
    spec = workloads.W1.with_(width=8, seeds=2, n_checkpoints=4, ft_steps=6, samples=8)
    args = bench._parse(["W1", "--mlp", "--mlp-samples", "8", "--pretrain-steps", "32"])
    compiles = bench._Compiles()
    lin = bench.run_workload(spec, args, compiles, peak=100.0)
    out = bench._mlp_compare(spec, lin, args, compiles, peak=100.0)
    printed = capsys.readouterr().out
    phases = ("pretrain", "finetune", "sensitivity", "total")
    assert out["samples"] == 8 and out["activation"] == "tanh" and set(out["ratios"]) == set(phases)
    flops = workloads.phase_flops(spec, ft_steps=6, total_steps=32, mlp_samples=8)
    rows = {r["phase"]: r for r in out["rows"]}
    lin_rows = {r["phase"]: r for r in lin["rows"]}
    for phase in phases:
        r = out["ratios"][phase]
        assert math.isfinite(r["run"]) and r["run"] > 0
        assert r["run"] == pytest.approx(rows[phase]["run_s"] / lin_rows[phase]["run_s"])
        assert re.search(rf"MLP / DeepLinear {phase} +cached .* = {r['run']:4.2f}x \|", printed), printed
        if phase != "total":
            assert rows[phase]["gflop"] == pytest.approx(flops[phase]["flops"] / 1e9)
            assert rows[phase]["recompiles_on_new_values"] == 0
