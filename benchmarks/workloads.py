"""Workloads W1 and W2 of docs/design.md, built through the public API, and their matmul FLOP counts.

FLOPs are *counted*, not measured: each phase is charged the minimal number of matmul FLOPs
its algorithm needs (2 m k n per ``(m, k) @ (k, n)``), elementwise work and the per-checkpoint
loss evaluations are not counted. One gradient step of a depth-L network on the population loss
needs the end-to-end product (L - 1 matmuls), ``(P - A) Sigma`` (one more unless Sigma = I) and
the chain rule back through the product (2 (L - 1) matmuls). So achieved GFLOP/s = counted
FLOPs / run time is a lower bound on the arithmetic rate, directly comparable with the
large-square-matmul rate of the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import numpy as np

import linoverfit as lo


@dataclass(frozen=True)
class Spec:
    name: str
    width: int
    depth: int = 2
    lr: float = 0.05
    total_steps: int = 32768
    n_checkpoints: int = 48
    init_scale: float = 1e-3
    seeds: int = 4
    ft_lrs: tuple = (0.01, 0.03, 0.1)
    ft_steps: int = 1000
    shift_size: float = 0.1
    gammas: tuple = (0.01, 0.03)
    samples: int = 256

    @property
    def widths(self):
        return (self.width,) * (self.depth + 1)

    @property
    def checkpoints(self):
        return lo.log_checkpoints(self.total_steps, self.n_checkpoints)

    def checkpoints_for(self, total_steps):
        return lo.log_checkpoints(total_steps, min(self.n_checkpoints, total_steps))

    def with_(self, **kw) -> "Spec":
        return replace(self, **kw)


W1 = Spec("W1", width=64)
#: Samples of the MLP variant of a workload (``--mlp``): the network has no population loss, so it is
#: trained on a fixed sample of this size (the pre-training loss is its full-batch loss, the
#: fine-tuning task a sample of the same size). 64 = the input width: one step is then the same
#: size of matmul as the population step of the DeepLinear (``N x 64 x 64``), 5 of them instead of 3.
MLP_SAMPLES = 64
W2 = Spec("W2", width=256)
WORKLOADS = {"W1": W1, "W2": W2}


def build(spec: Spec, key: int = 0, dtype=np.float32):
    """``(net, task, ft_task, W0)`` of a workload, from the public API (all float32 unless dtype)."""
    k_task, k_shift, k_init = jax.random.split(jax.random.key(key), 3)
    d = spec.width
    task = lo.tasks.power_law(d, d, 1.0, key=k_task, dtype=dtype)
    ft = lo.tasks.shifted(task, "additive", spec.shift_size, key=k_shift, scale="absolute")
    net = lo.DeepLinear(spec.widths)
    W0 = net.init(k_init, scale=spec.init_scale, scheme="gaussian", seeds=spec.seeds, dtype=dtype)
    return net, task, ft, W0


def build_mlp(spec: Spec, n_samples: int = MLP_SAMPLES, activation: str = "tanh", key: int = 0,
              dtype=np.float32):
    """``(net, data, ft_data, W0)``: the MLP variant of a workload. The same teacher, shift and
    initial weights as :func:`build` (the same key), an ``activation`` :class:`lo.MLP` of the same
    widths, and ``n_samples`` samples of the task and of the shifted task (Datasets)."""
    _, task, ft, W0 = build(spec, key, dtype)
    k_data, k_ft = jax.random.split(jax.random.fold_in(jax.random.key(key), 7))
    return lo.MLP(spec.widths, activation), task.sample(n_samples, k_data), ft.sample(n_samples, k_ft), W0


def sample_step_flops(widths, n: int) -> int:
    """Counted matmul FLOPs of one full-batch GD step of an MLP on ``n`` samples: ``L`` forward
    matmuls, ``L`` weight gradients and ``L - 1`` gradients of hidden activations (``(3L - 1)`` in all)."""
    per = [2 * n * widths[l] * widths[l - 1] for l in range(1, len(widths))]
    return 2 * sum(per) + sum(per[1:])


def step_flops(widths, identity_cov: bool = True) -> int:
    """Counted matmul FLOPs of one full-batch GD step on the population loss."""
    n0, L = widths[0], len(widths) - 1
    fwd = sum(2 * widths[l] * widths[l - 1] * n0 for l in range(2, L + 1))
    cov = 0 if identity_cov else 2 * widths[-1] * n0 * n0
    bwd = sum(2 * 2 * widths[l] * widths[l - 1] * n0 for l in range(2, L + 1))
    if L == 1:
        return cov  # depth 1: the gradient is (P - A) Sigma itself
    return fwd + cov + bwd


def perturbed_loss_flops(widths, identity_cov: bool = True) -> int:
    """Counted matmul FLOPs of one perturbed-loss evaluation (product, and Sigma unless identity)."""
    n0, L = widths[0], len(widths) - 1
    fwd = sum(2 * widths[l] * widths[l - 1] * n0 for l in range(2, L + 1))
    return fwd + (0 if identity_cov else 2 * widths[-1] * n0 * n0)


def phase_flops(spec: Spec, ft_steps: int | None = None, total_steps: int | None = None,
                mlp_samples: int | None = None) -> dict:
    """Counted FLOPs and GD steps of each phase of ``spec`` (of its MLP variant on ``mlp_samples``
    samples when given: a perturbed-loss evaluation is then the ``L`` forward matmuls on the samples)."""
    total = spec.total_steps if total_steps is None else total_steps
    ck = spec.checkpoints if total_steps is None else spec.checkpoints_for(total)
    ft_steps = spec.ft_steps if ft_steps is None else ft_steps
    sf = step_flops(spec.widths) if mlp_samples is None else sample_step_flops(spec.widths, mlp_samples)
    ef = (perturbed_loss_flops(spec.widths) if mlp_samples is None
          else sum(2 * mlp_samples * spec.widths[l] * spec.widths[l - 1] for l in range(1, len(spec.widths))))
    pre_steps = spec.seeds * total
    ft_runs = spec.seeds * len(ck) * len(spec.ft_lrs)
    n_eval = spec.seeds * len(ck) * len(spec.gammas) * spec.samples
    return {
        "pretrain": {"steps": pre_steps, "flops": pre_steps * sf},
        "finetune": {"steps": ft_runs * ft_steps, "flops": ft_runs * ft_steps * sf},
        "sensitivity": {"steps": n_eval, "flops": n_eval * ef},
    }
