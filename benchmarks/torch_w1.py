"""W1 as a theorist would write it in a notebook: eager PyTorch, autograd, Python loops.

Loops over seeds, checkpoints, learning rates and steps; every step is ``loss.backward()`` and an
in-place update under ``torch.no_grad()``. Same workload and the same float32 arithmetic as
:mod:`benchmarks.workloads` W1 (depth 2, widths 64, GD, 48 log-spaced checkpoints up to 32768
steps, 1000 fine-tuning steps at 3 learning rates from every checkpoint of every seed, Gaussian
sensitivity with 256 common-random-number samples at 2 noise scales). Since Sigma = I in W1 the
loss is written as ``0.5 * ((P - A) ** 2).sum()`` (the cheapest form, in torch's favour).

Needs the optional ``bench`` extra (``pip install -e .[bench]`` installs torch 2.13.0, CPU build).
"""

from __future__ import annotations

import time

import numpy as np


def run_w1(spec, A_pre: np.ndarray, A_ft: np.ndarray, W0: tuple[np.ndarray, ...], *, threads: int | None = None,
           ft_steps: int | None = None, pretrain_steps: int | None = None):
    """Run W1 eagerly; returns a dict of phase times (s) and a few results for a sanity check.

    ``W0`` is the same initialisation as the JAX run, shape ``(S, n_l, n_{l-1})`` per layer.
    ``ft_steps`` / ``pretrain_steps`` shrink the run (for quick checks); the defaults are W1's.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    checkpoints = list(spec.checkpoints if pretrain_steps is None else spec.checkpoints_for(pretrain_steps))
    ft_steps = spec.ft_steps if ft_steps is None else ft_steps
    A = torch.tensor(A_pre, dtype=torch.float32)
    A_ft = torch.tensor(A_ft, dtype=torch.float32)
    times = {}

    # --- pre-training: one seed at a time, keep a copy at every checkpoint
    t0 = time.perf_counter()
    ckpts = []  # [seed][checkpoint] -> (W1, W2)
    pre_loss = np.zeros((len(checkpoints), W0[0].shape[0]))
    for s in range(W0[0].shape[0]):
        W1 = torch.tensor(W0[0][s], dtype=torch.float32, requires_grad=True)
        W2 = torch.tensor(W0[1][s], dtype=torch.float32, requires_grad=True)
        saved, step = [], 0
        for c, target in enumerate(checkpoints):
            while step < target:
                loss = 0.5 * ((W2 @ W1 - A) ** 2).sum()
                loss.backward()
                with torch.no_grad():
                    W1 -= spec.lr * W1.grad
                    W2 -= spec.lr * W2.grad
                W1.grad = None
                W2.grad = None
                step += 1
            with torch.no_grad():
                pre_loss[c, s] = float(0.5 * ((W2 @ W1 - A) ** 2).sum())
            saved.append((W1.detach().clone(), W2.detach().clone()))
        ckpts.append(saved)
    times["pretrain"] = time.perf_counter() - t0

    # --- fine-tuning: every seed x checkpoint x learning rate
    t0 = time.perf_counter()
    ft_after = np.zeros((len(checkpoints), len(spec.ft_lrs), len(ckpts)))
    for s, saved in enumerate(ckpts):
        for c, (V1, V2) in enumerate(saved):
            for r, lr in enumerate(spec.ft_lrs):
                W1 = V1.clone().requires_grad_(True)
                W2 = V2.clone().requires_grad_(True)
                for _ in range(ft_steps):
                    loss = 0.5 * ((W2 @ W1 - A_ft) ** 2).sum()
                    loss.backward()
                    with torch.no_grad():
                        W1 -= lr * W1.grad
                        W2 -= lr * W2.grad
                    W1.grad = None
                    W2.grad = None
                with torch.no_grad():
                    ft_after[c, r, s] = float(0.5 * ((W2 @ W1 - A) ** 2).sum())
    times["finetune"] = time.perf_counter() - t0

    # --- Gaussian sensitivity: common random numbers, samples batched, loops over the rest
    t0 = time.perf_counter()
    n1, n2 = W0[0].shape[1:], W0[1].shape[1:]
    E1 = torch.randn(spec.samples, *n1)
    E2 = torch.randn(spec.samples, *n2)
    sens = np.zeros((len(checkpoints), len(spec.gammas), len(ckpts)))
    with torch.no_grad():
        for s, saved in enumerate(ckpts):
            for c, (V1, V2) in enumerate(saved):
                base = 0.5 * ((V2 @ V1 - A) ** 2).sum()
                for g, gamma in enumerate(spec.gammas):
                    P = (V2 + gamma * E2) @ (V1 + gamma * E1)
                    losses = 0.5 * ((P - A) ** 2).sum(dim=(1, 2))
                    sens[c, g, s] = float(losses.mean() - base)
    times["sensitivity"] = time.perf_counter() - t0
    times["total"] = sum(times.values())
    return times, {"pretrain_loss": pre_loss, "pretrain_loss_after_ft": ft_after, "sensitivity": sens}
