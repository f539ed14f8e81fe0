"""F1 — incremental learning: the singular values of the end-to-end map P are learnt one at a time.

Deep linear networks (depth 2 and 3) are pre-trained by gradient descent from a small
*balanced, teacher-aligned* initialisation, for which the closed form
``lo.theory.modes.mode_trajectory`` (Saxe et al. 2014) is exact under gradient flow. Markers: singular
values of the simulated ``P`` at log-spaced checkpoints; lines: the closed form. Right panel:
the pre-training loss, which drops in plateaus, one per learnt mode.

Run: ``python experiments/F1_incremental.py [--quick] [--out DIR] [--set lr=0.005]``, or
``linoverfit figures --only F1``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F1", "incremental"
TITLE = "incremental learning: singular values of P over time, simulation vs closed form, depth 2 and 3"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,             # d_in = hidden = d_out
    alpha=1.0,            # teacher spectrum sigma_i = i**-alpha
    lr=0.01,              # pre-training learning rate (small: GD close to gradient flow)
    depth2_scale=1e-3,    # aligned init: every mode starts at s0 = scale**depth
    depth2_steps=20000,
    depth3_scale=0.05,
    depth3_steps=40000,
    checkpoints=60,       # log-spaced checkpoints (markers)
    modes_shown=6,        # modes drawn (the largest ones)
)
QUICK = dict(depth2_steps=8000, depth3_steps=16000, checkpoints=30, modes_shown=4)
# ----------------------------------------------------------------------------- end of config


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F1_incremental.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    stages = C.Stages(3, progress)
    k_task, k_init = jax.random.split(jax.random.key(seed))
    d = cfg["width"]
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    sigma = np.asarray(task.spectrum, np.float64)
    M = min(cfg["modes_shown"], d)

    data, summary = {"sigma": sigma}, {"lr": cfg["lr"], "width": d, "modes_shown": M, "depths": [2, 3]}
    curves = {}
    for depth in (2, 3):
        with stages(f"pre-train depth {depth}"):
            net = lo.DeepLinear((d,) * (depth + 1))
            scale = cfg[f"depth{depth}_scale"]
            W0 = net.init(k_init, scale=scale, scheme="aligned", task=task)
            steps = cfg[f"depth{depth}_steps"]
            # checkpoints from 1/200 of the run on: before that every mode sits at s0
            ck = lo.log_checkpoints(steps, cfg["checkpoints"], first=max(1, steps // 200))
            run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
            sv = np.linalg.svd(np.asarray(run_.end_to_end, np.float64), compute_uv=False)
        s0 = scale**depth
        t_dense = np.geomspace(run_.t[0], run_.t[-1], 400)
        th_dense = lo.theory.modes.mode_trajectory(sigma, t_dense, s0, depth=depth)
        th_ck = lo.theory.modes.mode_trajectory(sigma, run_.t, s0, depth=depth)
        loss_dense = 0.5 * np.sum((sigma - th_dense) ** 2, axis=-1)
        err = np.max(np.abs(sv[:, :M] - th_ck[:, :M]), axis=0) / sigma[:M]
        # learning time of each mode: when it reaches half its singular value, read off the
        # checkpoint grid the same way for theory and simulation (log-t interpolation; monotone curves)
        def t_half(s):
            return [float(np.exp(np.interp(0.5, s[:, i] / sigma[i], np.log(run_.t)))) for i in range(M)]

        t_half_th, t_half_sim = t_half(th_ck), t_half(sv)
        curves[depth] = dict(t=run_.t, sv=sv, loss=np.asarray(run_.loss), t_dense=t_dense, th=th_dense,
                             loss_dense=loss_dense)
        data.update({f"depth{depth}_t": run_.t, f"depth{depth}_singular_values": sv,
                     f"depth{depth}_loss": np.asarray(run_.loss), f"depth{depth}_t_theory": t_dense,
                     f"depth{depth}_singular_values_theory": th_dense, f"depth{depth}_loss_theory": loss_dense})
        summary[f"depth{depth}"] = {
            "s0": s0,
            "max_error_over_sigma_per_mode": err,
            "half_learnt_time_theory": t_half_th,
            "half_learnt_time_measured": t_half_sim,
            "modes_learnt_in_order": bool(np.all(np.diff(t_half_sim) > 0)),
        }

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        with lp.style():
            fig, axes = lp.subplots(1, 3, width="page", aspect=0.95)
            for ax, depth in zip(axes[:2], (2, 3)):
                c = curves[depth]
                for i in range(M):
                    col = lp.mode_color(i)
                    ax.axhline(sigma[i], color=col, lw=0.6, ls=(0, (1, 2)), zorder=0)
                    lp.theory(ax, c["t_dense"], c["th"][:, i], color=col)
                    lp.simulation(ax, c["t"], c["sv"][:, i], color=col)
                lp.time_axis(ax)
                ax.set_ylim(0, 1.22 * sigma[0])
                ax.set_ylabel(r"singular value $s_i$ of $P = W_L\cdots W_1$")
                ax.set_title(f"({'ab'[depth - 2]}) depth {depth}", loc="left")
                ax.text(0.03, 0.98, f"aligned init, $s_i(0) = {_tex_number(summary[f'depth{depth}']['s0'])}$",
                        transform=ax.transAxes, va="top", fontsize=6.5, color="0.3")
            lp.legend(fig, colors={rf"mode {i + 1}: $\sigma_{{{i + 1}}} = {sigma[i]:.2g}$": lp.mode_color(i)
                                       for i in range(M)}, loc="outside lower center", ncol=M // 2 + 2,
                      extra=[(r"teacher $\sigma_i$ (target)", _dotted())])
            ax = axes[2]
            for depth in (2, 3):
                c = curves[depth]
                lp.theory(ax, c["t_dense"], c["loss_dense"], color=lp.depth_color(depth))
                lp.simulation(ax, c["t"], c["loss"], color=lp.depth_color(depth))
            lp.time_axis(ax)
            # log scale: each learnt mode removes sigma_i^2 / 2, so the late (small) drops are visible too;
            # the floor sits below the last plateau, 1/2 sigma_min^2
            ax.set_yscale("log")
            ax.set_ylim(0.2 * 0.5 * float(np.min(sigma)) ** 2, 2.5 * float(np.max(curves[2]["loss"])))
            ax.set_ylabel(r"pre-training loss $\frac{1}{2}\|P - A\|_F^2$")
            ax.set_title("(c) one loss drop per learnt mode", loc="left")
            lp.legend(ax, colors={f"depth {L}": lp.depth_color(L) for L in (2, 3)}, loc="upper right",
                      theory_label=None, sim_label=None)
            lp.save(fig, png)
        C.save_data(npz, **data)
    return summary


def _tex_number(x):
    m, e = f"{x:.1e}".split("e")
    return rf"{float(m):g}\times10^{{{int(e)}}}"


def _dotted():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.4", lw=0.5, ls=(0, (1, 3)))


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
