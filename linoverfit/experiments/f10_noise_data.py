"""F10 — gradient noise and data: the turning point under online SGD and anisotropic inputs.

Depth 2, widths 16, sigma_i = 1/i, balanced teacher-aligned init. Online SGD draws fresh samples
x ~ N(0, Sigma), y = A x + noise every step inside the compiled loop (``lo.pretrain(...,
online=True)``), so "samples seen" = batch x steps plays the role of tokens. Markers: the exact
expected loss after Gaussian weight perturbation (``lo.theory.gaussian`` on the SGD weights,
noise-free task), mean over seeds, for several batch sizes (fixed lr and label noise) and
label-noise levels (fixed batch). Lines: the same call on the gradient flow of full-batch GD from
the same start (``lo.theory.pretrain(..., method="flow")``). Last panel: anisotropic inputs,
Sigma = V diag(lambda) V^T sharing the teacher's right singular vectors with a spread of variances;
there each mode follows the isotropic logistic in its own time lambda_i t (``docs/theory.md``),
drawn as the line. Turning points and degradation of measured and predicted results alike by
``lo.turning_point(result, min_rise=0.01, seeds="mean")``.

Run: ``python experiments/F10_noise_data.py [--quick] [--out DIR] [--set batch_sizes="(2, 8)"]``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64
from linoverfit.validation import cast_objective

NUMBER, NAME = "F10", "noise_data"
NOISE_MARKERS = ("o", "s", "^")
TITLE = "gradient noise and data: T* and degradation vs batch size, label noise, samples seen; anisotropic inputs"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,                     # d_in = hidden = d_out (depth 2)
    alpha=1.0,                    # teacher spectrum sigma_i = i**-alpha
    init_scale=0.05,              # aligned init: s0 = scale^2
    lr=0.02,
    steps=5000,                   # t_final = lr * steps = 100
    checkpoints=32,
    first_step=8,
    gamma=0.1,                    # perturbation scale
    batch_sizes=(2, 8, 32),       # at label noise `noise`
    noise=0.1,                    # label-noise variance of the batch-size sweep
    noises=(0.0, 0.1, 0.4),       # at batch size `batch`
    batch=8,
    seeds=4,
    cov_spread=(2.0, 0.5),        # anisotropic input variances: geometric from the first to the second
    draws=5,                      # SGD sample streams behind the headline numbers (median, range)
)
QUICK = dict(width=8, steps=2000, checkpoints=24, seeds=2, batch_sizes=(2, 16), batch=16, noises=(0.0, 0.4), draws=1)
# ----------------------------------------------------------------------------- end of config


def _perturbed(net, run_, task, gamma):
    """The exact expected perturbed loss on the run's weights (``lo.theory.gaussian``), its seed-mean
    curve ``(C,)`` and that curve's turning point (``lo.turning_point``, the one definition)."""
    res = lo.theory.gaussian(net, run_, task, gamma=gamma)
    y = np.asarray(res.perturbed_loss, float)[:, 0]
    return (y.mean(-1) if y.ndim == 2 else y), lo.turning_point(res, min_rise=C.DEPTH, seeds="mean").curve(0)


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F10_noise_data.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    batches, noises = tuple(cfg["batch_sizes"]), tuple(cfg["noises"])
    stages = C.Stages(len(batches) + len(noises) + 3, progress)
    k_task, k_sgd = jax.random.split(jax.random.key(seed), 2)
    d, lr, S = cfg["width"], cfg["lr"], cfg["seeds"]
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    net = lo.DeepLinear((d, d, d))
    W0 = net.init(jax.random.key(0), scale=cfg["init_scale"], scheme="aligned", task=task)
    W0s = tuple(jnp.broadcast_to(w, (S,) + w.shape) for w in W0)
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    t = lr * np.asarray(ck, float)
    gamma = cfg["gamma"]

    def sgd(batch, noise, key=k_sgd):
        run_ = lo.pretrain(net, W0s, task.with_(noise=noise), lr=lr, checkpoints=ck, batch_size=batch, online=True,
                           key=key)
        return _perturbed(net, run_, task, gamma), run_

    res_b, res_n, data = {}, {}, {"t": t}
    for b in batches:
        with stages(f"online SGD, batch {b}"):
            (y, u), run_ = sgd(b, cfg["noise"])
            res_b[b] = dict(y=y, samples=run_.samples_seen, u=u)
            data[f"batch{b}_perturbed_loss"] = y
    for nz in noises:
        with stages(f"online SGD, label noise {nz:g}"):
            if cfg["batch"] in res_b and nz == cfg["noise"]:
                res_n[nz] = res_b[cfg["batch"]]
                continue
            (y, u), run_ = sgd(cfg["batch"], nz)
            res_n[nz] = dict(y=y, samples=run_.samples_seen, u=u)
            data[f"noise{nz:g}_perturbed_loss"] = y

    with stages("anisotropic inputs: GD"):
        lam = np.geomspace(cfg["cov_spread"][0], cfg["cov_spread"][1], d)
        V = np.asarray(task.svd()[2], float).T
        cov = (V * lam) @ V.T
        atask = task.with_(input_cov=cov)
        W0a = net.init(jax.random.key(0), scale=cfg["init_scale"], scheme="aligned", task=task)
        arun = lo.pretrain(net, W0a, atask, lr=lr, checkpoints=ck)
        ay, au = _perturbed(net, arun, atask, gamma)
        data.update(anisotropic_perturbed_loss=ay, anisotropic_variances=lam)

    with stages("theory"):
        # the simulation's calls on the gradient flow of the same start (lo.theory.pretrain(method="flow")),
        # on a dense step grid holding the checkpoints; anisotropic: each mode in its own time lambda_i t
        # (docs/theory.md 1.8, 3.5), which the flow of the layers follows exactly
        dense = np.union1d(ck, np.round(np.geomspace(ck[0], ck[-1], 200)).astype(int))
        with enable_x64(True):
            W0_64 = tuple(np.asarray(w, np.float64) for w in W0)
            th, th_u = _perturbed(net, lo.theory.pretrain(net, W0_64, cast_objective(task, np.float64), lr=lr,
                                                          checkpoints=dense, method="flow"), None, gamma)
            th_a, th_au = _perturbed(net, lo.theory.pretrain(net, W0_64, cast_objective(atask, np.float64), lr=lr,
                                                             checkpoints=dense, method="flow"), None, gamma)
        t_th = lr * dense.astype(float)
        gd_a_gap = float(np.max(np.abs(np.interp(np.log(t), np.log(t_th), th_a) / ay - 1)))
        data.update(t_theory=t_th, perturbed_loss_theory=th, anisotropic_perturbed_loss_theory=th_a)

    with stages(f"{cfg['draws']} SGD draws at the smallest and largest batch"):
        # the headline numbers over independent sample streams (draw 0: the figure's own), each draw the
        # mean of S seeds as above
        draw_rows = {b: {"t_star": [], "degradation_percent": [], "min_vs_flow_min_percent": []}
                     for b in (batches[0], batches[-1])}
        for key in C.draw_keys(k_sgd, int(cfg["draws"])):
            for b, row in draw_rows.items():
                (_, u), _ = sgd(b, cfg["noise"], key)
                row["t_star"].append(u.t_star)
                row["degradation_percent"].append(100 * u.degradation)
                row["min_vs_flow_min_percent"].append(100 * (u.min_value / th_u.min_value - 1))
        draws = {"n": int(cfg["draws"]), "what": "online-SGD sample streams, one key per draw (draw 0: the figure's)",
                 "batch_size": {str(b): {k: C.spread(v) for k, v in row.items()} for b, row in draw_rows.items()}}

    # ---------------------------------------------------------------- summary
    def entry(r, batch):
        u = r["u"]
        return {"t_star": u.t_star, "samples_seen_at_t_star": u.t_star / lr * batch,
                "is_turning_point": u.is_turning_point, "degradation_percent": 100 * u.degradation,
                "min_vs_flow_min_percent": 100 * (u.min_value / th_u.min_value - 1)}

    per_b = {str(b): entry(r, b) for b, r in res_b.items()}
    per_n = {f"{nz:g}": entry(r, cfg["batch"]) for nz, r in res_n.items()}
    bmin, bmax = str(batches[0]), str(batches[-1])
    nmin, nmax = f"{noises[0]:g}", f"{noises[-1]:g}"
    def change(lo_, hi):
        return "raises" if hi > lo_ else "lowers"

    db_lo, db_hi = per_b[bmin]["degradation_percent"], per_b[bmax]["degradation_percent"]
    dn_lo, dn_hi = per_n[nmin]["degradation_percent"], per_n[nmax]["degradation_percent"]
    dlo, dhi = (draws["batch_size"][str(b)]["degradation_percent"] for b in (batches[0], batches[-1]))
    verdict = (
        f"Online SGD at lr {lr:g}: in t the turning point stays near the gradient-flow T* {th_u.t_star:.3g} "
        f"(batch {bmin}: {per_b[bmin]['t_star']:.3g}, batch {bmax}: {per_b[bmax]['t_star']:.3g}), so in samples seen "
        f"it grows in proportion to the batch ({per_b[bmin]['samples_seen_at_t_star']:.3g} vs "
        f"{per_b[bmax]['samples_seen_at_t_star']:.3g}). Gradient noise lifts the minimum of the curve "
        f"({per_b[bmin]['min_vs_flow_min_percent']:.3g}% above the flow's at batch {bmin}, "
        f"{per_b[bmax]['min_vs_flow_min_percent']:.3g}% at batch {bmax}); going from batch {bmin} to {bmax} "
        f"{change(db_lo, db_hi)} the degradation ({db_lo:.3g}% to {db_hi:.3g}%; flow {100 * th_u.degradation:.3g}%), and "
        f"label noise {nmin} to {nmax} {change(dn_lo, dn_hi)} it ({dn_lo:.3g}% to {dn_hi:.3g}%): the fluctuation of the "
        f"weights adds to the loss everywhere, most where the small modes are being learnt. "
        f"Anisotropic inputs sharing the teacher's right basis (variances {cfg['cov_spread'][0]:g} to "
        f"{cfg['cov_spread'][1]:g}) reorder mode learning by lambda_i sigma_i; the mode theory in per-mode time "
        f"lambda_i t predicts GD within {100 * gd_a_gap:.2g}% (T* {th_au.t_star:.3g} predicted, {au.t_star:.3g} measured). "
        f"Over {draws['n']} sample streams the degradation is {dlo['median']:.4g}% ({dlo['min']:.4g}-{dlo['max']:.4g}%) "
        f"at batch {bmin} and {dhi['median']:.4g}% ({dhi['min']:.4g}-{dhi['max']:.4g}%) at batch {bmax}"
        + (": the batch's effect on it is within the draws' spread." if dlo["max"] >= dhi["min"] else ".")
    )
    summary = {
        "width": d, "lr": lr, "steps": cfg["steps"], "gamma": gamma, "seeds": S, "noise": cfg["noise"],
        "batch": cfg["batch"], "cov_spread": list(cfg["cov_spread"]), "batch_sizes": list(batches),
        "noises": list(noises),
        "flow_theory": {"t_star": th_u.t_star, "degradation_percent": 100 * th_u.degradation},
        "batch_size": per_b,
        "label_noise": per_n,
        "anisotropic": {"t_star": au.t_star, "t_star_predicted": th_au.t_star, "is_turning_point": au.is_turning_point,
                        "degradation_percent": 100 * au.degradation,
                        "degradation_percent_predicted": 100 * th_au.degradation,
                        "max_rel_diff_theory_percent": 100 * gd_a_gap},
        # per-mode time lambda_i t is exact for the flow; GD at lr 0.02 with variances up to 2 has step
        # eta lambda_max sigma_1 = 0.04: a few % where a mode is mid-transition
        "draws": draws,
        "checks": [C.check("anisotropic GD vs per-mode-time flow theory, max relative gap", gd_a_gap, at_most=0.05),
                   C.check("draw 0 reproduces the headline T* at the smallest and largest batch", max(
                       abs(draws["batch_size"][str(b)]["t_star"]["values"][0] - res_b[b]["u"].t_star)
                       for b in (batches[0], batches[-1])), at_most=1e-9)],
        "condition": "depth 2, balanced aligned init, online SGD with fresh Gaussian samples at a constant lr; "
                     "perturbed loss evaluated exactly on the noise-free task, mean over seeds",
        "verdict": verdict,
    }

    # ---------------------------------------------------------------- figure
    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        cols = lp.strength_colors(len(batches))
        noise_cols = [plt.get_cmap("Dark2")(i) for i in range(len(noises))]  # not (a)'s colours: another meaning
        with lp.style():
            fig, axes = lp.subplots(2, 2, width="page", aspect=0.62, squeeze=False)
            (a, b), (c, e) = axes
            ref = th_u.min_value
            for j, (bsz, r) in enumerate(res_b.items()):
                x = t / lr * bsz
                lp.theory(a, t_th / lr * bsz, th / ref, color=cols[j])
                lp.simulation(a, x, r["y"] / ref, color=cols[j], markersize=3)
                lp.mark_turning_point(a, measured=r["u"].t_star / lr * bsz, y_measured=r["u"].min_value / ref,
                                      color=cols[j])
            a.set(xscale="log", xlabel="samples seen (batch x steps)", ylabel=r"$\mathbb{E}L(W+\gamma E)$ / flow min",
                  ylim=(0.9, 3.0))
            a.set_title(f"(a) batch size (label noise {cfg['noise']:g})", loc="left")
            # (b) the three label-noise curves coincide within ~1% on (a)'s scale: show their excess over the
            # full-batch flow at the checkpoints instead, each with its own colour and marker
            th_ck = th[np.searchsorted(dense, ck)]
            b.axhline(0.0, color="k", lw=0.8)
            for j, (nz, r) in enumerate(res_n.items()):
                ex = 100 * (r["y"] / th_ck - 1)
                b.plot(t, ex, marker=NOISE_MARKERS[j % 3], color=noise_cols[j], lw=0.8, markersize=3.5,
                       markerfacecolor="none")
                b.plot([r["u"].t_star], [np.interp(np.log(r["u"].t_star), np.log(t), ex)], marker="*", ms=9,
                       color=noise_cols[j], markeredgecolor="k", markeredgewidth=0.5, linestyle="none")
            lp.time_axis(b)
            b.set_ylabel("excess over full-batch flow (%)")
            b.set_title(f"(b) label noise (batch {cfg['batch']})", loc="left")
            # (c) T* and degradation, each relative to the full-batch flow's on one axis (a twin axis made a
            # 4% range look like a factor)
            xb = np.arange(len(batches))
            c.plot(xb, [per_b[str(x)]["t_star"] / th_u.t_star for x in batches], "o-", color="tab:blue",
                   label=r"$T^*$ (in $t$)")
            c.plot(xb, [per_b[str(x)]["degradation_percent"] / (100 * th_u.degradation) for x in batches], "s--",
                   color="tab:red", label="degradation, last vs min")
            c.axhline(1.0, color="k", ls=":", lw=1, label="= full-batch flow")
            c.set_xticks(xb, [str(x) for x in batches])
            c.set(xlabel="batch size", ylabel="measured / full-batch flow", ylim=(0.9, 1.1))
            c.legend(loc="upper right", fontsize="small")
            c.set_title("(c) T* and degradation vs batch", loc="left")
            # (e) anisotropic
            ref_a = th_au.min_value
            lp.theory(e, t_th, th_a / ref_a, color="tab:purple")
            lp.simulation(e, t, ay / ref_a, color="tab:purple", markersize=3)
            lp.mark_turning_point(e, predicted=th_au.t_star, measured=au.t_star, y_measured=au.min_value / ref_a,
                                  color="tab:purple")
            lp.time_axis(e)
            e.set(ylim=(0.9, 3.0), ylabel="perturbed loss / theory min")
            e.set_title(f"(d) anisotropic inputs, variances {cfg['cov_spread'][0]:g}..{cfg['cov_spread'][1]:g} (GD)",
                        loc="left")
            lp.legend(fig, colors={**{f"(a) batch {x}": cols[i] for i, x in enumerate(batches)},
                                   **{f"(b) noise {x:g}": noise_cols[i] for i, x in enumerate(noises)}},
                      theory_label="theory: gradient flow (full batch)", sim_label="simulation: online SGD / GD, markers",
                      measured_min=True, turning_point=True, loc="outside lower center", ncol=4)
            lp.save(fig, png)
        C.save_data(npz, **data)
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
