"""F11 — early exposure: pre-training on a mixture that contains some of the fine-tuning task.

Depth 2, widths 16, sigma_i = 1/i. Pre-training minimises (1 - rho) L_pre + rho L_ft, the exact
equivalent task ``lo.tasks.mixture(task, ft, rho)`` (teacher (1 - rho) A + rho B), from a balanced
init aligned with it, by full-batch GD; every checkpoint is then fine-tuned on the fine-tuning task
for a fixed budget (``lo.finetune``). Markers: the loss on the ORIGINAL pre-training task after
fine-tuning, against pre-training time (U-curves) and against the original-task loss before
fine-tuning (matched pre-training performance). Lines: gradient-flow theory for the mixture
teacher (``lo.theory.curves.finetune_curve(..., pretrain_task=task)``: the fine-tuned maps scored on the
original task, in float64).
Turning points and degradation of the simulated and the predicted result alike by ``lo.turning_point``.

Run: ``python experiments/F11_early_exposure.py [--quick] [--out DIR] [--set rhos="(0.0, 0.2)"]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from matplotlib.ticker import NullFormatter

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C

NUMBER, NAME = "F11", "early_exposure"
TITLE = "early exposure: mixing a fraction rho of the fine-tuning task into pre-training"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,                   # d_in = hidden = d_out (depth 2)
    alpha=1.0,                  # teacher spectrum sigma_i = i**-alpha
    init_scale=0.05,            # aligned init: s0 = scale^2
    lr=0.02,
    steps=5000,                 # t_final = 100
    checkpoints=32,
    first_step=8,
    rhos=(0.0, 0.05, 0.1, 0.2, 0.4),
    ft_shift=0.3,               # additive shift of the fine-tuning task
    ft_lr=0.02,
    ft_steps=100,               # fine-tuning flow time 2
    draws=5,                    # random shifts behind the headline degradations (median and range)
)
QUICK = dict(width=8, steps=2000, checkpoints=24, rhos=(0.0, 0.1, 0.4), draws=1)
# ----------------------------------------------------------------------------- end of config


def _spacing(t) -> float:
    """Relative spacing of the log checkpoint grid (a minimum read off it is not finer than that), at least 5%."""
    return float(max(0.05, np.exp(np.mean(np.diff(np.log(t)))) - 1.0))


def _draws(cfg, net, task, ck, k_shift, rhos) -> dict:
    """The headline degradations (rho = first and last) over ``cfg["draws"]`` random fine-tuning shifts,
    draw 0 the figure's own: measured (GD) only, judged by ``lo.turning_point``."""
    out = {f"{r:g}": [] for r in rhos}
    for key in C.draw_keys(k_shift, int(cfg["draws"])):
        ft = lo.tasks.shifted(task, kind="additive", size=cfg["ft_shift"], key=key, scale="absolute")
        for rho in rhos:
            mix = lo.tasks.mixture(task, ft, rho)
            W0 = net.init(jax.random.key(0), scale=cfg["init_scale"], scheme="aligned", task=mix)
            fr = lo.finetune(net, lo.pretrain(net, W0, mix, lr=cfg["lr"], checkpoints=ck), ft, lr=cfg["ft_lr"],
                             steps=cfg["ft_steps"], pretrain_task=task)
            out[f"{rho:g}"].append(100 * lo.turning_point(fr, min_rise=C.DEPTH).curve(0).degradation)
    lo_, hi = (np.asarray(out[f"{r:g}"]) for r in rhos)
    return {"n": int(cfg["draws"]), "what": "additive fine-tuning shift, one key per draw (draw 0: the figure's)",
            "degradation_percent": {k: C.spread(v) for k, v in out.items()},
            "increase_points": C.spread(hi - lo_)}


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F11_early_exposure.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    rhos = tuple(float(r) for r in cfg["rhos"])
    stages = C.Stages(len(rhos) + 2, progress)
    k_task, k_shift = jax.random.split(jax.random.key(seed), 2)
    d, lr = cfg["width"], cfg["lr"]
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    ft = lo.tasks.shifted(task, kind="additive", size=cfg["ft_shift"], key=k_shift, scale="absolute")
    net = lo.DeepLinear((d, d, d))
    s0 = cfg["init_scale"] ** 2
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    t = lr * np.asarray(ck, float)
    t_th = np.geomspace(t[0], t[-1], 120)

    res, data = {}, {"t": t, "t_theory": t_th, "rhos": rhos}
    for rho in rhos:
        with stages(f"rho = {rho:g}: pre-train, fine-tune, theory"):
            mix = lo.tasks.mixture(task, ft, rho)
            W0 = net.init(jax.random.key(0), scale=cfg["init_scale"], scheme="aligned", task=mix)
            run_ = lo.pretrain(net, W0, mix, lr=lr, checkpoints=ck)
            fr = lo.finetune(net, run_, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)
            before = np.asarray(fr.pretrain_loss_before, float)
            after = np.asarray(fr.pretrain_loss_after, float)[:, 0]
            ft_after = np.asarray(fr.finetune_loss_after, float)[:, 0]
            pred = lo.theory.curves.finetune_curve(mix, ft, t_th, widths=net, s0=s0, lr=cfg["ft_lr"], steps=cfg["ft_steps"],
                                                   pretrain_task=task)
            th_after = np.asarray(pred.pretrain_loss_after, float)[:, 0]
            # one definition for the simulated and the predicted result
            u, th_u = (lo.turning_point(r, min_rise=C.DEPTH).curve(0) for r in (fr, pred))
            res[rho] = dict(before=before, after=after, ft_after=ft_after, th=th_after, u=u, th_u=th_u)
            data.update({f"rho{rho:g}_pretrain_loss_before": before, f"rho{rho:g}_pretrain_loss_after_ft": after,
                         f"rho{rho:g}_finetune_loss_after": ft_after, f"rho{rho:g}_pretrain_loss_after_ft_theory": th_after})

    # matched pre-training performance: the lowest original-task loss every run reaches (x 1.05),
    # read where each run first gets there (log-linear between checkpoints)
    level = 1.05 * max(float(np.min(r["before"])) for r in res.values())
    per = {}
    for rho, r in res.items():
        i = int(np.argmax(r["before"] <= level))
        if i == 0:
            at = float(r["after"][0])
        else:  # interpolate after-ft loss in the before-loss between checkpoints i-1 and i
            x0, x1 = np.log(r["before"][i - 1]), np.log(r["before"][i])
            w = (np.log(level) - x0) / (x1 - x0)
            at = float(np.exp((1 - w) * np.log(r["after"][i - 1]) + w * np.log(r["after"][i])))
        per[f"{rho:g}"] = {
            "t_star": r["u"].t_star, "is_turning_point": r["u"].is_turning_point,
            "degradation_percent": 100 * r["u"].degradation,
            "t_star_predicted": r["th_u"].t_star, "degradation_percent_predicted": 100 * r["th_u"].degradation,
            "pretrain_loss_floor": float(np.min(r["before"])),
            "after_ft_at_matched_loss": at,
            "final_after_ft": float(r["after"][-1]),
            "final_finetune_loss": float(r["ft_after"][-1]),
        }
    r0, rmax = per[f"{rhos[0]:g}"], per[f"{rhos[-1]:g}"]
    for v in per.values():
        v["after_ft_at_matched_vs_rho0_percent"] = 100 * (v["after_ft_at_matched_loss"] / r0["after_ft_at_matched_loss"] - 1)
    better = rmax["after_ft_at_matched_loss"] < r0["after_ft_at_matched_loss"]
    deg_word = "rises" if rmax["degradation_percent"] > r0["degradation_percent"] else "falls"
    verdict = (
        f"Mixing a fraction rho of the fine-tuning task into pre-training "
        f"{'improves' if better else 'worsens'} retention at matched pre-training loss ({level:.3g} on the original "
        f"task): the original-task loss after fine-tuning changes by {rmax['after_ft_at_matched_vs_rho0_percent']:.3g}% "
        f"at rho={rhos[-1]:g} relative to rho={rhos[0]:g}, "
        f"{'in line with' if better else 'against'} the retention gain reported by Feng et al. (2026). "
        f"Degradation of the fine-tuning U-curve {deg_word} from {r0['degradation_percent']:.3g}% (rho={rhos[0]:g}) to "
        f"{rmax['degradation_percent']:.3g}% (rho={rhos[-1]:g}) and T* moves from {r0['t_star']:.3g} to "
        f"{rmax['t_star']:.3g}; the flow theory predicts both. Why, in the linear model: the mixture teacher "
        f"(1-rho)A + rho B already lies part of the way to B, and a fixed fine-tuning budget is a contraction toward B "
        f"from wherever it starts, so it ends nearer B and farther from A; the mixture also puts a floor "
        f"rho^2 ||B - A||^2 / 2 under the original loss before fine-tuning ({rmax['pretrain_loss_floor']:.3g} at "
        f"rho={rhos[-1]:g}). Condition: fixed fine-tuning budget, quadratic losses, no capacity limit (every run can "
        f"fit both tasks' shared modes); a gain needs fine-tuning stopped at matched fine-tuning loss or limited capacity."
    )
    with stages(f"{cfg['draws']} random shifts: the headline degradations"):
        draws = _draws(cfg, net, task, ck, k_shift, (rhos[0], rhos[-1]))
    draw_checks = [C.check(f"draw 0 reproduces the headline degradation at rho={r:g}",
                           abs(draws["degradation_percent"][f"{r:g}"]["values"][0] - per[f"{r:g}"]["degradation_percent"]),
                           at_most=1e-9) for r in (rhos[0], rhos[-1])]
    summary = {
        "width": d, "lr": lr, "steps": cfg["steps"], "rhos": list(rhos), "ft_shift": cfg["ft_shift"],
        "ft_lr": cfg["ft_lr"], "ft_steps": cfg["ft_steps"], "matched_pretrain_loss": level,
        "rho": per,
        # flow theory vs GD (lr 0.02): T* read off a 32-point log grid, so the grid spacing bounds the error
        "draws": draws,
        "checks": [C.check(f"rho={k}: predicted vs measured T*, relative", C.rel_diff(v["t_star_predicted"], v["t_star"]),
                           at_most=_spacing(t)) for k, v in per.items()] + draw_checks,
        "condition": "depth 2, population loss, full-batch GD from a balanced init aligned with the mixture; "
                     "fine-tuning flow time ft_lr x ft_steps; retention scored on the original task",
        "verdict": verdict,
    }

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        cols = lp.strength_colors(len(rhos))
        with lp.style():
            fig, axes = lp.subplots(2, 2, width="page", aspect=0.55, squeeze=False)
            (a, ix), (b, c) = axes
            for j, (rho, r) in enumerate(res.items()):
                lp.theory(a, t_th, r["th"], color=cols[j])
                lp.simulation(a, t, r["after"], color=cols[j], markersize=3)
                lp.mark_turning_point(a, predicted=r["th_u"].t_star, color=cols[j])
                lp.simulation(b, r["before"], r["after"], color=cols[j], markersize=3)
            # (b) the minima lie within a factor 2 in t and 30% in loss: zoomed, so that their stars do not pile up
            t_lo = min(r["u"].t_star for r in res.values())
            t_hi = max(r["u"].t_star for r in res.values())
            for j, (rho, r) in enumerate(res.items()):
                keep = (t >= 0.5 * t_lo) & (t <= 2.0 * t_hi)
                lp.theory(ix, t_th, r["th"], color=cols[j])
                lp.simulation(ix, t[keep], r["after"][keep], color=cols[j], markersize=3)
                lp.mark_turning_point(ix, predicted=r["th_u"].t_star, measured=r["u"].t_star,
                                      y_measured=r["u"].min_value, color=cols[j])
            y_lo = min(r["u"].min_value for r in res.values())
            y_hi = max(r["u"].min_value for r in res.values())
            ix.set(xscale="log", yscale="log", xlim=(0.6 * t_lo, 1.6 * t_hi), ylim=(0.93 * y_lo, 1.25 * y_hi),
                   xlabel=r"pre-training time $t$")
            ticks = sorted({float(f"{v:.2g}") for v in np.geomspace(0.7 * t_lo, 1.4 * t_hi, 4)})
            ix.set_xticks(ticks, [f"{v:g}" for v in ticks])
            ix.xaxis.set_minor_formatter(NullFormatter())
            ix.set_title("(b) zoom on the minima", loc="left")
            lp.time_axis(a)
            a.set(yscale="log", ylabel="original-task loss after fine-tuning")
            a.set_title("(a) fine-tuning U-curves", loc="left")
            b.axvline(level, color="k", lw=0.8, ls="--")
            b.set(xscale="log", yscale="log", xlabel="original-task loss before fine-tuning\n(pre-training progress)",
                  ylabel="after fine-tuning")
            b.invert_xaxis()
            b.set_title("(c) at matched pre-training loss", loc="left")
            x = np.arange(len(rhos))
            c.plot(x, [per[f"{r:g}"]["degradation_percent"] for r in rhos], "o-", color="tab:red", label="degradation (%)")
            c.plot(x, [per[f"{r:g}"]["degradation_percent_predicted"] for r in rhos], "-", color="tab:red", lw=0.8)
            c.plot(x, [per[f"{r:g}"]["after_ft_at_matched_vs_rho0_percent"] for r in rhos], "s-", color="tab:blue",
                   label="after-ft loss at matched level vs rho=0 (%)")
            c.axhline(0, color="k", lw=0.6)
            c.set_xticks(x, [f"{r:g}" for r in rhos])
            top = max(max(per[f"{r:g}"]["degradation_percent"], per[f"{r:g}"]["after_ft_at_matched_vs_rho0_percent"])
                      for r in rhos)
            c.set(xlabel=r"mixing fraction $\rho$", ylabel="%", ylim=(-0.08 * top, 1.45 * top))  # room for the legend
            c.legend(fontsize=6, loc="upper left")
            c.set_title(r"(d) degradation and retention vs $\rho$", loc="left")
            lp.legend(fig, colors={rf"$\rho = {r:g}$": cols[j] for j, r in enumerate(rhos)},
                      theory_label="theory: mode dynamics of the mixture + fine-tuning flow",
                      sim_label="simulation: GD pre-training, GD fine-tuning", turning_point=True, measured_min=True,
                      loc="outside lower center", ncol=5)
            lp.save(fig, png)
        C.save_data(npz, **data)
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
