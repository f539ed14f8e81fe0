"""F5 — the regularisation trade-off (Springer et al., Theorem 4.7): less degradation, worse fine-tuning.

The F4 setting at widths 32 (depth 2, sigma_i = 1/i, aligned init, ``additive`` shift, fine-tuning
lr 0.02 for 500 steps, flow time 10 as F4's 0.01 x 1000). Top row: fine-tuning with an l2 pull toward the pre-trained weights,
(l2/2) sum_l ||W_l - W_l^0||^2, one ``lo.finetune`` call per strength (same shapes: compiled
once). No closed form is claimed: the pull acts on parameters and the function-space flow of
``lo.theory`` does not cover it, so this row is simulation only. Bottom row: weight decay lambda
on every layer during pre-training (``lo.pretrain(weight_decay=)``), which the mode dynamics do
cover (ds/dt = 2 s (sigma - lambda - s)): lines are ``lo.theory.curves.finetune_curve(weight_decay=)``.

Strengths run from none to beyond the point where the degradation (last checkpoint over the
minimum) falls below 1%. Columns: the U-curves; T* against the strength; the trade-off, i.e. the
degradation against the fine-tuning loss after fine-tuning the last checkpoint (the cost), one
point per strength. Every curve is judged by ``lo.theory.u_curve`` (an interior minimum and a
rise of at least 1%). The summary reports the measured power law of the degradation in the
strength over the strongest strengths that still have a turning point.

Run: ``python experiments/F5_regularisation.py [--quick] [--out DIR] [--set l2s="(0.0, 0.1, 1.0)"]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64
from linoverfit.validation import cast_objective

NUMBER, NAME = "F5", "regularisation"
TITLE = "the regularisation trade-off: degradation and T* against the fine-tuning loss given up"

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
    ft_lr=0.02,                            # tau = 10 as in F4 (0.01 x 1000) in half the steps; lr * l2 <= 0.2
    ft_steps=500,
    l2s=(0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),            # l2-to-pretrained strengths (0 = none)
    weight_decays=(0.0, 0.01, 0.03, 0.1),                  # pre-training weight decay
    theory_rtol=1e-7,
)
QUICK = dict(width=16, steps=8192, checkpoints=32, ft_steps=250, ft_lr=0.04, l2s=(0.0, 0.1, 1.0, 10.0),
             weight_decays=(0.0, 0.03, 0.1))
# ----------------------------------------------------------------------------- end of config

#: The degradation (%) below which a strength is reported as "below 1%".
NEGLIGIBLE_PERCENT = 1.0


def row(result, ref_ft):
    """Summary entry of one strength from a fine-tuning result, simulated or predicted (one learning
    rate): the U-curve verdict of its pre-training loss after fine-tuning (``lo.turning_point``, the
    one definition for both) and the fine-tuning cost."""
    u = lo.turning_point(result, min_rise=C.DEPTH).curve(0)
    t = np.asarray(result.t)
    y = np.asarray(result.pretrain_loss_after, float)[:, 0]
    ft_after = np.asarray(result.finetune_loss_after, float)[:, 0]
    interior = 0 < u.index < len(t) - 1
    return {"t_star_measured": u.t_star if interior else None,
            "measured_min_interior": bool(interior),
            "degradation_last_vs_min_percent": 100.0 * u.degradation,
            "rise_percent": 100.0 * u.rise,
            "is_turning_point": u.is_turning_point,
            "depth_percent": 100.0 * u.depth,
            "interval": list(u.interval),
            "finetune_loss_after": float(ft_after[-1]),
            "finetune_loss_cost_percent": 100.0 * (float(ft_after[-1]) / ref_ft - 1.0),
            "pretrain_loss_after_last": float(y[-1])}


def scaling(strengths, rows) -> dict:
    """Measured power law ``degradation ~ strength**exponent`` and where the degradation falls below 1%.

    The exponent is the least-squares slope of log degradation against log strength over the
    largest three strengths > 0 of the leading run of strengths whose measured curve still has an
    interior minimum (a curve without one has no degradation to fit: the regulariser removed the
    minimum there, ``removed_from``). ``first_below_1_percent``: the smallest strength whose
    degradation is below 1%, with its fine-tuning-loss cost; ``all_stronger_below_1_percent``:
    whether every stronger one stays below too.
    """
    s = np.asarray(strengths, float)
    deg = np.array([r["degradation_last_vs_min_percent"] for r in rows])
    interior = np.array([r["measured_min_interior"] for r in rows])
    stop = next((i for i in range(1, len(s)) if not interior[i]), len(s))
    use = np.arange(1, stop)[deg[1:stop] > 0][-3:]
    out = {"exponent": None, "fitted_strengths": [float(v) for v in s[use]],
           "removed_from": float(s[stop]) if stop < len(s) else None}
    if use.size >= 2:
        out["exponent"] = float(np.polyfit(np.log(s[use]), np.log(deg[use]), 1)[0])
    below = np.flatnonzero(deg < NEGLIGIBLE_PERCENT)
    first = int(below[0]) if below.size else None
    out["first_below_1_percent"] = None if first is None else float(s[first])
    out["finetune_loss_cost_percent_there"] = None if first is None else rows[first]["finetune_loss_cost_percent"]
    out["all_stronger_below_1_percent"] = bool(first is not None and np.all(deg[first:] < NEGLIGIBLE_PERCENT))
    return out


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F5_regularisation.png`` / ``.npz`` in ``out_dir``; return the headline numbers.

    In float64: at the strongest pulls the degradation is ~1e-5 of the loss, below what float32
    resolves (in float32 the fitted exponent was round-off: -2.29 on one machine, -2.22 on another;
    float64 gives -2.02). The draws are the float32 ones, cast, so the other numbers are unchanged
    to float32 precision."""
    with enable_x64(True):
        return _run(out_dir, quick, seed, config, progress)


def _run(out_dir, quick, seed, config, progress) -> dict:
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    l2s = np.asarray(cfg["l2s"], float)
    wds = np.asarray(cfg["weight_decays"], float)
    if l2s[0] != 0 or wds[0] != 0:
        raise ValueError("l2s and weight_decays must start with 0.0 (the unregularised reference)")
    stages = C.Stages(1 + len(l2s) + len(wds) + 1, progress)
    k_task, k_init, k_shift, k_ft = jax.random.split(jax.random.key(seed), 4)
    d = cfg["width"]
    # the float32 draws of the other figures (and of F5 before it ran in float64), cast to float64
    task32 = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task, dtype=np.float32)
    net = lo.DeepLinear((d, d, d))
    s0 = cfg["init_scale"] ** 2
    kind, size, rank = cfg["shift"]
    ft32 = lo.tasks.shifted(task32, kind=kind, size=size, rank=rank, key=k_shift, scale="absolute")
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    W0 = tuple(w.astype(np.float64) for w in net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task32))
    task, ft = (cast_objective(tk, np.float64) for tk in (task32, ft32))

    with stages("pre-train"):
        run0 = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
    t = np.asarray(run0.t, float)

    l2_res, wd_res, wd_res_th = [], [], []
    for l2 in stages.loop(l2s, "fine-tune with l2"):
        l2_res.append(lo.finetune(net, run0, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], l2=float(l2), key=k_ft))
    for wd in stages.loop(wds, "pre-train with weight decay, fine-tune, predict"):
        run_w = run0 if wd == 0 else lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck, weight_decay=float(wd))
        wd_res.append(lo.finetune(net, run_w, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], key=k_ft))
        wd_res_th.append(lo.theory.curves.finetune_curve(task, ft, t, widths=net, s0=s0, lr=cfg["ft_lr"],
                                                         steps=cfg["ft_steps"], weight_decay=float(wd),
                                                         rtol=cfg["theory_rtol"]))
    def curves(results, field):  # (C,) per strength, at the one fine-tuning learning rate
        return [np.asarray(getattr(r, field), float)[:, 0] for r in results]

    l2_pre, l2_ft = curves(l2_res, "pretrain_loss_after"), curves(l2_res, "finetune_loss_after")
    wd_pre, wd_ft = curves(wd_res, "pretrain_loss_after"), curves(wd_res, "finetune_loss_after")
    wd_pre_th, wd_ft_th = curves(wd_res_th, "pretrain_loss_after"), curves(wd_res_th, "finetune_loss_after")
    l2_rows = [row(r, l2_ft[0][-1]) for r in l2_res]
    wd_rows = [row(r, wd_ft[0][-1]) for r in wd_res]
    wd_rows_th = [row(r, wd_ft_th[0][-1]) for r in wd_res_th]
    for r, p in zip(wd_rows, wd_rows_th):
        r["t_star_predicted"] = p["t_star_measured"]
        r["predicted_is_turning_point"] = p["is_turning_point"]
        r["predicted_degradation_percent"] = p["degradation_last_vs_min_percent"]
        r["predicted_finetune_loss_after"] = p["finetune_loss_after"]
        r["rel_error"] = (C.rel_diff(p["t_star_measured"], r["t_star_measured"])
                          if (p["is_turning_point"] and r["is_turning_point"]) else None)

    summary = {"dtype": "float64", "width": d, "depth": net.depth, "shift": {"kind": kind, "size": size, "rank": rank}, "ft_lr": cfg["ft_lr"],
               "ft_steps": cfg["ft_steps"], "checkpoints": len(t), "l2s": l2s, "weight_decays": wds,
               "checkpoint_spacing_ratio": float(np.exp(np.mean(np.diff(np.log(t))))),
               "negligible_percent": NEGLIGIBLE_PERCENT, "depth_percent": 100.0 * C.DEPTH,
               "l2_to_pretrained": {f"{v:g}": r for v, r in zip(l2s, l2_rows)},
               "pretrain_weight_decay": {f"{v:g}": r for v, r in zip(wds, wd_rows)},
               "scaling": {"l2_to_pretrained": scaling(l2s, l2_rows),
                           "pretrain_weight_decay": scaling(wds, wd_rows)}}

    checks = [C.check(f"{key}: a strength with degradation below {NEGLIGIBLE_PERCENT:g}%",
                      summary["scaling"][key]["first_below_1_percent"] is not None, expected=True)
              for key in ("l2_to_pretrained", "pretrain_weight_decay")]
    # aligned init: the flow predicts T* to the same 5% as F3/F4
    checks += [C.check(f"weight decay {v:g}: predicted T* vs measured (relative)", r["rel_error"], at_most=0.05)
               for v, r in zip(wds, wd_rows) if r["is_turning_point"]]
    checks += [C.check(f"weight decay {v:g}: predicted and measured curves agree on the turning point",
                       r["predicted_is_turning_point"], expected=r["is_turning_point"]) for v, r in zip(wds, wd_rows)]
    summary["checks"] = checks

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        from matplotlib.ticker import NullFormatter

        with lp.style():
            fig, axes = lp.subplots(2, 3, width="page", aspect=0.78,
                                    gridspec_kw={"width_ratios": [1.5, 1, 1]})
            spec = [("l2", l2s, l2_pre, l2_ft, None, None, l2_rows, None, r"$\lambda_2$",
                     "l2 to the pre-trained weights (fine-tuning)"),
                    ("wd", wds, wd_pre, wd_ft, wd_pre_th, wd_ft_th, wd_rows, wd_rows_th, r"$\lambda$",
                     "weight decay in pre-training")]
            strength_colors = {}
            for j, (key, vals, pre, ftl, pre_th, ft_th, rows, rows_th, sym, what) in enumerate(spec):
                ax, bx, cx = axes[j]
                cols = lp.strength_colors(len(vals))
                for i, v in enumerate(vals):
                    ref = np.min(pre[i])
                    if pre_th is not None:
                        lp.theory(ax, t, pre_th[i] / ref, color=cols[i])
                    lp.simulation(ax, t, pre[i] / ref, color=cols[i], markersize=2.6)
                    if rows[i]["is_turning_point"]:
                        lp.mark_turning_point(ax, measured=rows[i]["t_star_measured"], y_measured=1.0, color=cols[i])
                lp.time_axis(ax)
                ax.set_ylim(0.97, 1.45)
                ax.set_ylabel("pre-training loss after\nfine-tuning / its minimum")
                ax.set_title(f"({'ad'[j]}) {what}", loc="left")
                # T* against the strength (turning points only; 0 drawn as the reference line)
                xs = vals[1:]
                tm = np.array([r["t_star_measured"] if r["is_turning_point"] else np.nan for r in rows[1:]])
                t0 = rows[0]["t_star_measured"]
                bx.axhline(t0, color="0.5", lw=0.8, ls="--")
                if rows_th is not None:
                    tpd = np.array([r["t_star_measured"] if r["is_turning_point"] else np.nan for r in rows_th[1:]])
                    lp.theory(bx, xs, tpd, color="k")
                lp.simulation(bx, xs, tm, color="k")
                none = np.array([not r["is_turning_point"] for r in rows[1:]])
                bx.plot(xs[none], np.full(none.sum(), 0.8 * t0), "x", color="k", ms=4)
                bx.set(xscale="log", yscale="log", xlabel=f"strength {sym}", ylabel=r"turning point $T^*$",
                       xlim=(xs[0] / 1.6, xs[-1] * 1.6))
                bx.xaxis.set_minor_formatter(NullFormatter())
                bx.set_title(f"({'be'[j]}) $T^*$ (x: none)", loc="left")
                # the trade-off: degradation against the fine-tuning loss after (last checkpoint)
                deg = np.array([r["degradation_last_vs_min_percent"] for r in rows])
                cost = np.array([r["finetune_loss_after"] for r in rows])
                if rows_th is not None:
                    lp.theory(cx, [r["finetune_loss_after"] for r in rows_th],
                              [r["degradation_last_vs_min_percent"] for r in rows_th], color="k")
                for i in range(len(vals)):
                    lp.simulation(cx, cost[i:i + 1], deg[i:i + 1], color=cols[i], markersize=4)
                cx.axhline(NEGLIGIBLE_PERCENT, color="0.5", lw=0.8, ls=":")
                cx.set(xscale="log", yscale="symlog", xlabel="fine-tuning loss after fine-tuning\n(last checkpoint)",
                       ylabel="degradation: last checkpoint\nover the minimum (%)")
                cx.set_yscale("symlog", linthresh=0.01)
                cx.set_ylim(-0.001, 1.5 * max(deg.max(), 1.0))
                cx.set_title(f"({'cf'[j]}) the trade-off (dotted: 1%)", loc="left")
                # the strengths' colours go in the figure legend: inside a panel they covered data
                strength_colors.update({f"({'ad'[j]}-{'cf'[j]}) {sym} = {v:g}": c for v, c in zip(vals, cols)})
            from matplotlib.lines import Line2D

            lp.legend(fig, colors=strength_colors,
                      theory_label="theory: mode dynamics + function-space flow (weight decay only)",
                      sim_label="simulation (GD)", measured_min=True, loc="outside lower center", ncol=5,
                      extra=[("no regularisation (dashed)", Line2D([], [], color="0.5", lw=0.8, ls="--")),
                             ("no turning point", Line2D([], [], color="k", marker="x", ls="none"))])
            lp.save(fig, png)
        C.save_data(npz, t=t, l2s=l2s, weight_decays=wds, l2_pretrain_loss_after=np.array(l2_pre),
                    l2_finetune_loss_after=np.array(l2_ft), wd_pretrain_loss_after=np.array(wd_pre),
                    wd_finetune_loss_after=np.array(wd_ft), wd_pretrain_loss_after_theory=np.array(wd_pre_th),
                    wd_finetune_loss_after_theory=np.array(wd_ft_th),
                    l2_t_star_measured=[r["t_star_measured"] if r["is_turning_point"] else np.nan for r in l2_rows],
                    wd_t_star_measured=[r["t_star_measured"] if r["is_turning_point"] else np.nan for r in wd_rows],
                    wd_t_star_predicted=[r["t_star_measured"] if r["is_turning_point"] else np.nan for r in wd_rows_th])
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
