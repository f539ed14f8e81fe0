"""F6 — does the degradation survive tuning the fine-tuning learning rate per checkpoint?

The F4 setting at widths 32 (depth 2, sigma_i = 1/i, aligned init, ``additive`` shift, 1000
fine-tuning steps). Every checkpoint is fine-tuned at every learning rate of a log grid in ONE
vmapped ``lo.finetune`` call. For a target fine-tuning loss, each checkpoint gets the learning
rate that reaches the target with the lowest pre-training loss afterwards (the most favourable
tuning; the lr where the loss crosses the target is interpolated between grid points;
checkpoints where no grid lr reaches the target are marked). Left: the pre-training loss
after fine-tuning at the tuned lr (and, for reference, at one fixed lr), in units of each
curve's minimum; right: the tuned learning rate. Lines: the same selection applied to the
prediction of ``lo.theory.finetune_curve`` on the same lr grid.

Run: ``python experiments/F6_tuned_lr.py [--quick] [--out DIR] [--set targets="(0.01,)"]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F6", "tuned_lr"
TITLE = "tuned fine-tuning learning rate per checkpoint: does the degradation survive tuning?"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=32,                        # d_in = hidden = d_out (depth 2)
    alpha=1.0,                       # teacher spectrum sigma_i = i**-alpha
    init_scale=1e-3,                 # aligned init: s0 = scale^2
    lr=0.05,                         # pre-training learning rate
    steps=16384,
    checkpoints=64,
    first_step=16,
    shift=("additive", 0.1, None),   # (kind, size, rank)
    ft_steps=1000,
    lr_grid=(1e-3, 0.1, 17),         # geomspace(lo, hi, n): fine-tuning learning rates, one vmapped call
    targets=(0.01, 0.03),            # fine-tuning-loss targets
    fixed_lr=0.01,                   # reference without tuning (must be on the grid)
    theory_every=2,                  # predict at every n-th checkpoint (the flow runs to lr_max * ft_steps)
    theory_rtol=1e-7,
)
QUICK = dict(width=16, steps=8192, checkpoints=32, ft_steps=500, lr_grid=(1e-3, 0.1, 9), theory_every=2)
# ----------------------------------------------------------------------------- end of config

#: The degradation "survives" tuning when the tuned curve has an interior minimum and ends this % above it.
SURVIVES_PERCENT = 1.0


def tune(lrs, ft_after, pre_after, target):
    """Tuned learning rate per checkpoint and the pre-training loss it leaves.

    Arrays ``(C, R)`` over the lr grid ``lrs`` (NaN = diverged). The feasible lrs are those whose
    fine-tuning loss after is <= ``target``: the smallest one is found between grid points by
    interpolating log loss in log lr (where the loss crosses the target), and every grid lr above
    it is a candidate too; the tuned lr is the candidate with the lowest pre-training loss after
    (pre-training loss interpolated the same way at the crossing). Returns ``(lr, pre)``, ``(C,)``,
    NaN where no grid lr reaches the target.
    """
    x = np.log(lrs)
    out_lr, out_pre = np.full(len(ft_after), np.nan), np.full(len(ft_after), np.nan)
    for c, (f, p) in enumerate(zip(ft_after, pre_after)):
        ok = np.isfinite(f) & np.isfinite(p)
        feas = ok & (f <= target)
        if not feas.any():
            continue
        j = int(np.argmax(feas))  # smallest feasible grid lr
        cand_lr, cand_pre = list(lrs[feas]), list(p[feas])
        if j > 0 and ok[j - 1]:  # the crossing lies between grid points j-1 and j
            lf0, lf1 = np.log(f[j - 1]), np.log(f[j])
            w = (np.log(target) - lf0) / (lf1 - lf0)
            cand_lr.append(float(np.exp(x[j - 1] + w * (x[j] - x[j - 1]))))
            cand_pre.append(float(np.exp(np.log(p[j - 1]) + w * (np.log(p[j]) - np.log(p[j - 1])))))
        k = int(np.argmin(cand_pre))
        out_lr[c], out_pre[c] = cand_lr[k], cand_pre[k]
    return out_lr, out_pre


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F6_tuned_lr.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    stages = C.Stages(4, progress)
    k_task, k_init, k_shift, k_ft = jax.random.split(jax.random.key(seed), 4)
    d = cfg["width"]
    lo_, hi, n = cfg["lr_grid"]
    lrs = np.geomspace(lo_, hi, int(n))
    fixed = int(np.argmin(np.abs(np.log(lrs / cfg["fixed_lr"]))))
    if not np.isclose(lrs[fixed], cfg["fixed_lr"], rtol=1e-6):
        raise ValueError(f"fixed_lr={cfg['fixed_lr']} is not on the lr grid {lrs}")
    targets = np.asarray(cfg["targets"], float)
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    net = lo.DeepLinear((d, d, d))
    kind, size, rank = cfg["shift"]
    ft = lo.tasks.shifted(task, kind=kind, size=size, rank=rank, key=k_shift)

    with stages("pre-train"):
        W0 = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
        run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
    t = run_.t
    with stages(f"fine-tune {len(t)} checkpoints x {len(lrs)} lrs (one call)"):
        fr = lo.finetune(net, run_, ft, lr=lrs, steps=cfg["ft_steps"], key=k_ft)
        pre = np.asarray(fr.pretrain_loss_after, float)
        fin = np.asarray(fr.finetune_loss_after, float)
        diverged = np.asarray(fr.diverged)
    t_th = t[:: cfg["theory_every"]]
    with stages(f"predict {len(t_th)} checkpoints x {len(lrs)} lrs"):
        pred = lo.theory.finetune_curve(task, ft, t_th, widths=net, s0=cfg["init_scale"] ** 2, lr=lrs,
                                        steps=cfg["ft_steps"], rtol=cfg["theory_rtol"])
        pre_th, fin_th = pred.pretrain_loss_after, pred.finetune_loss_after

    m_fixed = C.measured_minimum(t, pre[:, fixed])
    summary = {"width": d, "shift": {"kind": kind, "size": size, "rank": rank}, "ft_steps": cfg["ft_steps"],
               "lr_grid": lrs, "diverged_runs": int(diverged.sum()), "survives_percent": SURVIVES_PERCENT,
               "fixed_lr": {"lr": lrs[fixed], "t_star_measured": m_fixed["t"] if m_fixed["interior"] else None,
                            "degradation_last_vs_min_percent": C.degradation_percent(pre[:, fixed], m_fixed["index"])},
               "targets": {}}
    tuned = {}
    for target in targets:
        lr_t, y = tune(lrs, fin, pre, target)
        lr_th, y_th = tune(lrs, fin_th, pre_th, target)
        reached = np.isfinite(y)
        m = C.measured_minimum(t, y)
        deg = C.degradation_percent(y, m["index"]) if m["index"] >= 0 else float("nan")
        survives = bool(m["interior"] and deg >= SURVIVES_PERCENT)
        tuned[target] = dict(y=y, lr=lr_t, y_th=y_th, lr_th=lr_th, m=m, reached=reached)
        summary["targets"][f"{target:g}"] = {
            "checkpoints_reaching_target": int(reached.sum()),
            "checkpoints_not_reaching_target": int((~reached).sum()),
            "tuned_lr_first_reached": lr_t[reached][0] if reached.any() else None,
            "tuned_lr_last": lr_t[-1] if reached[-1] else None,
            "t_star_measured": m["t"] if m["interior"] else None,
            "measured_min_interior": m["interior"],
            "degradation_last_vs_min_percent": deg,
            "degradation_survives_tuning": survives,
            "predicted_tuned_curve_min_interior": C.measured_minimum(t_th, y_th)["interior"],
            "max_rel_diff_theory_vs_sim": float(np.nanmax(np.abs(y[:: cfg["theory_every"]] - y_th) / y_th))
            if np.any(np.isfinite(y_th) & np.isfinite(y[:: cfg["theory_every"]])) else None,
        }

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        with lp.style():
            fig, (ax, bx) = lp.subplots(1, 2, width="page", aspect=0.62)
            cols = dict(zip(targets, lp.strength_colors(len(targets) + 1, cmap="viridis")[1:]))
            fc = lp.lr_color(lrs[fixed])
            ref = pre[m_fixed["index"], fixed]
            lp.theory(ax, t_th, pre_th[:, fixed] / ref, color=fc)
            lp.simulation(ax, t, pre[:, fixed] / ref, color=fc, marker="s", markersize=2.8)
            for target in targets:
                tu = tuned[target]
                c = cols[target]
                if tu["m"]["index"] < 0:
                    continue
                r = tu["y"][tu["m"]["index"]]
                lp.theory(ax, t_th, tu["y_th"] / r, color=c)
                lp.simulation(ax, t, tu["y"] / r, color=c, markersize=3)
                if not tu["reached"].all():
                    ax.plot(t[~tu["reached"]], np.full((~tu["reached"]).sum(), 0.97), "x", color=c, ms=3.5)
                lp.theory(bx, t_th, tu["lr_th"], color=c)
                lp.simulation(bx, t, tu["lr"], color=c, markersize=3)
            lp.time_axis(ax)
            ax.set_ylim(0.95, 1.5)
            ax.set_ylabel("pre-training loss after\nfine-tuning / its minimum")
            ax.set_title("(a) degradation with and without lr tuning", loc="left")
            lp.time_axis(bx)
            bx.set_yscale("log")
            bx.set_ylabel(r"tuned fine-tuning lr $\eta^*$")
            bx.set_title(r"(b) the tuned learning rate", loc="left")
            from matplotlib.lines import Line2D

            colors = {f"tuned lr, fine-tuning loss $\\leq$ {g:g}": cols[g] for g in targets}
            colors[f"fixed lr $\\eta = {lrs[fixed]:g}$ (squares)"] = fc
            extra = []
            if any(not tuned[g]["reached"].all() for g in targets):
                extra.append(("target not reached by any grid lr", Line2D([], [], marker="x", color="k", linestyle="none")))
            if diverged.any():
                extra.append((f"{int(diverged.sum())} diverged runs excluded", Line2D([], [], color="none")))
            lp.legend(fig, colors=colors, theory_label="theory: same selection on lo.theory.finetune_curve",
                      sim_label=f"simulation: {len(lrs)} lrs in one lo.finetune call", extra=extra,
                      loc="outside lower center", ncol=3)
            lp.save(fig, png)
        C.save_data(npz, t=t, t_theory=t_th, lr_grid=lrs, targets=targets, pretrain_loss_after=pre,
                    finetune_loss_after=fin, diverged=diverged, pretrain_loss_after_theory=pre_th,
                    finetune_loss_after_theory=fin_th,
                    **{f"tuned_{g:g}_pretrain_loss_after": tuned[g]["y"] for g in targets},
                    **{f"tuned_{g:g}_lr": tuned[g]["lr"] for g in targets},
                    **{f"tuned_{g:g}_pretrain_loss_after_theory": tuned[g]["y_th"] for g in targets})
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
