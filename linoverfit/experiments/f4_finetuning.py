"""F4 — catastrophic overtraining under fine-tuning at fixed learning rates, and where the U comes from.

Workload W1 (depth 2, widths 64, sigma_i = 1/i, lr 0.05, 32768 steps) from a balanced
teacher-aligned init (where the theory is exact for gradient flow) is pre-trained; every
checkpoint is fine-tuned for a fixed number of GD steps on a shifted task at several learning
rates, all in one vmapped ``lo.finetune`` call per shift. Markers: simulation; lines: the same
quantities predicted without simulating any parameter by ``lo.theory.curves.finetune_curve`` (mode
dynamics for pre-training, then the function-space flow for fine-tuning).

Top row: the pre-training loss after fine-tuning, in units of its minimum. Which curves are
U-curves is decided by ``lo.turning_point(result, min_rise=0.01)`` (interior minimum, rise >= 1%),
the one function applied to the simulated ``FinetuneResult`` and to the predicted ``FinetunePrediction``:
only those get a predicted T* (dotted) and a measured one (star); the others are drawn faint.
Bottom row: the same loss split as *loss before fine-tuning + forgetting* (forgetting = after -
before, symlog axis because it can be negative). At depth 2 the loss before keeps falling while
the forgetting grows with T (progressive sensitivity: learnt small modes make the same fine-tuning
hurt more); the U is where the growth of forgetting overtakes the fall.

Right column, the control: depth 1 (linear regression: every mode is learnt at once, the
sensitivity does not depend on the weights) fine-tuned briefly on a task whose singular values are
1.3x the pre-training ones. It also shows U-curves, but with *negative* forgetting at the minimum:
fine-tuning helps the pre-training loss of an undertrained start that lies toward the new task, and
the U's rise is that help fading as pre-training completes. A fine-tuning U-curve alone is therefore
no evidence of progressive sensitivity; the sign and growth of the forgetting tell the two apart.

Run: ``python experiments/F4_finetuning.py [--quick] [--out DIR] [--set ft_lrs="(0.01,)"]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F4", "finetuning"
TITLE = "fine-tuning at fixed learning rates: U-curves, loss before + forgetting, and the depth-1 control"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=64,                    # d_in = hidden = d_out (depth 2)
    alpha=1.0,                   # teacher spectrum sigma_i = i**-alpha
    init_scale=1e-3,             # aligned init: s0 = scale**depth
    lr=0.05,                     # pre-training learning rate
    steps=32768,
    checkpoints=64,
    first_step=16,
    ft_lrs=(0.003, 0.01, 0.03),  # fine-tuning learning rates (one vmapped call)
    ft_steps=1000,
    shifts=(("additive", 0.1, None), ("subspace", 0.3, 16)),  # (kind, size, rank)
    control_spectrum_factor=1.3,  # depth-1 control: fine-tuning teacher = same singular vectors, values x this
    control_ft_steps=50,
    theory_rtol=1e-7,            # ODE tolerance of the flow
    draws=5,                     # random shifts behind the headline degradations (median, range)
)
QUICK = dict(width=16, steps=8192, checkpoints=40, ft_steps=500, ft_lrs=(0.01, 0.03), draws=1,
             shifts=(("additive", 0.2, None), ("subspace", 0.3, 8)))
# ----------------------------------------------------------------------------- end of config


def tolerance(t_grid) -> float:
    """Relative tolerance on predicted vs measured T*: 5% (the theory issue's, for aligned init), or
    the checkpoint spacing where that is coarser (the measured argmin cannot be resolved more finely)."""
    return float(max(0.05, np.exp(np.mean(np.diff(np.log(t_grid)))) - 1.0))


def _per_lr(t, steps, fr, pred, lrs, tol, label, checks):
    """Summary entries (one per lr) of one panel, with u_curve verdicts; appends the panel's checks."""
    pre_after = np.asarray(fr.pretrain_loss_after, float)
    before = np.asarray(fr.pretrain_loss_before, float)
    forgetting = pre_after - before[:, None]
    diverged = np.asarray(fr.diverged)
    out = {}
    measured = lo.turning_point(fr, min_rise=C.DEPTH)  # one function for the simulation and its prediction
    predicted = lo.turning_point(pred, min_rise=C.DEPTH)
    for r, lr in enumerate(lrs):
        m, p = measured.curve(r), predicted.curve(r)
        both = m.is_turning_point and p.is_turning_point
        rel = C.rel_diff(p.t_star, m.t_star) if both else None
        name = f"{label}, lr {lr:g}"
        checks.append(C.check(f"{name}: predicted and measured curves agree on being a U-curve",
                              p.is_turning_point == m.is_turning_point, expected=True))
        if both:
            checks.append(C.check(f"{name}: |T* predicted - measured| / measured", rel, at_most=tol))
        i = m.index
        out[f"{lr:g}"] = {
            "is_turning_point": m.is_turning_point,
            "predicted_is_turning_point": p.is_turning_point,
            "t_star_measured": m.t_star if m.is_turning_point else None,
            "t_star_predicted": p.t_star if p.is_turning_point else None,
            "rel_error": rel,
            "rel_error_percent": None if rel is None else 100 * rel,
            "degradation_percent": 100 * m.degradation,
            "rise_percent": 100 * m.rise,
            "depth_percent": 100 * m.depth,
            "interval_measured": m.interval if m.is_turning_point else None,
            "measured_min_step": int(steps[i]),
            # the decomposition at the minimum and at the last checkpoint: after = before + forgetting
            "loss_before_at_min": before[i],
            "forgetting_at_min": forgetting[i, r],
            "loss_before_last": before[-1],
            "forgetting_last": forgetting[-1, r],
            "diverged_runs": int(diverged[:, r].sum()),
            "max_rel_diff_theory_vs_sim_pretrain_loss_after": float(np.nanmax(
                np.abs(pre_after[:, r] - pred.pretrain_loss_after[:, r]) / pred.pretrain_loss_after[:, r])),
            "_m": m,
        }
    return out


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F4_finetuning.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    shifts = [tuple(s) for s in cfg["shifts"]]
    stages = C.Stages(1 + 2 * len(shifts) + 2 + 2, progress)
    k_task, k_init, k_shift, k_ft = jax.random.split(jax.random.key(seed), 4)
    d = cfg["width"]
    lrs = np.asarray(cfg["ft_lrs"], float)
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    checks, panels = [], []

    net = lo.DeepLinear((d, d, d))
    with stages("pre-train"):
        W0 = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
    t = run_.t
    tol = tolerance(t)
    summary = {"width": d, "ft_lrs": lrs, "ft_steps": cfg["ft_steps"], "tolerance": tol,
               "depth_percent": 100 * C.DEPTH, "shifts": {}}
    data = {"t": t, "ft_lrs": lrs, "pretrain_loss": np.asarray(run_.loss)}
    for kind, size, rank in shifts:
        ft = lo.tasks.shifted(task, kind=kind, size=size, rank=rank, key=k_shift, scale="absolute")
        with stages(f"{kind}: fine-tune {len(t)} checkpoints x {len(lrs)} lrs"):
            fr = lo.finetune(net, run_, ft, lr=lrs, steps=cfg["ft_steps"], key=k_ft)
        with stages(f"{kind}: function-space flow prediction"):
            pred = lo.theory.curves.finetune_curve(task, ft, t, widths=net, s0=cfg["init_scale"] ** 2, lr=lrs,
                                            steps=cfg["ft_steps"], rtol=cfg["theory_rtol"])
        per_lr = _per_lr(t, run_.steps, fr, pred, lrs, tol, f"{kind} shift", checks)
        summary["shifts"][kind] = {"size": size, "rank": rank, "depth": 2, "per_lr": per_lr}
        rank_txt = f" (rank {rank})" if rank else ""
        panels.append(dict(title=f"depth 2, {kind} {size:g}{rank_txt}", fr=fr, pred=pred, per_lr=per_lr,
                           steps=cfg["ft_steps"], key=kind))

    # the control: depth 1, whose sensitivity does not grow with what it has learnt
    net1 = lo.DeepLinear((d, d))
    factor = cfg["control_spectrum_factor"]
    ft1 = lo.tasks.shifted(task, kind="spectrum", spectrum=factor * np.asarray(task.spectrum), key=k_shift)
    with stages("depth-1 control: pre-train and fine-tune"):
        W1 = net1.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        run1 = lo.pretrain(net1, W1, task, lr=cfg["lr"], checkpoints=ck)
        fr1 = lo.finetune(net1, run1, ft1, lr=lrs, steps=cfg["control_ft_steps"], key=k_ft)
    with stages("depth-1 control: prediction"):
        pred1 = lo.theory.curves.finetune_curve(task, ft1, t, widths=net1, s0=cfg["init_scale"], lr=lrs,
                                         steps=cfg["control_ft_steps"], rtol=cfg["theory_rtol"])
    per_lr1 = _per_lr(t, run1.steps, fr1, pred1, lrs, tol, "depth-1 control", checks)
    summary["depth1_control"] = {"spectrum_factor": factor, "ft_steps": cfg["control_ft_steps"], "depth": 1,
                                 "per_lr": per_lr1}
    panels.append(dict(title=f"control: depth 1, spectrum x{factor:g}", fr=fr1, pred=pred1, per_lr=per_lr1,
                       steps=cfg["control_ft_steps"], key="depth1_control"))
    # what the figure claims: the depth-2 U-curves' forgetting grows past their minimum; the depth-1
    # control has U-curves whose forgetting at the minimum is negative (fine-tuning helps an undertrained start)
    for pan in panels:
        us = [v for v in pan["per_lr"].values() if v["is_turning_point"]]
        checks.append(C.check(f"{pan['title']}: at least one U-curve", bool(us), expected=True))
        if pan["key"] == "depth1_control":
            checks += [C.check(f"{pan['title']}, U-curve lr {k}: forgetting at the minimum < 0",
                               bool(v["forgetting_at_min"] < 0), expected=True)
                       for k, v in pan["per_lr"].items() if v["is_turning_point"]]
        else:
            checks += [C.check(f"{pan['title']}, U-curve lr {k}: forgetting larger at the end than at the minimum",
                               bool(v["forgetting_at_min"] < v["forgetting_last"]), expected=True)
                       for k, v in pan["per_lr"].items() if v["is_turning_point"]]
    with stages(f"{cfg['draws']} random shifts: the headline degradations"):
        # every learning rate but the largest (no U-curve there), each shift kind, draw 0 the figure's own
        draw_lrs = lrs[:-1] if lrs.size > 1 else lrs
        summary["draws"] = {"n": int(cfg["draws"]), "lrs": draw_lrs,
                            "what": "fine-tuning shift, one key per draw (draw 0: the figure's)", "shifts": {}}
        for kind, size, rank in shifts:
            deg = {f"{lr:g}": [] for lr in draw_lrs}
            turning = {f"{lr:g}": 0 for lr in draw_lrs}
            for key in C.draw_keys(k_shift, int(cfg["draws"])):
                ft = lo.tasks.shifted(task, kind=kind, size=size, rank=rank, key=key, scale="absolute")
                tp = lo.turning_point(lo.finetune(net, run_, ft, lr=draw_lrs, steps=cfg["ft_steps"], key=k_ft),
                                      min_rise=C.DEPTH)
                for r, lr in enumerate(draw_lrs):
                    deg[f"{lr:g}"].append(100 * float(tp.degradation[r]))
                    turning[f"{lr:g}"] += int(bool(tp.is_turning_point[r]))
            summary["draws"]["shifts"][kind] = {
                lr: {"degradation_percent": C.spread(v), "u_curves": turning[lr]} for lr, v in deg.items()}
            checks.append(C.check(f"{kind}: draw 0 reproduces the headline degradations", max(
                abs(summary["draws"]["shifts"][kind][lr]["degradation_percent"]["values"][0]
                    - summary["shifts"][kind]["per_lr"][lr]["degradation_percent"]) for lr in deg), at_most=1e-9))
    summary["checks"] = checks
    rels = [v["rel_error_percent"] for pan in panels for v in pan["per_lr"].values() if v["rel_error_percent"] is not None]
    summary["max_rel_error_percent"] = max(rels) if rels else None
    for pan in panels:
        pan["per_lr_public"] = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                                for k, v in pan["per_lr"].items()}
        data.update({f"{pan['key']}_pretrain_loss_after": pan["fr"].pretrain_loss_after,
                     f"{pan['key']}_pretrain_loss_before": pan["fr"].pretrain_loss_before,
                     f"{pan['key']}_finetune_loss_after": pan["fr"].finetune_loss_after,
                     f"{pan['key']}_diverged": pan["fr"].diverged,
                     f"{pan['key']}_pretrain_loss_after_theory": pan["pred"].pretrain_loss_after,
                     f"{pan['key']}_pretrain_loss_before_theory": pan["pred"].pretrain_loss_before,
                     f"{pan['key']}_finetune_loss_after_theory": pan["pred"].finetune_loss_after})
    for kind in summary["shifts"]:
        summary["shifts"][kind]["per_lr"] = next(p["per_lr_public"] for p in panels if p["key"] == kind)
    summary["depth1_control"]["per_lr"] = panels[-1]["per_lr_public"]

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        _plot(png, t, lrs, panels)
        C.save_data(npz, **data)
    return summary


def _plot(png, t, lrs, panels):
    from matplotlib.lines import Line2D

    with lp.style():
        fig, axes = lp.subplots(2, len(panels), width="page", aspect=0.95, squeeze=False, sharex=True)
        letters = "abcdefgh"
        n_div_total = 0
        for j, pan in enumerate(panels):
            ax, bx = axes[0, j], axes[1, j]
            pre = np.asarray(pan["fr"].pretrain_loss_after, float)
            before = np.asarray(pan["fr"].pretrain_loss_before, float)
            p_after = np.asarray(pan["pred"].pretrain_loss_after, float)
            p_before = np.asarray(pan["pred"].pretrain_loss_before, float)
            diverged = np.asarray(pan["fr"].diverged)
            n_div_total += int(diverged.sum())
            verdicts = []
            for r, lr in enumerate(lrs):
                col = lp.lr_color(lr)
                info = pan["per_lr"][f"{lr:g}"]
                m = info["_m"]
                alpha = 1.0 if info["is_turning_point"] else 0.3  # not a U-curve: drawn faint
                ref = m.min_value  # top row in units of the measured minimum
                lp.theory(ax, t, p_after[:, r] / ref, color=col, alpha=alpha)
                lp.simulation(ax, t, pre[:, r] / ref, color=col, markersize=2.5, alpha=alpha)
                if info["is_turning_point"]:
                    lp.mark_turning_point(ax, predicted=info["t_star_predicted"], color=col)
                    lp.mark_turning_point(bx, predicted=info["t_star_predicted"], color=col)
                    lp.mark_turning_point(ax, measured=m.t_star, y_measured=1.0, color=col)
                    verdicts.append(rf"$\eta$ {lr:g}: U-curve, +{info['degradation_percent']:.3g}%")
                else:
                    verdicts.append(rf"$\eta$ {lr:g}: no U-curve")
                # bottom: the decomposition after = before + forgetting
                lp.theory(bx, t, p_after[:, r] - p_before, color=col, alpha=alpha)
                lp.simulation(bx, t, pre[:, r] - before, color=col, markersize=2.5, alpha=alpha)
                bad = diverged[:, r]
                if bad.any():  # diverged runs are NaN: marked at the top edge, not plotted
                    ax.plot(t[bad], np.full(bad.sum(), 2.0), "x", color=col, ms=4, clip_on=False)
            lp.theory(bx, t, p_before, color="k")
            lp.simulation(bx, t, before, color="k", markersize=2.5)
            if pan["key"] == "depth1_control":
                ax.set_yscale("log")
                ax.set_ylim(0.5, 1e6)
            else:
                ax.set_ylim(0.93, 2.0)
            # the verdicts go in the title: a box in the corner covered the curves
            ax.set_title(f"({letters[j]}) {pan['title']}\n{pan['steps']} fine-tuning steps\n" + "\n".join(verdicts),
                         loc="left", fontsize=7)
            bx.set_title(f"({letters[len(panels) + j]}) = loss before + forgetting", loc="left", fontsize=8)
            bx.set_yscale("symlog", linthresh=1e-4)
            bx.axhline(0, color="0.6", lw=0.6, zorder=0)
            lp.time_axis(bx)
            if j == 0:
                ax.set_ylabel("pre-training loss after\nfine-tuning / its minimum")
                bx.set_ylabel("pre-training loss\n(symlog scale)")
        extra = [("pre-training loss before fine-tuning", Line2D([], [], color="k", lw=1.2)),
                 ("coloured, bottom: forgetting = after - before", Line2D([], [], color="0.5", lw=1.2)),
                 ("faint: no U-curve (lo.turning_point: minimum at an end, or rise < 1%)",
                  Line2D([], [], color="0.5", lw=1.2, alpha=0.3))]
        if n_div_total:
            extra.append((f"diverged fine-tuning run ({n_div_total}, not plotted)",
                          Line2D([], [], marker="x", color="k", linestyle="none")))
        lp.legend(fig, colors={rf"fine-tuning lr $\eta = {lr:g}$": lp.lr_color(lr) for lr in lrs},
                  theory_label="theory: lo.theory.curves.finetune_curve (mode dynamics, then fine-tuning)",
                  sim_label="simulation: GD fine-tuning from each checkpoint",
                  turning_point=True, measured_min=True, extra=extra, loc="outside lower center", ncol=3)
        lp.save(fig, png)


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
