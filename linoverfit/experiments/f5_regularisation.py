"""F5 — regularisation delays the turning point: l2-to-pretrained in fine-tuning, weight decay in pre-training.

The F4 setting at widths 32 (depth 2, sigma_i = 1/i, aligned init, ``additive`` shift, fine-tuning
lr 0.01 for 1000 steps). Top: fine-tuning with an l2 pull toward the pre-trained weights,
(l2/2) sum_l ||W_l - W_l^0||^2, one vmapped ``lo.finetune`` call per strength. No closed form is
claimed here: the pull acts on parameters, and the function-space flow of ``lo.theory`` does not
cover it, so this row is simulation only. Bottom: weight decay lambda on every layer during
pre-training (``lo.pretrain(weight_decay=)``), which the mode dynamics do cover
(ds/dt = 2 s (sigma - lambda - s)): lines are ``lo.theory.finetune_curve(weight_decay=lambda)``.
Right: T* against the strength. A strength *removes* the turning point when the measured curve
has no interior minimum; the summary states, per strength, only what the data show.

Run: ``python experiments/F5_regularisation.py [--quick] [--out DIR] [--set l2s="(0.1, 1.0)"]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F5", "regularisation"
TITLE = "regularisation delays the turning point: T* vs l2-to-pretrained strength and pre-training weight decay"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=32,                              # d_in = hidden = d_out (depth 2)
    alpha=1.0,                             # teacher spectrum sigma_i = i**-alpha
    init_scale=1e-3,                       # aligned init: s0 = scale^2
    lr=0.05,                               # pre-training learning rate
    steps=16384,
    checkpoints=64,
    first_step=16,
    shift=("additive", 0.1, None),         # (kind, size, rank) of the fine-tuning task
    ft_lr=0.01,
    ft_steps=1000,
    l2s=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0),  # l2-to-pretrained strengths (0 = none)
    weight_decays=(0.0, 0.003, 0.01, 0.03, 0.1),
    theory_rtol=1e-7,
)
QUICK = dict(width=16, steps=8192, checkpoints=40, ft_steps=500, l2s=(0.0, 0.03, 0.1, 0.3, 1.0),
             weight_decays=(0.0, 0.01, 0.1))
# ----------------------------------------------------------------------------- end of config

#: Below this degradation (last checkpoint vs minimum, %) a remaining interior minimum is called negligible.
NEGLIGIBLE_PERCENT = 1.0


def verdict(m: dict, deg: float, t_ref: float, grid_ratio: float) -> str:
    """What the measured curve shows relative to the unregularised turning point ``t_ref``."""
    if not m["interior"]:
        return "removed (no interior minimum: the curve decreases to the last checkpoint)"
    if deg < NEGLIGIBLE_PERCENT:
        tail = f"degradation below {NEGLIGIBLE_PERCENT:g}%"
        shift = f"{100 * (m['t'] / t_ref - 1):+.0f}%"
        return f"delayed ({shift}), {tail}" if m["t"] > t_ref * grid_ratio else f"not delayed ({shift}), {tail}"
    shift = f"{100 * (m['t'] / t_ref - 1):+.0f}%"
    if m["t"] > t_ref * grid_ratio:
        return f"delayed ({shift})"
    if m["t"] < t_ref / grid_ratio:
        return f"earlier ({shift})"
    return f"unchanged within one checkpoint spacing ({shift})"


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F5_regularisation.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    l2s = np.asarray(cfg["l2s"], float)
    wds = np.asarray(cfg["weight_decays"], float)
    if l2s[0] != 0 or wds[0] != 0:
        raise ValueError("l2s and weight_decays must start with 0.0 (the unregularised reference)")
    stages = C.Stages(1 + len(l2s) + len(wds) + 1, progress)
    k_task, k_init, k_shift, k_ft = jax.random.split(jax.random.key(seed), 4)
    d = cfg["width"]
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    net = lo.DeepLinear((d, d, d))
    s0 = cfg["init_scale"] ** 2
    kind, size, rank = cfg["shift"]
    ft = lo.tasks.shifted(task, kind=kind, size=size, rank=rank, key=k_shift)
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    W0 = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)

    with stages("pre-train"):
        run0 = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
    t = run0.t
    grid_ratio = float(np.exp(np.mean(np.diff(np.log(t)))))

    l2_curves, l2_meas = [], []
    for l2 in stages.loop(l2s, "fine-tune with l2"):
        fr = lo.finetune(net, run0, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], l2=float(l2), key=k_ft)
        y = np.asarray(fr.pretrain_loss_after, float)[:, 0]
        l2_curves.append(y)
        l2_meas.append(C.measured_minimum(t, y))
    wd_curves, wd_theory, wd_meas, wd_pred = [], [], [], []
    for wd in stages.loop(wds, "pre-train with weight decay, fine-tune, predict"):
        run_w = run0 if wd == 0 else lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck, weight_decay=float(wd))
        fr = lo.finetune(net, run_w, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], key=k_ft)
        y = np.asarray(fr.pretrain_loss_after, float)[:, 0]
        pred = lo.theory.finetune_curve(task, ft, t, widths=net, s0=s0, lr=cfg["ft_lr"], steps=cfg["ft_steps"],
                                        weight_decay=float(wd), rtol=cfg["theory_rtol"])
        yp = pred.pretrain_loss_after[:, 0]
        wd_curves.append(y)
        wd_theory.append(yp)
        wd_meas.append(C.measured_minimum(t, y))
        wd_pred.append(C.measured_minimum(t, yp))

    def table(values, curves, meas, pred=None):
        out = {}
        t_ref = meas[0]["t"]
        for i, v in enumerate(values):
            m = meas[i]
            deg = C.degradation_percent(curves[i], m["index"])
            row = {"t_star_measured": m["t"] if m["interior"] else None,
                   "measured_min_interior": m["interior"],
                   "degradation_last_vs_min_percent": deg,
                   "verdict": "reference (no regularisation)" if i == 0 else verdict(m, deg, t_ref, grid_ratio)}
            if pred is not None:
                p = pred[i]
                row["t_star_predicted"] = p["t"] if p["interior"] else None
                row["predicted_min_interior"] = p["interior"]
                row["rel_error"] = C.rel_diff(p["t"], m["t"]) if (p["interior"] and m["interior"]) else None
            out[f"{v:g}"] = row
        return out

    summary = {"width": d, "shift": {"kind": kind, "size": size, "rank": rank}, "ft_lr": cfg["ft_lr"],
               "ft_steps": cfg["ft_steps"], "checkpoint_spacing_ratio": grid_ratio,
               "negligible_percent": NEGLIGIBLE_PERCENT,
               "l2_to_pretrained": table(l2s, l2_curves, l2_meas),
               "pretrain_weight_decay": table(wds, wd_curves, wd_meas, wd_pred)}

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        with lp.style():
            fig, axes = lp.subplots(2, 2, width="page", aspect=0.62,
                                    gridspec_kw={"width_ratios": [1.6, 1]})
            rows = [("l2", l2s, l2_curves, None, l2_meas, None, r"l2 to pre-trained $\lambda_2$", r"$\lambda_2$"),
                    ("wd", wds, wd_curves, wd_theory, wd_meas, wd_pred, r"weight decay $\lambda$", r"$\lambda$")]
            for j, (key, vals, curves, theo, meas, pred, label, sym) in enumerate(rows):
                ax, bx = axes[j]
                cols = lp.strength_colors(len(vals))
                for i, v in enumerate(vals):
                    ref = curves[i][meas[i]["index"]]
                    if theo is not None:
                        lp.theory(ax, t, theo[i] / ref, color=cols[i])
                    lp.simulation(ax, t, curves[i] / ref, color=cols[i], markersize=2.8)
                    if meas[i]["interior"]:
                        lp.mark_turning_point(ax, measured=meas[i]["t"], y_measured=1.0, color=cols[i])
                    if pred is not None and pred[i]["interior"]:
                        lp.mark_turning_point(ax, predicted=pred[i]["t"], color=cols[i])
                lp.time_axis(ax)
                ax.set_ylim(0.95, 1.35)
                ax.set_ylabel("pre-training loss after\nfine-tuning / its minimum")
                what = "l2 pull toward the pre-trained weights (fine-tuning)" if key == "l2" else \
                    "weight decay in pre-training"
                ax.set_title(f"({'ac'[j]}) {what}", loc="left")
                lp.legend(ax, colors={f"{sym} = {v:g}": c for v, c in zip(vals, cols)},
                          theory_label="theory (mode dyn. + flow)" if theo is not None else None,
                          sim_label="simulation (GD)", turning_point=theo is not None, measured_min=True,
                          loc="center left", fontsize=6)
                # right: T* against the strength (0 drawn as the reference line)
                t0 = meas[0]["t"]
                bx.axhline(t0, color="0.5", lw=0.8, ls="--")
                bx.text(vals[-1] * 1.5, t0 / 1.03, "no regularisation ", va="top", ha="right", fontsize=6, color="0.4")
                xs = vals[1:]
                tm = np.array([m["t"] if m["interior"] else np.nan for m in meas[1:]])
                if pred is not None:
                    tpd = np.array([p["t"] if p["interior"] else np.nan for p in pred[1:]])
                    lp.theory(bx, xs, tpd, color="k", marker=None)
                lp.simulation(bx, xs, tm, color="k")
                top = 1.8 * np.nanmax(np.concatenate([[t0], tm] + ([tpd] if pred is not None else [])))
                for x, m in zip(xs, meas[1:]):
                    if not m["interior"]:
                        bx.annotate("removed", xy=(x, top), xytext=(x, top / 1.9), ha="center", fontsize=6,
                                    arrowprops=dict(arrowstyle="->", lw=0.8))
                bx.set(xscale="log", yscale="log", ylim=(0.7 * t0, top), xlabel=label,
                       xlim=(xs[0] / 1.6, xs[-1] * 1.6), ylabel=r"turning point $T^*$")
                from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

                bx.xaxis.set_minor_formatter(NullFormatter())
                bx.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                bx.yaxis.set_major_formatter(ScalarFormatter())
                bx.yaxis.set_minor_formatter(NullFormatter())
                bx.set_title(f"({'bd'[j]}) measured $T^*$ vs {sym}" + (" (line: theory)" if pred else ""),
                             loc="left")
            lp.save(fig, png)
        C.save_data(npz, t=t, l2s=l2s, weight_decays=wds, l2_pretrain_loss_after=np.array(l2_curves),
                    wd_pretrain_loss_after=np.array(wd_curves), wd_pretrain_loss_after_theory=np.array(wd_theory),
                    l2_t_star_measured=[m["t"] if m["interior"] else np.nan for m in l2_meas],
                    wd_t_star_measured=[m["t"] if m["interior"] else np.nan for m in wd_meas],
                    wd_t_star_predicted=[p["t"] if p["interior"] else np.nan for p in wd_pred])
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
