"""F6 — which ways of tuning the fine-tuning learning rate per checkpoint leave the degradation?

The F4 setting at widths 32 (depth 2, sigma_i = 1/i, aligned init, ``additive`` shift). Every
checkpoint is fine-tuned at every learning rate of a log grid for ``ft_steps`` steps in ONE
vmapped ``lo.finetune`` call that records both losses every ``record_every`` steps, so the runs
with a smaller step budget are the prefixes of the same runs (population GD is deterministic).
Four tuning criteria pick one learning rate per checkpoint from that call, always interpolated in
log lr between grid points (a choice read off a coarse grid jumps by a whole grid step and fakes
a few percent of degradation):

* ``target_loss``: the lr that reaches a fine-tuning-loss target after ``ft_steps`` with the
  lowest pre-training loss (the crossing of the target interpolated in log lr).
* ``best_finetune_loss``: the lr with the lowest fine-tuning loss after a small step budget
  (``budgets``, the regime of the paper's sweeps); it sits at GD's stability edge.
* ``best_sum``: the lr with the lowest pre-training + fine-tuning loss after a budget.
* ``matched_finetune_loss``: at a few fixed lrs, the pre-training loss at the step where the
  fine-tuning loss reaches a target (interpolated between records): smaller lr, same fine-tuning
  loss — does it forget less?

Each criterion picks the rates; ``result.at_lr(lr)`` reads the fine-tuning result there (a
``linoverfit.tuned.TunedFinetune``, linear or quadratic in (log lr, log loss) as the criterion implies),
for the simulation (``lo.finetune``) and the prediction (``FinetunePrediction``) alike, and
``lo.turning_point`` judges both (an interior minimum and a rise of at least 1%).

Left: the pre-training loss after fine-tuning at the tuned lr, in units of each curve's minimum,
with a fixed lr for reference; middle: the tuned lr; right: matched fine-tuning loss across fixed
lrs. Lines: the same selection applied to ``lo.theory.curves.finetune_curve``, which predicts gradient
descent at each learning rate and step count (not only the flow); compared with the simulation
where both selected lrs lie below GD's stability edge.

Run: ``python experiments/F6_tuned_lr.py [--quick] [--out DIR] [--set targets="(0.01,)"]``.

Size: one figure whose four criteria are read off one vmapped fine-tuning call, simulation then
theory then the three panels, top to bottom like the other figure scripts.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings

import jax
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.tuned import TunedFinetune

NUMBER, NAME = "F6", "tuned_lr"
TITLE = "tuning the fine-tuning learning rate per checkpoint: which criteria leave the degradation?"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=32,                        # d_in = hidden = d_out (depth 2)
    alpha=1.0,                       # teacher spectrum sigma_i = i**-alpha
    init_scale=1e-3,                 # aligned init: s0 = scale^2
    lr=0.05,                         # pre-training learning rate
    steps=16384,
    checkpoints=32,
    first_step=16,
    shift=("additive", 0.1, None),   # (kind, size, rank)
    ft_steps=300,                    # the longest budget; shorter budgets are prefixes of the same runs
    record_every=10,                 # losses recorded every 10 steps (budgets must be multiples)
    lr_exponents=(-3.0, 0.125),      # lr grid 10**(k / lrs_per_decade) between these decades (one call);
                                     # it ends one grid step past GD's stability edge 1/sigma'_1 ~ 1 at the
                                     # fine-tuning solution (depth 2: sharpness 2 sigma'_1), so an optimum
                                     # just below the edge is interior and interpolated
    lrs_per_decade=8,                # grid ratio 10**(1/8) = 1.33
    targets=(0.01, 0.03),            # target_loss: fine-tuning-loss targets after ft_steps
    budgets=(10, 30),                # best_finetune_loss: step budgets (paper's regime)
    sum_budgets=(30, 300),           # best_sum: step budgets
    matched_lrs=(0.0316, 0.1, 0.316),  # matched_finetune_loss: fixed lrs (nearest grid lr is used)
    matched_target=0.03,             # matched_finetune_loss: the fine-tuning loss to match
    fixed_lr=0.0316,                 # reference curve without tuning (nearest grid lr)
    theory_every=2,                  # predict at every n-th checkpoint
    theory_rtol=1e-7,
)
QUICK = dict(width=16, steps=8192, checkpoints=20, ft_steps=150, lrs_per_decade=6, sum_budgets=(30, 150),
             lr_exponents=(-2.5, 0.125), matched_lrs=(0.1, 0.316), fixed_lr=0.1, targets=(0.03,), theory_every=2)
# ----------------------------------------------------------------------------- end of config

#: Where theory and simulation are compared.
THEORY_NOTE = ("lo.theory.curves.finetune_curve predicts gradient descent at each (lr, steps) (exact GD on the "
               "balanced factors, pre-training modes by GD at its lr); past GD's stability edge the runs "
               "are chaotic and float32 vs float64 round-off decides, so the selections are compared where "
               "both selected lrs lie below the edge at the fine-tuning solution")


# ----------------------------------------------------------------------------- selections


def _vertex(x, y):
    """Vertex of the parabola through three points ``(x, y)`` (a minimum), clipped to ``[x0, x2]``."""
    a, b, _ = np.polyfit(x, y, 2)
    if not (a > 0):
        return float(x[1])
    return float(np.clip(-b / (2 * a), x[0], x[2]))


def _quad(x, y, x0):
    """The parabola through three points evaluated at ``x0`` (Lagrange)."""
    return float(np.polyval(np.polyfit(x, y, 2), x0))


def best_lr(lrs, crit, value):
    """Per checkpoint, the lr minimising ``crit`` and ``value`` there, both ``(C, R)`` over the lr grid.

    The grid argmin (finite entries only) is refined by the vertex of the parabola through it and
    its two neighbours in ``(log lr, log crit)``; ``value`` is interpolated there by the parabola
    through the same three points in ``(log lr, log value)``. At the grid's ends or next to a
    non-finite (diverged) neighbour the grid point is used. Returns ``(lr, value)``, ``(C,)``; the
    value is ``result.at_lr(lr, interpolation="quadratic")``'s (round-off aside), which F6 reads.
    """
    x = np.log(lrs)
    out_lr, out_v = np.full(len(crit), np.nan), np.full(len(crit), np.nan)
    for c, (f, v) in enumerate(zip(crit, value)):
        ok = np.isfinite(f) & np.isfinite(v) & (f > 0) & (v > 0)
        if not ok.any():
            continue
        j = int(np.flatnonzero(ok)[np.argmin(f[ok])])
        out_lr[c], out_v[c] = lrs[j], v[j]
        if 0 < j < len(lrs) - 1 and ok[j - 1] and ok[j + 1]:
            s = slice(j - 1, j + 2)
            xs = _vertex(x[s], np.log(f[s]))
            out_lr[c], out_v[c] = np.exp(xs), np.exp(_quad(x[s], np.log(v[s]), xs))
    return out_lr, out_v


def tune_to_target(lrs, ft_after, pre_after, target):
    """Tuned learning rate per checkpoint for a fine-tuning-loss target, and the pre-training loss it leaves.

    Arrays ``(C, R)`` over the lr grid ``lrs`` (NaN = diverged). The feasible lrs are those whose
    fine-tuning loss after is <= ``target``: the smallest one is found between grid points by
    interpolating log loss in log lr (where the loss crosses the target), and every grid lr above
    it is a candidate too; the tuned lr is the candidate with the lowest pre-training loss after
    (pre-training loss interpolated the same way at the crossing). Returns ``(lr, pre)``, ``(C,)``,
    NaN where no grid lr reaches the target; ``pre`` is ``result.at_lr(lr)``'s (linear; round-off
    aside), which F6 reads.
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


def at_matched_loss(steps, ft_traj, pre_traj, target):
    """Pre-training loss where the fine-tuning loss first reaches ``target`` along each run.

    ``steps`` ``(K,)`` recorded steps (the first may be 0, the start), trajectories ``(C, K)``. The
    crossing is interpolated linearly in (step, log loss) between the two records around it.
    Returns ``(step, pre)``, ``(C,)``, NaN where the target is not reached.
    """
    out_s, out_p = np.full(len(ft_traj), np.nan), np.full(len(ft_traj), np.nan)
    for c, (f, p) in enumerate(zip(ft_traj, pre_traj)):
        ok = np.isfinite(f) & np.isfinite(p)
        hit = np.flatnonzero(ok & (f <= target))
        if hit.size == 0:
            continue
        k = int(hit[0])
        if k == 0 or not ok[k - 1]:
            out_s[c], out_p[c] = steps[k], p[k]
            continue
        lf0, lf1 = np.log(f[k - 1]), np.log(f[k])
        w = (np.log(target) - lf0) / (lf1 - lf0)
        out_s[c] = steps[k - 1] + w * (steps[k] - steps[k - 1])
        out_p[c] = np.exp(np.log(p[k - 1]) + w * (np.log(p[k]) - np.log(p[k - 1])))
    return out_s, out_p


def _u(tuned: TunedFinetune):
    """The U-curve of a tuned result's one curve (``lo.turning_point``), ``None`` when it has no finite point."""
    tp = lo.turning_point(tuned, min_rise=C.DEPTH)
    return None if tp.index[0] < 0 else tp.curve(0)


def _entry(sim: TunedFinetune, th: TunedFinetune | None, lr_edge, lr_th=None):
    """Summary row of one selected curve: the U-curve verdict (``lo.turning_point`` on the simulated and
    the predicted tuned result alike), the tuned lr range, theory vs simulation."""
    y, lr_sel = np.asarray(sim.pretrain_loss_after)[:, 0], np.asarray(sim.lr)[:, 0]
    t = np.asarray(sim.t)
    u = _u(sim)
    row = {"survives": bool(u is not None and u.is_turning_point),
           "degradation_percent": None if u is None else 100.0 * u.degradation,
           "rise_percent": None if u is None else 100.0 * u.rise,
           "t_star": None if u is None else u.t_star,
           "is_turning_point": bool(u is not None and u.is_turning_point),
           "depth_percent": 100.0 * C.DEPTH,
           "checkpoints_selected": int(np.isfinite(y).sum()),
           "tuned_lr_first": _first(lr_sel), "tuned_lr_last": _last(lr_sel)}
    if th is not None:
        t_th, y_th = np.asarray(th.t), np.asarray(th.pretrain_loss_after)[:, 0]
        uth = _u(th)
        row["theory_survives"] = bool(uth is not None and uth.is_turning_point)
        row["theory_degradation_percent"] = None if uth is None else 100.0 * uth.degradation
        every = len(t) // len(t_th) if len(t_th) else 1
        ys, ls = y[::every][: len(t_th)], lr_sel[::every][: len(t_th)]
        rel = np.abs(ys - y_th) / y_th
        # below the stability edge GD is not chaotic: there the prediction must match the simulation
        valid = np.isfinite(rel) & (ls < lr_edge) & (np.asarray(lr_th) < lr_edge)
        row["checkpoints_below_edge"] = int(valid.sum())
        row["max_rel_diff_theory_vs_sim_below_edge"] = float(np.max(rel[valid])) if valid.any() else None
        row["max_rel_diff_theory_vs_sim_all"] = float(np.nanmax(rel)) if np.isfinite(rel).any() else None
        row["theory_t_star"] = None if uth is None else uth.t_star
    return row


def _first(a):
    a = np.asarray(a, float)
    return float(a[np.isfinite(a)][0]) if np.isfinite(a).any() else None


def _last(a):
    a = np.asarray(a, float)
    return float(a[-1]) if np.isfinite(a[-1]) else None


def _worst(rows: dict) -> dict:
    """Headline of a criterion with sub-entries: the sub-entry with the largest degradation (the
    criterion leaves a degradation when any of its settings does)."""
    key = max(rows, key=lambda k: (rows[k]["survives"], rows[k]["degradation_percent"] or 0.0))
    head = {k: rows[key][k] for k in ("survives", "degradation_percent", "rise_percent", "t_star",
                                      "is_turning_point", "depth_percent")}
    return {**head, "headline": key}


# ----------------------------------------------------------------------------- run


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F6_tuned_lr.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    stages = C.Stages(4, progress)
    k_task, k_init, k_shift, k_ft = jax.random.split(jax.random.key(seed), 4)
    d = cfg["width"]
    e_lo, e_hi = cfg["lr_exponents"]
    per = int(cfg["lrs_per_decade"])
    lrs = 10.0 ** (np.arange(round(e_lo * per), round(e_hi * per) + 1) / per)
    S, rec = int(cfg["ft_steps"]), int(cfg["record_every"])
    budgets, sum_budgets = tuple(int(b) for b in cfg["budgets"]), tuple(int(b) for b in cfg["sum_budgets"])
    for b in budgets + sum_budgets:
        if b % rec or not 0 < b <= S:
            raise ValueError(f"every budget must be a multiple of record_every={rec} in (0, ft_steps={S}], got {b}")

    def on_grid(lr, name):
        i = int(np.argmin(np.abs(np.log(lrs / lr))))
        if abs(np.log(lrs[i] / lr)) > 0.5 * np.log(10) / per:
            raise ValueError(f"{name}={lr} lies outside the lr grid {lrs[0]:g}..{lrs[-1]:g}")
        return i

    fixed = on_grid(cfg["fixed_lr"], "fixed_lr")
    matched = [on_grid(v, "matched_lrs") for v in cfg["matched_lrs"]]
    targets = np.asarray(cfg["targets"], float)
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    net = lo.DeepLinear((d, d, d))
    kind, size, rank = cfg["shift"]
    ft = lo.tasks.shifted(task, kind=kind, size=size, rank=rank, key=k_shift, scale="absolute")
    sig_ft = np.linalg.svd(np.asarray(ft.teacher, float), compute_uv=False)

    with stages("pre-train"):
        W0 = net.init(k_init, scale=cfg["init_scale"], scheme="aligned", task=task)
        ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
        run_ = lo.pretrain(net, W0, task, lr=cfg["lr"], checkpoints=ck)
    t = np.asarray(run_.t, float)
    with stages(f"fine-tune {len(t)} checkpoints x {len(lrs)} lrs x {S} steps (one call)"):
        with warnings.catch_warnings():  # runs beyond the stability edge diverge by design; counted below
            warnings.simplefilter("ignore", lo.errors.DivergenceWarning)
            fr = lo.finetune(net, run_, ft, lr=lrs, steps=S, key=k_ft, record_every=rec)
        steps = np.concatenate([[0], np.asarray(fr.record_steps)])
        # (C, R, K) with the start as record 0; entries after a divergence are NaN
        pre = np.concatenate([np.repeat(np.asarray(fr.pretrain_loss_before, float)[:, None, None], len(lrs), 1),
                              np.asarray(fr.pretrain_loss_trajectory, float)], axis=2)
        fin = np.concatenate([np.repeat(np.asarray(fr.finetune_loss_before, float)[:, None, None], len(lrs), 1),
                              np.asarray(fr.finetune_loss_trajectory, float)], axis=2)
        bad = ~(np.isfinite(pre) & np.isfinite(fin))
        pre[bad], fin[bad] = np.nan, np.nan
        diverged = np.asarray(fr.diverged)

    def rec_of(b):
        return int(np.searchsorted(steps, b))

    # ---- simulated selections: each criterion picks the rates, fr.at_lr reads the runs there
    sel = {}  # (name, setting) -> dict(sim=TunedFinetune, th=TunedFinetune, lr_th=(C_th,))
    for g in targets:
        lr_t, _ = tune_to_target(lrs, fin[:, :, -1], pre[:, :, -1], g)
        sel[("target_loss", f"target={g:g}")] = dict(sim=fr.at_lr(lr_t, missing="nan"))
    for b in budgets:
        k = rec_of(b)
        lr_b, _ = best_lr(lrs, fin[:, :, k], pre[:, :, k])
        sel[("best_finetune_loss", f"budget={b}")] = dict(sim=fr.at_lr(lr_b, interpolation="quadratic", steps=b,
                                                                       missing="nan"))
    for b in sum_budgets:
        k = rec_of(b)
        lr_b, _ = best_lr(lrs, fin[:, :, k] + pre[:, :, k], pre[:, :, k])
        sel[("best_sum", f"budget={b}")] = dict(sim=fr.at_lr(lr_b, interpolation="quadratic", steps=b, missing="nan"))
    for r in matched:
        # a fixed lr stopped at its own step per checkpoint (not a rate per checkpoint): built by hand
        _, y = at_matched_loss(steps, fin[:, r], pre[:, r], cfg["matched_target"])
        sim = TunedFinetune(t=t, lr=np.where(np.isfinite(y), lrs[r], np.nan)[:, None], steps=np.asarray(fr.steps),
                            pretrain_loss_before=pre[:, r, 0], finetune_loss_before=fin[:, r, 0],
                            pretrain_loss_after=y[:, None])
        sel[("matched_finetune_loss", f"lr={lrs[r]:.3g}")] = dict(sim=sim)

    # ---- theory: lo.theory.curves.finetune_curve (GD at the real lr and steps) on the whole grid at every budget
    t_th = t[:: cfg["theory_every"]]
    edge = 2.0 / lo.theory.curvature.sharpness_from_spectrum(sig_ft, ft, net)  # GD's stability edge at the solution A'
    th = {}  # budget -> FinetunePrediction over the whole grid (C_th, R); NaN where the run diverges or is not predicted
    used = sorted(set(budgets) | set(sum_budgets) | {S})
    with stages(f"predict {len(t_th)} checkpoints x {len(lrs)} lrs at {len(used)} budgets"):
        for b in used:
            th_r = np.ones(len(lrs), bool)
            with warnings.catch_warnings():  # the grid goes one step past the edge by design
                warnings.simplefilter("ignore", lo.theory.PastEdgeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)  # overflow of the predicted runs past the edge
                try:
                    pred = lo.theory.curves.finetune_curve(task, ft, t_th, widths=net, s0=cfg["init_scale"] ** 2, lr=lrs,
                                                    steps=b, pretrain_lr=cfg["lr"], rtol=cfg["theory_rtol"])
                except np.linalg.LinAlgError:  # a predicted run diverged to inf within the budget: stop short of it
                    th_r = lrs <= 1.1 * edge
                    pred = lo.theory.curves.finetune_curve(task, ft, t_th, widths=net, s0=cfg["init_scale"] ** 2,
                                                    lr=lrs[th_r], steps=b, pretrain_lr=cfg["lr"],
                                                    rtol=cfg["theory_rtol"])
            g_pre, g_fin = np.full((len(t_th), len(lrs)), np.nan), np.full((len(t_th), len(lrs)), np.nan)
            g_pre[:, th_r], g_fin[:, th_r] = pred.pretrain_loss_after, pred.finetune_loss_after
            bad = ~(np.isfinite(g_pre) & np.isfinite(g_fin)) | (g_fin > 1e3 * np.asarray(pred.finetune_loss_before)[:, None])
            g_pre[bad], g_fin[bad] = np.nan, np.nan
            th[b] = dataclasses.replace(pred, lr=lrs, tau=lrs * b, pretrain_loss_after=g_pre, finetune_loss_after=g_fin,
                                        past_edge=None)
    pre_th = th[S].pretrain_loss_after  # the plotted fixed-lr line

    # ---- theory selections: the same criteria on the prediction, read by the same at_lr
    for key in sel:
        name, sub = key
        if name == "target_loss":
            g = float(sub.split("=")[1])
            lr_th, _ = tune_to_target(lrs, th[S].finetune_loss_after, th[S].pretrain_loss_after, g)
            sel[key]["th"] = th[S].at_lr(lr_th, missing="nan")
        elif name == "best_sum":
            b = int(sub.split("=")[1])
            lr_th, _ = best_lr(lrs, th[b].finetune_loss_after + th[b].pretrain_loss_after, th[b].pretrain_loss_after)
            sel[key]["th"] = th[b].at_lr(lr_th, interpolation="quadratic", missing="nan")
        elif name == "matched_finetune_loss":
            # one-path approximation (exact for the flow): where the predicted runs of ft_steps reach the
            # target along the lr grid; it carries no dependence on the fixed lr (GD's is O(lr))
            lr_m, _ = tune_to_target(lrs, th[S].finetune_loss_after, th[S].pretrain_loss_after, cfg["matched_target"])
            sel[key]["th"] = th[S].at_lr(lr_m, missing="nan")
            lr_th = np.where(np.isfinite(sel[key]["th"].pretrain_loss_after[:, 0]), float(sub.split("=")[1]), np.nan)
        else:  # best_finetune_loss
            b = int(sub.split("=")[1])
            lr_th, _ = best_lr(lrs, th[b].finetune_loss_after, th[b].pretrain_loss_after)
            sel[key]["th"] = th[b].at_lr(lr_th, interpolation="quadratic", missing="nan")
        sel[key]["lr_th"] = lr_th
    for s in sel.values():  # the plotted curves
        s["y"], s["lr"] = s["sim"].pretrain_loss_after[:, 0], s["sim"].lr[:, 0]
        s["y_th"] = s["th"].pretrain_loss_after[:, 0]

    # ---- summary
    u_fixed = lo.turning_point(fr, min_rise=C.DEPTH).curve(fixed)
    summary = {"width": d, "depth": net.depth, "shift": {"kind": kind, "size": size, "rank": rank}, "ft_steps": S,
               "record_every": rec, "lr_grid": lrs, "targets": targets, "budgets": list(budgets),
               "sum_budgets": list(sum_budgets), "matched_lrs": lrs[matched], "matched_target": cfg["matched_target"], "lr_grid_ratio": float(10 ** (1 / per)),
               "diverged_runs": int(diverged.sum()), "depth_percent": 100.0 * C.DEPTH,
               "theory_note": THEORY_NOTE,
               # GD's stability edge 2 / sharpness at the fine-tuning solution P = A' (balanced aligned
               # weights): sharpness L sigma'_1^(2 - 2/L), the top mode's rate (docs/theory.md, 4.4)
               "stability_edge_lr_at_finetune_solution": edge,
               "fixed_lr": {"lr": lrs[fixed], **u_fixed.summary()},
               "criteria": {}}
    names = ("target_loss", "best_finetune_loss", "best_sum", "matched_finetune_loss")
    for name in names:
        rows = {}
        for (n, sub), s in sel.items():
            if n == name:
                rows[sub] = _entry(s["sim"], s["th"], edge, s["lr_th"])
        summary["criteria"][name] = {**_worst(rows), "settings": rows}
    tl = summary["criteria"]["target_loss"]
    tl["selection"] = f"lowest pre-training loss among lrs reaching the fine-tuning-loss target after {S} steps"
    bf = summary["criteria"]["best_finetune_loss"]
    bf["selection"] = "lowest fine-tuning loss after the budget (parabolic vertex in log lr)"
    summary["criteria"]["best_sum"]["selection"] = "lowest pre-training + fine-tuning loss after the budget"
    mf = summary["criteria"]["matched_finetune_loss"]
    mf["selection"] = f"pre-training loss where the fine-tuning loss first reaches {cfg['matched_target']:g}, fixed lrs"
    mf["target"] = cfg["matched_target"]
    ys = np.array([sel[("matched_finetune_loss", f"lr={lrs[r]:.3g}")]["y"] for r in matched])
    both = np.all(np.isfinite(ys), axis=0)
    fg = ys - np.asarray(fr.pretrain_loss_before, float)[None]  # forgetting at matched fine-tuning loss
    mf["checkpoints_reached_by_all"] = int(both.sum())
    if both.any():
        # + : the smaller lr forgets more; - : it forgets less (checkpoints every lr reaches)
        rel = fg[0, both] / fg[-1, both] - 1.0
        mf["forgetting_smallest_vs_largest_lr_percent"] = {"min": 100 * float(rel.min()), "max": 100 * float(rel.max())}
        mf["lrs_compared"] = [float(lrs[matched[0]]), float(lrs[matched[-1]])]
        mf["pretrain_loss_spread_across_lrs_percent"] = float(100 * np.max(ys[:, both].max(0) / ys[:, both].min(0) - 1))

    # ---- acceptance checks (linoverfit figures fails when one is missed)
    short = [r for k, r in bf["settings"].items() if int(k.split("=")[1]) <= 30]
    checks = [C.check("best_finetune_loss leaves a turning point (rise >= 1%) at a budget <= 30 steps",
                      any(r["survives"] for r in short), expected=True)]
    # matched_finetune_loss has no exact prediction (one-path approximation, off by GD's O(lr)): reported only.
    # The quick run (width 16, float32) is not checked: where its criteria are flat in lr, float32
    # round-off moves the selected lr and with it the pre-training loss by a few %.
    for name in () if quick else ("target_loss", "best_finetune_loss", "best_sum"):
        for sub, r in summary["criteria"][name]["settings"].items():
            if r["checkpoints_below_edge"]:
                checks.append(C.check(f"{name} {sub}: predicted vs simulated selection below the edge (relative)",
                                      r["max_rel_diff_theory_vs_sim_below_edge"], at_most=0.02))
    summary["checks"] = checks

    # ---- plot
    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        show = [("target_loss", f"target={targets[0]:g}"), *[("best_finetune_loss", f"budget={b}") for b in budgets],
                *[("best_sum", f"budget={b}") for b in sum_budgets]]
        labels = {"target_loss": "fine-tuning loss $\\leq$ {v} after %d steps" % S,
                  "best_finetune_loss": "best fine-tuning loss after {v} steps",
                  "best_sum": "best pre-tr. + fine-tuning loss, {v} steps"}
        palette = ["tab:green", "tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
        cols = dict(zip(show, palette))
        with lp.style():
            fig, axes = lp.subplots(2, 2, width="page", aspect=0.7)
            (ax, bx), (cx, dx) = axes
            fc = "0.45"
            yf = pre[:, fixed, -1]
            ref = np.nanmin(yf)
            lp.theory(ax, t_th, pre_th[:, fixed] / ref, color=fc)
            lp.simulation(ax, t, yf / ref, color=fc, marker="s", markersize=2.6)
            for key in show:
                s, c = sel[key], cols[key]
                r = np.nanmin(s["y"])
                lp.theory(ax, t_th, s["y_th"] / r, color=c)
                lp.simulation(ax, t, s["y"] / r, color=c, markersize=2.8)
                lp.theory(bx, t_th, s["lr_th"], color=c)
                lp.simulation(bx, t, s["lr"], color=c, markersize=2.8)
            lp.time_axis(ax)
            ax.set_ylim(0.97, 1.6)
            ax.set_ylabel("pre-training loss after\nfine-tuning / its minimum")
            # why the orange markers leave the line at t < 10: said where the reader looks
            ax.set_title("(a) lr tuned per checkpoint, by criterion\n(orange, t < 10: a flat criterion over the largest "
                         "stable lrs,\nso theory and simulation pick neighbouring lrs of the grid)", loc="left",
                         fontsize=7)
            lp.time_axis(bx)
            bx.set_yscale("log")
            bx.set_ylabel(r"tuned fine-tuning lr $\eta^*$")
            bx.set_title("(b) the tuned learning rate", loc="left")
            # (c) forgetting at matched fine-tuning loss, relative to the largest fixed lr (flow: all equal)
            mcols = lp.strength_colors(len(matched) + 1, cmap="viridis")[1:]
            y0 = np.asarray(fr.pretrain_loss_before, float)
            big = sel[("matched_finetune_loss", f"lr={lrs[matched[-1]]:.3g}")]["y"] - y0
            for r, c in zip(matched[:-1], mcols):
                fgr = sel[("matched_finetune_loss", f"lr={lrs[r]:.3g}")]["y"] - y0
                lp.simulation(cx, t, fgr / big, color=c, markersize=2.8)
            cx.axhline(1.0, color="k", lw=1.0)
            lp.time_axis(cx)
            cx.set_xlim(ax.get_xlim())
            cx.set_ylabel(f"forgetting when the fine-tuning loss\nreaches {cfg['matched_target']:g}, / at lr {lrs[matched[-1]]:.3g}")
            cx.set_title("(c) matched fine-tuning loss, fixed lrs", loc="left")
            dx.axis("off")
            colors = {labels[n].format(v=sub.split("=")[1]): cols[(n, sub)] for n, sub in show}
            colors[f"fixed lr {lrs[fixed]:.3g}, {S} steps (squares)"] = fc
            colors.update({f"(c) fixed lr {lrs[r]:.3g} (relative to {lrs[matched[-1]]:.3g})": c
                           for r, c in zip(matched[:-1], mcols)})
            from matplotlib.lines import Line2D

            extra = []
            if diverged.any():
                extra.append((f"{int(diverged.sum())} runs beyond the stability edge diverged (excluded)",
                              Line2D([], [], color="none")))
            lp.legend(dx, colors=colors,
                      theory_label="theory: same selection on lo.theory.curves.finetune_curve\n(GD at each lr; (c) the flow gives 1)",
                      sim_label=f"simulation: {len(lrs)} lrs in one lo.finetune call", extra=extra,
                      loc="center", fontsize=6)
            lp.save(fig, png)
        keep = np.unique([0, *[rec_of(b) for b in budgets + sum_budgets], len(steps) - 1])  # the records used
        C.save_data(npz, t=t, t_theory=t_th, lr_grid=lrs, record_steps=steps[keep], pretrain_loss=pre[:, :, keep],
                    finetune_loss=fin[:, :, keep], diverged=diverged,
                    **{f"pretrain_loss_theory_{b}_steps": th[b].pretrain_loss_after for b in th},
                    **{f"finetune_loss_theory_{b}_steps": th[b].finetune_loss_after for b in th}, **{f"matched_lr_{lrs[r]:.3g}_pretrain_loss": pre[:, r]
                                                                for r in matched},
                    **{f"{n}_{sub}_pretrain_loss_after": s["y"] for (n, sub), s in sel.items()},
                    **{f"{n}_{sub}_lr": s["lr"] for (n, sub), s in sel.items()},
                    **{f"{n}_{sub}_pretrain_loss_after_theory": s["y_th"] for (n, sub), s in sel.items()})
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
