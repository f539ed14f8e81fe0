r"""F13 — Springer's setting: the U-curve, the turning point delayed by each penalty, and the
fine-tuning loss given up.

The setting of Springer et al. (2025, arXiv:2503.19206, Section 4) as restated by Feng et al.
(2026, arXiv:2605.12705, App. C), built by ``lo.springer.setting``: depth 2, width 4, whitened
inputs, a pre-training teacher :math:`A = U\operatorname{diag}(\sigma)V^\top` with
:math:`\sigma = (3, 2, 1, 0.5)` and fine-tuning teachers :math:`B = U\operatorname{diag}(\sigma')V^\top`
with the same :math:`U = V` (one Haar-random draw) that differ only in the late mode,
:math:`\sigma'_4 = \sigma_4 + \text{gap}`; the init :math:`W_1(0) = W_2(0) = e^{-T}I` (:math:`T = 6`).
Pre-training: GD at lr 0.01 (``lo.pretrain``); every checkpoint is fine-tuned 100 steps at lr 0.01
(flow time 1) on :math:`L_B + R_\lambda` (``lo.finetune(l2=lam, l2_on=...)``), with Springer's
penalty :math:`R_\lambda = \lambda\lVert\theta - \theta_0\rVert_F^2` on the end-to-end map
:math:`\theta = W_2W_1` (``l2_on="map"``) or the library's layer pull
:math:`\tfrac\lambda2\sum_l\lVert W_l - W_l^0\rVert_F^2` (``l2_on="layers"``).

Float64 throughout. Lines are theory, predicted without simulating: ``lo.theory.pretrain`` (the exact
per-mode GD map of this balanced aligned init) then ``lo.theory.finetune(..., method="modes")`` (the
exact per-mode map of penalised fine-tuning), on the same checkpoint grid and, for panels (c) and
(d), on a dense grid of strengths. Markers are the simulation (every ``marker_every``-th of its
checkpoints is drawn; turning points are read off all of them). Both are exact GD, so they agree to
round-off (checked to 1e-10 relative); turning points of both by ``lo.turning_point`` (1% rise).

Panels: (a), (b) the pre-training loss after fine-tuning against pre-training time at the largest gap,
one colour per strength, for the map penalty and the layer pull; (c) :math:`T^*` against
:math:`\lambda` for every gap and both penalties; (d) the fine-tuning loss after fine-tuning the last
checkpoint, in % above its value without a penalty (the fine-tuning loss given up).

Whether the U is *catastrophic* is Springer's comparison of idealised checkpoints
(``Setting.idealised_run``): after fine-tuning, is the balanced rank-4 checkpoint (late mode learnt)
worse than the rank-3 one (late mode at exactly 0, a saddle fine-tuning cannot leave)? That needs a
sufficiently misaligned late mode: with a small gap fine-tuning moves the learnt mode only a little
and the fully pre-trained model stays the better one. The GD curve then still has a minimum (the
checkpoint from which fine-tuning carries the partly learnt late mode exactly onto
:math:`\sigma_4`), but not overtraining that costs more than never learning the mode; panel (c)
draws those points hollow. (The summary's ``rise_percent`` is measured from that minimum, which is
near 0, so it is huge; ``min_pretrain_loss_after`` and ``pretrain_loss_after_last`` give the scale.)

Run: ``python experiments/F13_springer.py [--quick] [--out DIR] [--set lams="(0.0, 1.0)"]``.
"""

from __future__ import annotations

import sys

import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64

NUMBER, NAME = "F13", "springer"
TITLE = "Springer's setting: the U-curve, T* delayed by the penalty on the map and on the layers, the fine-tuning loss given up"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    sigma_pre=(3.0, 2.0, 1.0, 0.5),      # pre-training singular values (width 4)
    gaps=(0.25, 1.0, 2.0),               # sigma'_4 - sigma_4 of the fine-tuning tasks (late mode only)
    T=6.0,                               # init W1 = W2 = exp(-T) I
    key=0,                               # the shared U = V (Haar-random draw)
    lr=0.01,                             # pre-training lr, far below the edge 1/3
    first_step=100,                      # t = 1
    steps=3000,                          # t = 30: every mode learnt
    checkpoints=300,                     # log-spaced (turning points read off all of them)
    marker_every=10,                     # markers drawn at every 10th checkpoint
    ft_lr=0.01,                          # fine-tuning: flow time 1, below the edge 2/(2(3 + 2 lam))
    ft_steps=100,
    lams=(0.0, 0.1, 0.3, 1.0),           # penalty strengths simulated (0 = none)
    theory_lams=17,                      # strengths on the theory's dense grid in [0, max(lams)]
)
QUICK = dict(checkpoints=100, marker_every=5, gaps=(0.25, 2.0), lams=(0.0, 0.3, 1.0), theory_lams=5)
# ----------------------------------------------------------------------------- end of config

PENALTIES = ("map", "layers")
PENALTY_LABEL = {"map": r"Springer's penalty $\lambda\|\theta-\theta_0\|_F^2$ on the map $\theta = W_2W_1$",
                 "layers": r"layer pull $\frac{\lambda}{2}\sum_l\|W_l - W_l^0\|_F^2$ (library default)"}
#: late-mode gaps are coloured on a log scale over this range (:func:`gap_color`)
GAP_RANGE = (0.2, 2.5)
#: tolerance of theory vs simulation (both exact GD in float64: they differ by round-off, ~1e-14 measured)
RTOL = 1e-10


def gap_color(gap: float) -> str:
    """Colour of a late-mode gap, the same in the full and the quick figure: plasma on a log scale over
    :data:`GAP_RANGE` (dark for small gaps, orange for large)."""
    import matplotlib
    import matplotlib.colors as mcolors

    x = np.clip(np.log(gap / GAP_RANGE[0]) / np.log(GAP_RANGE[1] / GAP_RANGE[0]), 0.0, 1.0)
    return mcolors.to_hex(matplotlib.colormaps["plasma"](0.05 + 0.8 * x))


def _lam_grid(lams, n) -> np.ndarray:
    """The theory's strengths: 0, then ``n - 1`` log-spaced up to max(lams), plus the simulated ones."""
    top = float(max(lams))
    dense = np.concatenate([[0.0], np.geomspace(top / 100, top, max(n - 1, 1))])
    return np.unique(np.concatenate([dense, np.asarray(lams, float)]))


def _col(result, field) -> np.ndarray:
    """``result.field`` at the one fine-tuning learning rate, ``(C,)`` (fields ``(C,)`` or ``(C, 1)``)."""
    y = np.asarray(getattr(result, field), float)
    return y.reshape(y.shape[0], -1)[:, 0]


def given_up(after, after_unpenalised, before):
    """The share of the fine-tuning gain that the penalty gives up, on the last checkpoint:
    ``(L_ft(lam) - L_ft(0)) / (L_ft before fine-tuning - L_ft(0))`` (0 without a penalty, 1 = no progress)."""
    return (np.asarray(after) - after_unpenalised) / (before - after_unpenalised)


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F13_springer.png`` / ``.npz`` in ``out_dir``; return the headline numbers (float64).

    ``seed`` is not used: the setting is deterministic given ``CONFIG["key"]`` (the shared U = V)."""
    with enable_x64(True):
        return _run(out_dir, quick, config, progress)


def _run(out_dir, quick, config, progress) -> dict:
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    lams = np.asarray(cfg["lams"], float)
    gaps = np.asarray(cfg["gaps"], float)
    if lams[0] != 0:
        raise ValueError("lams must start with 0.0 (the unpenalised reference)")
    sig = np.asarray(cfg["sigma_pre"], float)
    sig_ft = np.tile(sig, (len(gaps), 1))
    sig_ft[:, -1] += gaps
    s = lo.springer.setting(sig, sig_ft, T=cfg["T"], key=cfg["key"], dtype=np.float64)
    ck = np.unique(np.geomspace(cfg["first_step"], cfg["steps"], cfg["checkpoints"]).astype(int))
    lam_th = _lam_grid(lams, cfg["theory_lams"])
    stages = C.Stages(2 + len(PENALTIES) * len(gaps) + 1, progress)
    ft_kw = dict(lr=cfg["ft_lr"], steps=cfg["ft_steps"])

    with stages("pre-train (simulated and predicted)"):
        run_sim = lo.pretrain(s.net, s.W0, s.pretrain_task, lr=cfg["lr"], checkpoints=ck)
        run_th = lo.theory.pretrain(s.net, s.W0, s.pretrain_task, lr=cfg["lr"], checkpoints=ck, method="modes")
        ideal = s.idealised_run()  # Springer's idealised balanced rank-1..d checkpoints
    t = np.asarray(run_sim.t, float)
    rank_gap = len(sig) - 1  # compare rank d (late mode learnt) with rank d - 1

    def catastrophic(result) -> bool:
        """After fine-tuning, the rank-d idealised checkpoint is worse (by >= 1%) than rank d - 1."""
        y = np.asarray(result.pretrain_loss_after, float)[:, 0]
        return bool(y[rank_gap] >= (1 + C.DEPTH) * y[rank_gap - 1])

    worst = 0.0
    curves = {}   # (on, k) -> dict of arrays
    table = {on: {} for on in PENALTIES}
    for on in PENALTIES:
        for k, g in enumerate(gaps):
            with stages(f"fine-tune: {on}, gap {g:g}"):
                task = s.finetune_tasks[k]
                pre, ft, pre_th, ft_th, ts, ts_th = [], [], [], [], [], []
                rows = {}
                for lam in lams:
                    sim = lo.finetune(s.net, run_sim, task, l2=float(lam), l2_on=on, **ft_kw)
                    th = lo.theory.finetune(s.net, run_th, task, l2=float(lam), l2_on=on, method="modes", **ft_kw)
                    y, f, f0 = (_col(sim, q) for q in ("pretrain_loss_after", "finetune_loss_after", "finetune_loss_before"))
                    yt, ftt = (np.asarray(getattr(th, q), float)[:, 0] for q in ("pretrain_loss_after", "finetune_loss_after"))
                    worst = max(worst, float(np.max(np.abs(yt / y - 1))), float(np.max(np.abs(ftt / f - 1))))
                    u, ut = lo.turning_point(sim, min_rise=C.DEPTH).curve(0), lo.turning_point(th, min_rise=C.DEPTH).curve(0)
                    cat = catastrophic(lo.finetune(s.net, ideal, task, l2=float(lam), l2_on=on, **ft_kw))
                    # (the rank-i maps have repeated zero singular values: the mirror's exact GD map, not "modes")
                    cat_th = catastrophic(lo.theory.finetune(s.net, ideal, task, l2=float(lam), l2_on=on, method="gd",
                                                             **ft_kw))
                    pre.append(y), ft.append(f), pre_th.append(yt), ft_th.append(ftt)
                    rows[f"{lam:g}"] = {
                        "t_star_measured": u.t_star if u.is_turning_point else None,
                        "t_star_predicted": ut.t_star if ut.is_turning_point else None,
                        "is_turning_point": u.is_turning_point,
                        "predicted_is_turning_point": ut.is_turning_point,
                        "rise_percent": 100.0 * u.rise,
                        "min_pretrain_loss_after": u.min_value,
                        "pretrain_loss_after_last": float(y[-1]),
                        "catastrophic": cat,
                        "predicted_catastrophic": cat_th,
                        "finetune_loss_before_last": float(f0[-1]),
                        "finetune_loss_after_last": float(f[-1]),
                        "finetune_loss_after_at_t_star": float(np.interp(np.log(u.t_star), np.log(t), f)),
                    }
                ref = rows["0"]["finetune_loss_after_last"]
                for r in rows.values():
                    r["finetune_loss_rise_percent"] = 100.0 * (r["finetune_loss_after_last"] / ref - 1.0)
                    r["finetune_gain_given_up_percent"] = 100.0 * given_up(r["finetune_loss_after_last"], ref,
                                                                           r["finetune_loss_before_last"])
                # the theory on the dense strength grid (panels c, d): predicted T* and fine-tuning loss given up
                for lam in lam_th:
                    th = lo.theory.finetune(s.net, run_th, task, l2=float(lam), l2_on=on, method="modes", **ft_kw)
                    ut = lo.turning_point(th, min_rise=C.DEPTH).curve(0)
                    ts_th.append(ut.t_star if ut.is_turning_point else np.nan)
                    ts.append(float(np.asarray(th.finetune_loss_after, float)[-1, 0]))
                    before_th = float(_col(th, "finetune_loss_before")[-1])
                ts_th, ft_dense = np.array(ts_th), np.array(ts)
                table[on][f"{g:g}"] = rows
                curves[on, k] = dict(pre=np.array(pre), ft=np.array(ft), pre_th=np.array(pre_th), ft_th=np.array(ft_th),
                                     t_star_dense=ts_th, ft_given_up_dense=100.0 * given_up(ft_dense, ft_dense[0], before_th))

    # ----------------------------------------------------------------------------- checks
    checks = [C.check("theory vs simulation, pre-training and fine-tuning loss after fine-tuning (max relative)",
                      worst, at_most=RTOL)]
    for on in PENALTIES:
        for g, rows in table[on].items():
            r = list(rows.values())
            checks.append(C.check(f"{on}, gap {g}: predicted and measured turning points agree (same verdict)",
                                  all(x["is_turning_point"] == x["predicted_is_turning_point"] for x in r), expected=True))
            checks.append(C.check(f"{on}, gap {g}: predicted and simulated idealised checkpoints agree on 'catastrophic'",
                                  all(x["catastrophic"] == x["predicted_catastrophic"] for x in r), expected=True))
            if all(x["is_turning_point"] for x in r):
                ts_ = [x["t_star_measured"] for x in r]
                checks.append(C.check(f"{on}, gap {g}: T* non-decreasing in lambda", bool(np.all(np.diff(ts_) >= 0)),
                                      expected=True))
                checks.append(C.check(f"{on}, gap {g}: |T* predicted / measured - 1| (max over lambda)",
                                      max(C.rel_diff(x["t_star_predicted"], x["t_star_measured"]) for x in r),
                                      at_most=RTOL))
            k = list(table[on]).index(g)
            checks.append(C.check(f"{on}, gap {g}: fine-tuning loss after fine-tuning rises with lambda at every checkpoint",
                                  bool(np.all(np.diff(curves[on, k]["ft"], axis=0) > 0)), expected=True))
    monotone = all(c["ok"] for c in checks if "non-decreasing" in c["what"] or "rises with" in c["what"])
    summary = _summary(cfg, s, t, lams, gaps, table, worst, monotone)
    summary["checks"] = checks

    with stages("plot"):
        _plot(out_dir, cfg, s, t, lams, gaps, lam_th, table, curves)
    return summary


def _summary(cfg, s, t, lams, gaps, table, worst, monotone) -> dict:
    big, small = f"{gaps[-1]:g}", f"{gaps[0]:g}"
    m, l = table["map"][big], table["layers"][big]
    top = f"{lams[-1]:g}"
    cat_gaps = {on: [g for g, rows in table[on].items() if rows["0"]["catastrophic"]] for on in PENALTIES}
    removed = {on: {g: next((lam for lam, r in rows.items() if not r["catastrophic"]), None)
                    for g, rows in table[on].items() if rows["0"]["catastrophic"]} for on in PENALTIES}

    def fmt(x):
        return f"{float(f'{x:.4g}'):g}"

    rm = ", ".join(f"gap {g}: from lambda = {v}" if v is not None else f"gap {g}: not up to lambda = {top}"
                   for g, v in removed["map"].items())
    verdict = (
        f"In Springer et al.'s setting (depth 2, shared U = V, init exp(-T) I with T = {cfg['T']:g}, "
        f"fine-tuning {cfg['ft_steps']} GD steps at lr {cfg['ft_lr']:g} on the task loss + lambda ||theta - theta0||_F^2 on the "
        "end-to-end map; Springer et al. 2025, arXiv:2503.19206, as restated by Feng et al. 2026, arXiv:2605.12705 App. C), "
        f"with the late mode misaligned by sigma'_4 - sigma_4 = {big}: the pre-training loss after fine-tuning is a U-curve "
        f"with T* = {fmt(m['0']['t_star_measured'])}; the map penalty delays it to {fmt(m[top]['t_star_measured'])} at lambda = {top} "
        f"and raises the fine-tuning loss reached from the last checkpoint from {fmt(m['0']['finetune_loss_after_last'])} to "
        f"{fmt(m[top]['finetune_loss_after_last'])}, giving up {fmt(m[top]['finetune_gain_given_up_percent'])}% of what "
        f"fine-tuning gains there; the library's layer pull at the same lambda delays it further, to "
        f"{fmt(l[top]['t_star_measured'])}, giving up {fmt(l[top]['finetune_gain_given_up_percent'])}%. "
        + ("T* is non-decreasing in lambda and the fine-tuning loss rises with lambda at every checkpoint, for both "
           "penalties and every gap. " if monotone else "NOT monotone in lambda for every penalty and gap (see checks). ")
        + "Theory (exact per-mode GD maps) and simulation agree to "
        f"{worst:.1e} relative. Catastrophic (the learnt late mode ends worse after fine-tuning than never learning it, "
        f"Springer's idealised rank-{len(cfg['sigma_pre'])} vs rank-{len(cfg['sigma_pre']) - 1} checkpoints) at lambda = 0 for gaps "
        f"{', '.join(cat_gaps['map']) or 'none'}; the map penalty removes it ({rm}). At gap {small} it is not catastrophic: "
        f"the GD curve's minimum (T* = {fmt(table['map'][small]['0']['t_star_measured'])}) is the checkpoint from which "
        "fine-tuning carries the partly learnt late mode onto sigma_4, and the fully pre-trained model stays better than "
        "one that never learnt the mode."
    )
    return {
        "dtype": "float64",
        "setting": {"depth": 2, "width": len(cfg["sigma_pre"]), "sigma_pre": list(cfg["sigma_pre"]), "T": cfg["T"],
                    "U_equals_V": True, "lr": cfg["lr"], "ft_lr": cfg["ft_lr"], "ft_steps": cfg["ft_steps"],
                    "ft_flow_time": cfg["ft_lr"] * cfg["ft_steps"], "learn_times": s.learn_times(),
                    "checkpoints": len(t), "t_first": t[0], "t_last": t[-1],
                    "checkpoint_spacing_ratio": float(np.exp(np.mean(np.diff(np.log(t)))))},
        "gaps": gaps, "lams": lams, "depth_percent": 100.0 * C.DEPTH,
        "max_rel_error_theory_vs_simulation": worst,
        "penalties": table,
        "condition": ("depth 2, whitened inputs, tasks sharing U = V and differing in the late singular value only "
                      "(gap sigma'_4 - sigma_4), balanced init exp(-T) I, full-batch GD in float64, a fixed fine-tuning "
                      "budget; 'catastrophic' compares Springer's idealised rank-4 and rank-3 checkpoints after fine-tuning"),
        "verdict": verdict,
    }


def _plot(out_dir, cfg, s, t, lams, gaps, lam_th, table, curves) -> None:
    from matplotlib.lines import Line2D

    png, npz = C.figure_paths(out_dir, NUMBER, NAME)
    every = int(cfg["marker_every"])
    mk = np.arange(len(t))[::every]
    lam_cols = lp.strength_colors(len(lams))
    gap_cols = [gap_color(g) for g in gaps]
    pen_style = {"map": dict(ls="-", marker="o"), "layers": dict(ls="--", marker="s")}
    kbig = len(gaps) - 1
    t_learn = s.learn_times()
    with lp.style():
        fig, axes = lp.subplots(2, 2, width="page", aspect=0.62)
        ymin = min(np.nanmin(curves[on, kbig]["pre"]) for on in PENALTIES)
        ymax = max(np.nanmax(curves[on, kbig]["pre"]) for on in PENALTIES)
        for j, on in enumerate(PENALTIES):
            ax = axes[0, j]
            cv, rows = curves[on, kbig], table[on][f"{gaps[kbig]:g}"]
            for i, lam in enumerate(lams):
                r = rows[f"{lam:g}"]
                lp.theory(ax, t, cv["pre_th"][i], color=lam_cols[i])
                lp.simulation(ax, t[mk], cv["pre"][i][mk], color=lam_cols[i], markersize=3)
                if r["is_turning_point"]:
                    lp.mark_turning_point(ax, predicted=r["t_star_predicted"], measured=r["t_star_measured"],
                                          y_measured=r["min_pretrain_loss_after"], color=lam_cols[i])
            for i, tl in enumerate(t_learn[2:], start=3):
                if t[0] <= tl <= t[-1]:
                    ax.axvline(tl, color="0.6", lw=0.6, ls="-.", zorder=0)
                    right = i == len(t_learn)  # the last mode's label right of its line, the others left
                    ax.text(tl, ymax * 5, f" mode {i}\n half-learnt " if right else f"mode {i} \nhalf-learnt ",
                            fontsize=5.5, color="0.4", va="top", ha="left" if right else "right")
            lp.time_axis(ax)
            ax.set_yscale("log")
            ax.set_ylim(ymin / 3, ymax * 6)
            ax.set_ylabel("pre-training loss\nafter fine-tuning")
            ax.set_title(f"({'ab'[j]}) {PENALTY_LABEL[on]},\n"
                         rf"gap $\sigma'_4-\sigma_4$ = {gaps[kbig]:g}", loc="left", fontsize=7)
            lp.legend(ax, colors={rf"$\lambda$ = {v:g}": c for v, c in zip(lams, lam_cols)}, theory_label=None,
                      sim_label=None, loc="lower left", fontsize=5.5, ncol=2, handlelength=1.0, columnspacing=0.8)
        # (c) T* against lambda
        cx, dx = axes[1]
        for on in PENALTIES:
            for k, g in enumerate(gaps):
                rows, cv = table[on][f"{g:g}"], curves[on, k]
                st = pen_style[on]
                lp.theory(cx, lam_th, cv["t_star_dense"], color=gap_cols[k], linestyle=st["ls"])
                cat = np.array([rows[f"{v:g}"]["catastrophic"] for v in lams])
                tm = np.array([np.nan if rows[f"{v:g}"]["t_star_measured"] is None else rows[f"{v:g}"]["t_star_measured"]
                               for v in lams])
                lp.simulation(cx, lams[cat], tm[cat], color=gap_cols[k], marker=st["marker"],
                              markerfacecolor=gap_cols[k])
                lp.simulation(cx, lams[~cat], tm[~cat], color=gap_cols[k], marker=st["marker"])
                lp.theory(dx, lam_th, cv["ft_given_up_dense"], color=gap_cols[k], linestyle=st["ls"])
                fr = np.array([rows[f"{v:g}"]["finetune_gain_given_up_percent"] for v in lams])
                lp.simulation(dx, lams, fr, color=gap_cols[k], marker=st["marker"])
        for ax in (cx, dx):
            ax.set_xscale("symlog", linthresh=lams[1] if len(lams) > 1 else 0.1, linscale=0.5)
            ax.set_xlim(-0.005, lams[-1] * 1.15)
            ax.set_xticks(lams)
            ax.set_xticklabels([f"{v:g}" for v in lams])
            ax.set_xlabel(r"penalty strength $\lambda$")
        cx.set_ylabel(r"turning point $T^*$ (time $t$)")
        cx.set_title("(c) $T^*$ against $\\lambda$ (filled: catastrophic, the learnt late\n"
                     "mode ends worse than never learning it; hollow: not)", loc="left", fontsize=7)
        dx.set_ylabel("fine-tuning gain given up (%)")
        top = max(max(np.nanmax(curves[on, k]["ft_given_up_dense"]) for on in PENALTIES for k in range(len(gaps))), 5.0)
        dx.set_ylim(-0.03 * top, 1.12 * top)
        dx.set_title("(d) the fine-tuning loss given up, last checkpoint:\n"
                     r"$(L_{ft}(\lambda) - L_{ft}(0))\,/\,(L_{ft}$ before fine-tuning $- L_{ft}(0))$", loc="left",
                     fontsize=7)
        gap_handles = [(rf"(c, d) gap $\sigma'_4-\sigma_4$ = {g:g} ($\sigma'_4$ = {cfg['sigma_pre'][-1] + g:g})",
                        Line2D([], [], color=c, lw=4, solid_capstyle="butt")) for g, c in zip(gaps, gap_cols)]
        pen_handles = [("(c, d) map penalty (solid, circles)", Line2D([], [], color="k", ls="-", marker="o", mfc="none")),
                       ("(c, d) layer pull (dashed, squares)", Line2D([], [], color="k", ls="--", marker="s", mfc="none"))]
        lp.legend(fig, theory_label="theory: exact per-mode GD maps (lo.theory.pretrain + lo.theory.finetune)",
                  sim_label="simulation: GD in float64 (lo.pretrain + lo.finetune)", turning_point=True,
                  measured_min=True, extra=pen_handles + gap_handles, loc="outside lower center", ncol=3)
        lp.save(fig, png)
    C.save_data(npz, t=t, lams=lams, gaps=gaps, theory_lams=lam_th,
                **{f"{on}_{q}": np.array([curves[on, k][q] for k in range(len(gaps))])
                   for on in PENALTIES for q in ("pre", "ft", "pre_th", "ft_th", "t_star_dense", "ft_given_up_dense")})


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
