"""F7 — phase diagram of the turning point T* over the perturbation scale gamma and the spectrum decay alpha.

Depth 2, square widths, teacher sigma_i = i**-alpha, balanced teacher-aligned init (the theory is
exact for gradient flow). (a) Heat map of the predicted turning point T* of the perturbed
pre-training loss E[L(W + gamma E)] (``lo.theory.turning.turning_point``, no simulation) over
(gamma, alpha); hatched: no turning point by the shared definition (``lo.theory.u_curve``: an interior
minimum followed by a rise of at least 1%), because no mode is worth learning (the curve rises from
t = 0), because T* lies beyond the pre-training horizon, or because the interior minimum is
shallower than 1% (dotted hatching). The dashed line is where the smallest teacher mode reaches
the depth-2 threshold gamma^2 (d_in + d_out) (``lo.theory.turning.perturbation_threshold``): left of it every
mode is worth learning and the only minimum left is the shallow one of the final approach
s_i -> sigma_i - gamma^2 (d_in + d_out)/2.
Circles: T* measured in simulation, filled on the same colour scale (a point that agrees with
the theory disappears into the background; a cross: no U-curve); the minimum over checkpoints of
the perturbed loss, evaluated exactly on the gradient-descent weights with
``lo.theory.gaussian`` (no sampling noise), judged by ``lo.turning_point`` (the same definition); one
pre-training run per simulated alpha serves every gamma. The prediction stays spectrum-level
(``turning.turning_point``): the map is a continuum over gamma and alpha, not one result per point. Theory and simulation agree when both
have no U-curve, or both have one and T* agrees within 5% or within the flat minimum
(``_common.t_star_agreement``).
(b) Slices at the simulated alphas: predicted T* against gamma (lines) and measured (markers).

(F7/F8 written by the phase-diagram engineer; figures engineer: please keep.)
Run: ``python -m linoverfit.experiments.f7_phase_diagram [--quick] [--out DIR] [--set sim_alphas="(1.0,)"]``,
or ``linoverfit figures --only F7``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from matplotlib.ticker import NullFormatter

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64
from linoverfit.validation import cast_objective

NUMBER, NAME = "F7", "phase_diagram"
TITLE = "phase diagram of the turning point T* over perturbation gamma and spectrum decay alpha, theory vs simulation"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,                     # d_in = hidden = d_out (depth 2)
    init_scale=1e-3,              # aligned init: every mode starts at s0 = scale**2
    lr=0.02,                      # small: gradient descent close to the gradient flow of the theory
    steps=100000,                 # horizon t = lr * steps (T* beyond it counts as "no turning point")
    checkpoints=120,              # log-spaced from first_step: dense enough to locate T* to a few %
    first_step=50,
    map_gammas=(0.01, 0.35, 40),  # heat map: geomspace(lo, hi, n) over gamma
    map_alphas=(0.25, 2.5, 32),   # heat map: linspace(lo, hi, n) over alpha
    map_grid=512,                 # turning_point bracketing grid for the map (default 4096; same roots here, 8x faster)
    sim_alphas=(0.5, 1.0, 1.5, 2.0),             # one pre-training run each
    sim_gammas=(0.02, 0.03, 0.045, 0.07, 0.1),    # evaluated on every run (exact expectation, no sampling)
    slice_points=80,              # gammas per theory line in panel (b)
)
QUICK = dict(steps=40000, checkpoints=100, first_step=20, map_gammas=(0.01, 0.35, 14), map_alphas=(0.25, 2.5, 10),
             sim_alphas=(0.5, 1.5), sim_gammas=(0.03, 0.07), slice_points=24)
# ----------------------------------------------------------------------------- end of config

#: Relative tolerance on T* where both theory and simulation have a turning point (aligned init, as in F3).
TOLERANCE = 0.05


def _status(is_turning_point, at_start, at_end):
    """"interior" (a U-curve: interior minimum, rise >= 1%), "zero" (the curve rises from t = 0: no mode
    worth learning), "beyond" (still falling at the horizon) or "shallow" (interior minimum, rise < 1%)."""
    if is_turning_point:
        return "interior"
    return "zero" if at_start else "beyond" if at_end else "shallow"


def _predicted(task, gamma, net, s0, t_horizon, grid=None):
    """(T*, status) of the predicted curve up to ``t_horizon`` (statuses of :func:`_status`)."""
    tp = lo.theory.turning.turning_point(task, gamma=float(gamma), widths=net, s0=s0, grid=grid, t_max=t_horizon,
                                 depth=C.DEPTH)
    return float(tp.t_star), _status(tp.is_turning_point, tp.t_star <= 0.0, tp.t_star >= t_horizon)


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F7_phase_diagram.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    sim_alphas = np.asarray(cfg["sim_alphas"], float)
    sim_gammas = np.asarray(cfg["sim_gammas"], float)
    stages = C.Stages(2 + len(sim_alphas) + 1, progress)
    k_task, k_init = jax.random.split(jax.random.key(seed))
    d = cfg["width"]
    net = lo.DeepLinear((d, d, d))
    s0 = cfg["init_scale"] ** 2
    t_horizon = cfg["lr"] * cfg["steps"]
    gammas = np.geomspace(*cfg["map_gammas"][:2], int(cfg["map_gammas"][2]))
    alphas = np.linspace(*cfg["map_alphas"][:2], int(cfg["map_alphas"][2]))

    # ---- theory heat map (only the teacher's spectrum matters for T*, so the singular values are passed)
    with stages("theory heat map"):
        t_map = np.full((alphas.size, gammas.size), np.nan)
        status_map = np.empty((alphas.size, gammas.size), dtype="<U8")
        for a, alpha in enumerate(alphas):
            sigma = np.arange(1, d + 1, dtype=float) ** -alpha
            for g, gamma in enumerate(gammas):
                t_map[a, g], status_map[a, g] = _predicted(sigma, gamma, net, s0, t_horizon, cfg["map_grid"])
        # every mode worth learning left of gamma^2 (d_in + d_out) = sigma_min = d**-alpha
        boundary_gamma = np.sqrt(float(d) ** -alphas / (2 * d))

    # ---- theory slices at the simulated alphas (panel b)
    with stages("theory slices"):
        g_dense = np.geomspace(gammas[0], gammas[-1], int(cfg["slice_points"]))
        slices = np.full((sim_alphas.size, g_dense.size), np.nan)
        for a, alpha in enumerate(sim_alphas):
            sigma = np.arange(1, d + 1, dtype=float) ** -alpha
            for g, gamma in enumerate(g_dense):
                ts, st = _predicted(sigma, gamma, net, s0, t_horizon, cfg["map_grid"])
                slices[a, g] = ts if st == "interior" else np.nan

    # ---- simulation: one pre-training run per alpha, exact perturbed loss at every checkpoint
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    points, curves = [], {}
    for alpha in stages.loop(list(sim_alphas), "pre-train alpha"):
        task = lo.tasks.power_law(d, d, alpha=float(alpha), key=k_task)
        W0 = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
        meas = lo.theory.gaussian(net, run_, task, gamma=sim_gammas)  # the exact expectation on the GD weights
        pl = np.asarray(meas.perturbed_loss, float)  # (C, G)
        measured = lo.turning_point(meas, min_rise=C.DEPTH)
        # predicted at the simulated points: the same call on the gradient flow of the same start over a dense
        # step grid holding the checkpoints (the map in (a) stays spectrum-level: a continuum of gamma, alpha)
        dense = np.union1d(ck, np.round(np.geomspace(ck[0], ck[-1], 400)).astype(int))
        with enable_x64(True):
            flow = lo.theory.pretrain(net, tuple(np.asarray(w, np.float64) for w in W0), cast_objective(task, np.float64),
                                      lr=cfg["lr"], checkpoints=dense, method="flow")
            pred = lo.theory.gaussian(net, flow, gamma=sim_gammas)
        predicted = lo.turning_point(pred, min_rise=C.DEPTH)
        pl_th = np.asarray(pred.perturbed_loss, float)[np.searchsorted(dense, ck)]  # (C, G) at the checkpoints
        curves[float(alpha)] = pl
        for g, gamma in enumerate(sim_gammas):
            p_ = predicted.curve(g)
            st = _status(p_.is_turning_point, p_.index == 0, p_.index == dense.size - 1)
            t_pred = p_.t_star
            m = measured.curve(g)
            st_meas = _status(m.is_turning_point, m.index == 0, m.index == run_.t.size - 1)
            both = st == st_meas == "interior"
            agree = C.t_star_agreement(run_.t, pl[:, g], pl_th[:, g], t_pred, m, TOLERANCE) if both else {}
            points.append({
                "alpha": float(alpha), "gamma": float(gamma),
                "t_star_predicted": t_pred if st == "interior" else None,
                "t_star_measured": m.t_star if st_meas == "interior" else None,
                "rel_error": agree.get("rel_error", float("nan")),
                "regret_at_predicted_percent": agree.get("regret_at_predicted_percent"),
                "predicted_status": st, "measured_status": st_meas,
                "is_turning_point": m.is_turning_point,
                "agree": bool(st == st_meas and (not both or agree["within_tolerance"])),
                "degradation_percent": 100 * m.degradation,
                "depth_percent": 100 * m.depth,
            })
    t_ck = run_.t

    # ---- summary
    rels = [p["rel_error"] for p in points if np.isfinite(p["rel_error"])]
    interior_map = np.where(status_map == "interior", t_map, np.nan)
    summary = {
        "width": d, "depth": 2, "lr": cfg["lr"], "s0": s0, "horizon_t": t_horizon, "tolerance": TOLERANCE,
        "points": points,
        "n_points": len(points),
        "n_agree": int(sum(p["agree"] for p in points)),
        "max_rel_error": max(rels) if rels else None,
        "median_rel_error": float(np.median(rels)) if rels else None,
        "depth_percent": 100 * C.DEPTH,
        "n_turning_points_measured": int(sum(p["is_turning_point"] for p in points)),
        "map_fraction_no_mode_worth_learning": float(np.mean(status_map == "zero")),
        "map_fraction_shallow": float(np.mean(status_map == "shallow")),
        "map_fraction_beyond_horizon": float(np.mean(status_map == "beyond")),
        "map_t_star_range": [float(np.nanmin(interior_map)), float(np.nanmax(interior_map))],
        "checks": [C.check(f"alpha {p['alpha']:g}, gamma {p['gamma']:g}: theory and simulation agree on "
                           f"{'T* (5%, or within the flat minimum)' if p['predicted_status'] == 'interior' else 'no U-curve'}"
                           f" (predicted {p['predicted_status']}, measured {p['measured_status']})",
                           p["agree"], expected=True) for p in points],
    }

    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        _plot(png, gammas, alphas, interior_map, status_map, boundary_gamma, g_dense, slices, sim_alphas,
              points, t_horizon)
        C.save_data(npz, map_gammas=gammas, map_alphas=alphas, map_t_star_predicted=t_map,
                    map_status=status_map, boundary_gamma=boundary_gamma, slice_gammas=g_dense,
                    slice_alphas=sim_alphas, slice_t_star_predicted=slices, sim_gammas=sim_gammas,
                    sim_t=t_ck, sim_perturbed_loss=np.stack([curves[float(a)] for a in sim_alphas]),
                    sim_t_star_predicted=np.array([_nan(p["t_star_predicted"]) for p in points]),
                    sim_t_star_measured=np.array([_nan(p["t_star_measured"]) for p in points]),
                    sim_point_alpha=np.array([p["alpha"] for p in points]),
                    sim_point_gamma=np.array([p["gamma"] for p in points]))
    return summary


def _nan(x):
    return np.nan if x is None else float(x)


def _edges_log(x):
    lx = np.log(x)
    mid = (lx[1:] + lx[:-1]) / 2
    return np.exp(np.concatenate([[2 * lx[0] - mid[0]], mid, [2 * lx[-1] - mid[-1]]]))


def _edges_lin(x):
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])


def _alpha_color(i):
    return lp.mode_color(i + 4)  # purple, brown, pink, grey ...: kept apart from the first mode colours of F1


def _plot(png, gammas, alphas, t_map, status_map, boundary_gamma, g_dense, slices, sim_alphas, points, t_horizon):
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    finite = t_map[np.isfinite(t_map)]
    meas = [p["t_star_measured"] for p in points if p["t_star_measured"] is not None]
    norm = LogNorm(vmin=min([finite.min()] + meas), vmax=max([finite.max()] + meas))
    with lp.style():
        fig, (ax, bx) = lp.subplots(1, 2, width="page", aspect=0.8)
        fig.get_layout_engine().set(wspace=0.12)  # room between (a)'s colour-bar label and (b)'s y label
        ge, ae = _edges_log(gammas), _edges_lin(alphas)
        mesh = ax.pcolormesh(ge, ae, np.ma.masked_invalid(t_map), norm=norm, cmap="viridis", shading="flat",
                             rasterized=True)
        for st, hatch, fc in (("zero", "////", "0.85"), ("beyond", "\\\\\\\\", "0.65"), ("shallow", "....", "0.75")):
            mask = np.where(status_map == st, 1.0, np.nan)
            if np.any(np.isfinite(mask)):
                ax.pcolor(ge, ae, np.ma.masked_invalid(mask), hatch=hatch, cmap=ListedColormap([fc]),
                          edgecolor="0.4", linewidth=0)
        ax.plot(boundary_gamma, alphas, color="w", lw=1.0, ls="--")
        for p in points:
            col = "none" if p["t_star_measured"] is None else mesh.cmap(norm(p["t_star_measured"]))
            ax.plot(p["gamma"], p["alpha"], marker="o", markersize=6.5, markerfacecolor=col, markeredgecolor="w",
                    markeredgewidth=1.2, linestyle="none", zorder=4)
            if p["t_star_measured"] is None:
                ax.plot(p["gamma"], p["alpha"], marker="x", markersize=4, color="w", linestyle="none", zorder=5)
        ax.set(xscale="log", xlim=(ge[0], ge[-1]), ylim=(ae[0], ae[-1]),
               xlabel=r"perturbation scale $\gamma$ (std of the noise per weight)",
               ylabel=r"teacher spectrum decay $\alpha$ ($\sigma_i = i^{-\alpha}$)")
        ax.grid(False)
        ax.set_title(r"(a) predicted $T^*$ (map) and measured $T^*$ (circles)", loc="left")
        cb = fig.colorbar(mesh, ax=ax, pad=0.02)
        cb.set_label(r"turning point $T^*$ (time $t = \eta\cdot$steps)")
        hatched = [st for st in ("zero", "beyond", "shallow") if np.any(status_map == st)]
        lp.legend(fig, theory_label=None, sim_label=None, loc="outside lower center", ncol=3, extra=[x for x in [
            ("(a) theory map: lo.theory.turning.turning_point", Patch(facecolor=mesh.cmap(0.6), edgecolor="none")),
            ("(a) simulation (GD), same colour scale", Line2D([], [], marker="o", color="0.4", markeredgecolor="k",
                                                              linestyle="none")),
            ("no mode worth learning ($T^* = 0$)", Patch(facecolor="0.85", hatch="////", edgecolor="0.4"))
            if "zero" in hatched else None,
            (rf"$T^*$ beyond horizon $t = {t_horizon:g}$", Patch(facecolor="0.65", hatch="\\\\\\\\", edgecolor="0.4"))
            if "beyond" in hatched else None,
            ("no U-curve: interior minimum shallower than 1%", Patch(facecolor="0.75", hatch="....", edgecolor="0.4"))
            if "shallow" in hatched else None,
            (r"$\gamma^2(d_{in}+d_{out}) = \sigma_{min}$ (left: every mode worth learning)",
             Line2D([], [], color="0.3", ls="--"))] if x is not None])

        for a, alpha in enumerate(sim_alphas):
            col = _alpha_color(a)
            lp.theory(bx, g_dense, slices[a], color=col)
            pts = [p for p in points if p["alpha"] == float(alpha)]
            lp.simulation(bx, [p["gamma"] for p in pts], [_nan(p["t_star_measured"]) for p in pts], color=col,
                          markersize=5)
        bx.set(xscale="log", yscale="log", xlabel=r"perturbation scale $\gamma$",
               ylabel=r"turning point $T^*$ (time $t = \eta\cdot$steps)")
        bx.set_title(r"(b) slices at the simulated $\alpha$", loc="left")
        # a few labelled ticks: matplotlib's minor labels on a one-decade log axis ran into each other
        lo_g, hi_g = bx.get_xlim()
        ticks = [v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5) if lo_g <= v <= hi_g]
        bx.set_xticks(ticks, [f"{v:g}" for v in ticks])
        bx.xaxis.set_minor_formatter(NullFormatter())
        lp.legend(bx, colors={rf"$\alpha = {a:g}$": _alpha_color(i) for i, a in enumerate(sim_alphas)},
                  theory_label=r"theory: lo.theory.turning.turning_point", sim_label="simulation: argmin over GD checkpoints",
                  loc="lower left", fontsize=6, ncol=2)
        bx.set_ylim(bottom=0.15 * np.nanmin(slices))  # room for the legend below the curves
        lp.save(fig, png)


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
