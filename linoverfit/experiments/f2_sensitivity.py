"""F2 — progressive sensitivity: the longer a network is pre-trained, the more Gaussian noise hurts it.

Workload W1 (depth 2, widths 64, teacher sigma_i = 1/i, small Gaussian init, 4 seeds). At every
checkpoint the sensitivity S(W, gamma) = E[L(W + gamma E)] - L(W) is estimated by Monte Carlo
(``lo.sensitivity.gaussian``, markers with standard errors) and computed exactly on the same
weights (``lo.theory.perturbation.perturbation_sensitivity``, lines). Right: the same network from a balanced,
teacher-aligned init, where S is a closed form of the learnt spectrum alone,
S = gamma^2/2 (d_in + d_out) sum_i s_i(t) + gamma^4/2 d_in h d_out
(``lo.theory.perturbation.sensitivity_from_spectrum`` of ``lo.theory.modes.mode_trajectory``): no simulation needed.

Run: ``python experiments/F2_sensitivity.py [--quick] [--out DIR] [--set samples=1024]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F2", "sensitivity"
TITLE = "progressive sensitivity: S(T) for several gamma, Monte Carlo vs exact"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=64,                     # d_in = hidden = d_out (depth 2)
    alpha=1.0,                    # teacher spectrum sigma_i = i**-alpha
    init_scale=1e-3,              # Gaussian init, entries N(0, scale^2)
    seeds=4,
    lr=0.05,
    steps=32768,
    checkpoints=48,
    gammas=(0.01, 0.02, 0.03, 0.05),
    samples=256,                  # Monte Carlo draws per checkpoint
)
QUICK = dict(width=24, seeds=2, steps=8192, checkpoints=24, samples=128)
# ----------------------------------------------------------------------------- end of config


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F2_sensitivity.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    stages = C.Stages(5, progress)
    k_task, k_init, k_noise = jax.random.split(jax.random.key(seed), 3)
    d = cfg["width"]
    gammas = np.asarray(cfg["gammas"], float)
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    net = lo.DeepLinear((d, d, d))

    with stages("pre-train"):
        W0 = net.init(k_init, scale=cfg["init_scale"], scheme="gaussian", seeds=cfg["seeds"])
        run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=lo.log_checkpoints(cfg["steps"], cfg["checkpoints"]))
    with stages("Monte Carlo sensitivity"):
        sens = lo.sensitivity.gaussian(net, run_, gamma=gammas, samples=cfg["samples"], key=k_noise)
        mc = np.asarray(sens.sensitivity, float)            # (C, G, S)
        se = np.asarray(sens.stderr, float)
        mc_mean = mc.mean(-1)
        # standard error of the seed mean: the seeds share the same noise draws (common random
        # numbers), so their errors are correlated; the mean of the per-seed errors bounds it
        mc_se = se.mean(-1)
    with stages("exact sensitivity"):
        exact = np.asarray(lo.theory.perturbation.perturbation_sensitivity(run_.weights, gammas), float)  # (C, S, G)
        exact_mean = exact.mean(1)
    with stages("aligned init: simulation and closed form"):
        W0a = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        run_a = lo.pretrain(net, W0a, task, lr=cfg["lr"], checkpoints=run_.steps)
        sens_a = lo.sensitivity.gaussian(net, run_a, gamma=gammas, samples=cfg["samples"], key=k_noise)
        mc_a, se_a = np.asarray(sens_a.sensitivity, float), np.asarray(sens_a.stderr, float)  # (C, G)
        sigma = np.asarray(task.spectrum, float)
        t_dense = np.geomspace(run_.t[0], run_.t[-1], 300)
        s_dense = lo.theory.modes.mode_trajectory(sigma, t_dense, cfg["init_scale"] ** 2, depth=2)
        spec = lo.theory.perturbation.sensitivity_from_spectrum(s_dense, gammas, widths=net)  # (T, G)
        spec_ck = lo.theory.perturbation.sensitivity_from_spectrum(
            lo.theory.modes.mode_trajectory(sigma, run_.t, cfg["init_scale"] ** 2, depth=2), gammas, widths=net)

    z = (mc_mean - exact_mean) / mc_se
    summary = {"gammas": gammas, "samples": cfg["samples"], "seeds": cfg["seeds"], "per_gamma": {}}
    for g, gamma in enumerate(gammas):
        summary["per_gamma"][f"{gamma:g}"] = {
            "sensitivity_first_checkpoint": exact_mean[0, g],
            "sensitivity_last_checkpoint": exact_mean[-1, g],
            "growth_factor": exact_mean[-1, g] / exact_mean[0, g],
            "max_abs_z_mc_vs_exact": np.max(np.abs(z[:, g])),
            "fraction_within_2_stderr": np.mean(np.abs(z[:, g]) <= 2),
            "max_rel_diff_mc_vs_exact": np.max(np.abs(mc_mean[:, g] - exact_mean[:, g]) / exact_mean[:, g]),
            "aligned_max_rel_diff_mc_vs_spectrum_theory": np.max(np.abs(mc_a[:, g] - spec_ck[:, g]) / spec_ck[:, g]),
        }

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        with lp.style():
            fig, (ax, bx) = lp.subplots(1, 2, width="page", aspect=0.62)
            for g, gamma in enumerate(gammas):
                col = lp.gamma_color(gamma)
                lp.theory(ax, run_.t, exact_mean[:, g], color=col)
                lp.simulation(ax, run_.t, mc_mean[:, g], yerr=mc_se[:, g], color=col)
                lp.theory(bx, t_dense, spec[:, g], color=col)
                lp.simulation(bx, run_.t, mc_a[:, g], yerr=se_a[:, g], color=col)
            lp.time_axis(ax)
            ax.set_yscale("log")
            ax.set_ylabel(r"sensitivity $S = \mathbb{E}\,L(W+\gamma E) - L(W)$")
            ax.set_title(f"(a) small Gaussian init, mean of {cfg['seeds']} seeds", loc="left")
            lp.time_axis(bx)
            bx.set_yscale("log")
            bx.set_ylabel(r"sensitivity $S$")
            bx.set_title("(b) aligned init: S from the learnt spectrum", loc="left")
            # one legend below the panels (in-panel legends covered the rising curves)
            from matplotlib.lines import Line2D

            lp.legend(fig, colors={rf"noise scale $\gamma = {g:g}$": lp.gamma_color(g) for g in gammas},
                      extra=[("(a) line: exact, on the simulated weights", Line2D([], [], color="0.2", lw=1.5)),
                             ("(b) line: closed form of the mode dynamics", Line2D([], [], color="0.2", lw=1.5)),
                             (f"markers: Monte Carlo ({cfg['samples']} draws) $\\pm$ s.e.",
                              Line2D([], [], color="0.2", marker="o", markerfacecolor="none", linestyle="none"))],
                      theory_label=None, sim_label=None, loc="outside lower center", ncol=len(gammas) - 1)
            lp.save(fig, png)
        C.save_data(npz, t=run_.t, gammas=gammas, mc_sensitivity=mc_mean, mc_stderr=mc_se,
                    exact_sensitivity=exact_mean, t_theory=t_dense, spectrum_theory_sensitivity=spec,
                    pretrain_loss=np.asarray(run_.loss).mean(-1), aligned_mc_sensitivity=mc_a,
                    aligned_mc_stderr=se_a, aligned_spectrum_theory_at_checkpoints=spec_ck)
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
