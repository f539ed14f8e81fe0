"""F12 — does the linear mechanism carry over? tanh and ReLU students on a linear and a tanh teacher.

Students: bias-free ``lo.MLP`` of width 16 and depth 2 or 3 with tanh or ReLU, from the same small
Gaussian init and GD schedule as the deep linear network of those widths (lr 0.05; depth 2: init scale
1e-3, 8192 steps; depth 3: init scale 0.03, 32768 steps, because the saddle of a depth-3 network is
flatter and a 1e-3 start would not leave it in any affordable budget). They have no
population loss, so every network is trained by full-batch GD on one fixed sample of ``N = 128``
inputs ``x ~ N(0, I)``; the pre-training loss (before and after fine-tuning) is the loss on that
sample, the objective GD minimises. Teachers: (1) the linear power-law teacher ``A = U diag(i^-1) V^T``
(the W1 teacher at width 16); (2) a tanh teacher whose linear part at 0 has the same spectrum,
``f*(x) = U diag(i^-1) tanh(a V^T x) / a`` (other random orthogonal ``U, V``; ``a = 1.5``: a best linear fit
keeps about 89% of its label energy, ``teacher_linear_fraction_percent``). Fine-tuning: 500 GD steps at lrs 0.003
and 0.01 on a second sample whose labels add the additive shift (0.2) of ``lo.tasks.shifted``.

Rows: one setting (depth x student activation x teacher). Columns:
(a) singular values of the student's best linear map on the sample (least squares of its outputs on
    the inputs; the end-to-end map for a linear network) over time, with the DeepLinear of the same
    widths, init and sample (``lo.theory.pretrain``: the exact linear theory of that sample) as lines
    and the teacher's best linear map dashed — incremental learning or not;
(b) sensitivity to Gaussian weight noise ``E L(W + gamma E) - L(W)``, gamma = 0.02: Monte Carlo
    (``lo.sensitivity.gaussian``, markers with standard errors), Hutchinson's second-order estimate
    ``gamma^2/2 tr H`` (``lo.theory.hutchinson``, line) and the linear theory (grey) — progressive
    sensitivity or not;
(c) the perturbed loss ``L + S`` over checkpoints in units of its minimum (Monte Carlo markers,
    Hutchinson line, linear theory dashed), with T*: the U-curve after perturbation;
(d) the pre-training loss after fine-tuning over the checkpoint it started from (``lo.finetune``
    markers; the network linearised at each checkpoint, ``lo.theory.linearised.finetune``, lines;
    the linear theory, grey), in units of its minimum, with T*: the U-curve after fine-tuning;
(e) fine-tuning T* measured vs the linear theory vs the linearised prediction, per setting and lr.

A verdict per setting and lr is in the summary, with the turning point of the perturbed loss
``L + S`` (``perturbation``: Monte Carlo, Hutchinson, linear theory), the growth of the sensitivity past
the saddle, the sharpness (``lo.theory.sharpness(run, net=net)``) and the weight-norm growth, each next
to the linear theory's, and a ``tally`` of the turning points each prediction places. Checks (things
that must hold): the linearised prediction matches fine-tuning at small lr x steps (a third lr,
1e-4 x 500 steps), and Hutchinson matches Monte Carlo within standard errors for the smooth (tanh)
students.

Size: one figure of eight settings (depth x activation x teacher), each measured four ways and predicted
three ways, and its five-column plot; kept in one module so that it can be copied and edited as a script.

Run: ``python experiments/F12_nonlinear.py [--quick] [--out DIR] [--set samples=128]``.
"""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.theory import hutchinson, linearised

NUMBER, NAME = "F12", "nonlinear"
TITLE = "does the linear mechanism carry over? tanh and ReLU students of depth 2 and 3, linear and tanh teachers"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,                    # d_in = every hidden width = d_out
    depths=(2, 3),
    alpha=1.0,                   # teacher spectrum sigma_i = i**-alpha
    teacher_nonlinearity=1.5,    # a of the tanh teacher U diag(sigma) tanh(a V^T x) / a
    samples=128,                 # N: the pre-training and the fine-tuning samples
    init_scale=(1e-3, 0.03),     # per depth: Gaussian init, entries N(0, scale^2), the same weights for every student
    lr=0.05,
    steps=(8192, 32768),         # per depth
    checkpoints=24,
    first_step=16,
    activations=("tanh", "relu"),
    teachers=("linear", "tanh"),
    shift=0.2,                   # additive shift of the fine-tuning labels (lo.tasks.shifted)
    ft_lrs=(0.003, 0.01),
    ft_steps=500,
    check_lr=1e-4,               # the small-lr x steps check of the linearised prediction
    check_rtol=0.05,             # ... its largest error over checkpoints / the largest measured change
    gamma=0.02,
    mc_samples=128,
    probes=64,
    z_max=3.0,                   # Hutchinson vs Monte Carlo: |difference| / combined stderr
    z_fraction=0.9,              # ... at this fraction of the checkpoints past the saddle at least
    saddle_loss=0.5,             # "past the saddle": pre-training loss below this fraction of its initial value
    tolerance=0.25,              # "predicts T*" when within this relative error
)
QUICK = dict(width=8, samples=64, depths=(2,), init_scale=(1e-3,), steps=(2048,), checkpoints=16, ft_steps=200, mc_samples=64, probes=16,
             activations=("tanh",), check_rtol=0.1, z_fraction=0.75)
# ----------------------------------------------------------------------------- end of config

SHOWN_MODES = (0, 1, 3, 7, 15)


def _teacher(kind, task, a, key):
    """Labels of the teacher ``kind`` as a function of the inputs ``(N, d)``."""
    if kind == "linear":
        return lambda x: x @ task.teacher.T
    d = task.d_in
    ku, kv = jax.random.split(key)
    U = jnp.linalg.qr(jax.random.normal(ku, (d, d)))[0]
    V = jnp.linalg.qr(jax.random.normal(kv, (d, d)))[0]
    s = jnp.asarray(task.spectrum)
    return lambda x: (jnp.tanh(a * x @ V) / a * s) @ U.T


def _best_linear(net, weights, x):
    """Singular values ``(C, d)`` of the least-squares linear map of the outputs on the inputs, per checkpoint."""
    pinv = np.linalg.pinv(np.asarray(x, float))
    out = []
    for c in range(np.shape(jax.tree.leaves(weights)[0])[0]):
        W = jax.tree.map(lambda w: w[c], weights)
        F = np.asarray(net.apply(W, x), float)
        out.append(np.linalg.svd((pinv @ F).T, compute_uv=False))
    return np.array(out)


def _weight_norm(weights):
    """``||W||_F`` over every layer, per checkpoint ``(C,)``."""
    return np.sqrt(sum(np.sum(np.asarray(w, float) ** 2, axis=tuple(range(1, np.ndim(w)))) for w in weights))


def _short(key):
    """``"depth-2 tanh student, linear teacher"`` -> ``"depth 2 tanh / linear"``."""
    student, teacher = key.split(", ")
    depth, act = student.split()[:2]
    return f"{depth.replace('-', ' ')} {act} / {teacher.split()[0]}"


def _half_times(t, s):
    """First ``t`` at which each singular value reaches half its final value, ``(d,)``."""
    reached = s >= 0.5 * s[-1]
    return np.array([t[np.argmax(reached[:, i])] for i in range(s.shape[1])])


def _verdict(name, m, lin_th, lin_pred, tol):
    """One sentence on the linear theory and the linearised prediction of this curve's T*."""
    if not m.is_turning_point:
        other = ("the linear theory also predicts none" if not lin_th.is_turning_point
                 else f"the linear theory predicts one at T* = {lin_th.t_star:.3g}: it fails")
        return f"{name}: no U-curve measured (rise < 1%); {other}"
    if not lin_th.is_turning_point:
        lin = (f"; the linearised network is {C.rel_diff(lin_pred.t_star, m.t_star):.0%} off" if lin_pred.is_turning_point
               else "; the linearised network has none either")
        return f"{name}: U-curve measured at T* = {m.t_star:.3g}; the linear theory predicts none: it fails{lin}"
    rel = C.rel_diff(lin_th.t_star, m.t_star)
    word = "predicts T* within" if rel <= tol else "fails by"
    lin = (f"; the linearised network is {C.rel_diff(lin_pred.t_star, m.t_star):.0%} off" if lin_pred.is_turning_point
           else "; the linearised network has no U-curve")
    return (f"{name}: the linear theory {word} {rel:.0%} (T* {lin_th.t_star:.3g} vs measured {m.t_star:.3g}, "
            f"x{m.t_star / lin_th.t_star:.3g}){lin}")


def _key(depth, act, teacher):
    """The setting's name in the summary, e.g. ``"depth-2 tanh student, linear teacher"``."""
    return f"depth-{depth} {act} student, {teacher} teacher"


def _per_depth(cfg, name, depths):
    """``cfg[name]`` as one value per entry of ``depths`` (a scalar applies to every depth)."""
    v = cfg[name]
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,) * len(depths)
    if len(v) != len(depths):
        raise ValueError(f"config {name}={cfg[name]!r} needs one value per depth {depths} (or a single value for "
                         f"all): pass e.g. --set {name}=\"{v[:1] * len(depths)}\" with --set depths=\"{depths}\"")
    return v


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F12_nonlinear.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    acts, teachers = tuple(cfg["activations"]), tuple(cfg["teachers"])
    depths = tuple(cfg["depths"]) if isinstance(cfg["depths"], (tuple, list)) else (cfg["depths"],)
    scales, budgets = _per_depth(cfg, "init_scale", depths), _per_depth(cfg, "steps", depths)
    stages = C.Stages(len(teachers) * len(depths) * (1 + len(acts)) + 1, progress)
    k_task, k_shift, k_x, k_xf, k_init, k_teach, k_mc, k_probe = jax.random.split(jax.random.key(seed), 8)
    d, N = cfg["width"], cfg["samples"]
    lrs = np.asarray(tuple(cfg["ft_lrs"]) + (cfg["check_lr"],), float)
    R = len(cfg["ft_lrs"])
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    shift = lo.tasks.shifted(task, "additive", cfg["shift"], key=k_shift, scale="absolute").teacher - task.teacher
    x, xf = jax.random.normal(k_x, (N, d)), jax.random.normal(k_xf, (N, d))
    tol = cfg["tolerance"]
    checks, rows, data = [], [], {"ft_lrs": lrs}
    summary = {"width": d, "depths": list(depths), "init_scale": list(scales), "steps": list(budgets), "samples": N,
               "lr": cfg["lr"], "ft_lrs": lrs[:R], "ft_steps": cfg["ft_steps"], "gamma": cfg["gamma"],
               "check_lr": cfg["check_lr"], "tolerance_percent": 100 * tol, "settings": {}}
    for teacher in teachers:
        f = _teacher(teacher, task, cfg["teacher_nonlinearity"], k_teach)
        data_pre, data_ft = lo.Dataset(x, f(x)), lo.Dataset(xf, f(xf) + xf @ shift.T)
        lin_fit = data_pre.as_task()
        teacher_sv = np.linalg.svd(np.asarray(lin_fit.teacher, float), compute_uv=False)
        for depth, scale, steps in zip(depths, scales, budgets):
            widths = (d,) * (depth + 1)
            ck = lo.log_checkpoints(steps, cfg["checkpoints"], first=cfg["first_step"])
            lin_net = lo.DeepLinear(widths)
            W0 = lin_net.init(k_init, scale=scale)
            with stages(f"{teacher} teacher, depth {depth}: the linear theory of the sample"):
                th = lo.theory.pretrain(lin_net, W0, data_pre, lr=cfg["lr"], checkpoints=ck)
                th_ft = lo.theory.finetune(lin_net, th, data_ft, lr=lrs, steps=cfg["ft_steps"])
                th_sens = lo.theory.gaussian(lin_net, th, gamma=cfg["gamma"])
                th_sv = np.array([np.linalg.svd(np.asarray(P, float), compute_uv=False)
                                  for P in lin_net.end_to_end(th.weights)])
                th_sharp, th_norm = lo.theory.sharpness(th), _weight_norm(th.weights)
            th_tp = lo.turning_point(th_ft, min_rise=C.DEPTH)
            for act in acts:
                key = _key(depth, act, teacher)
                row = _setting(cfg, stages, key, lo.MLP(widths, activation=act), W0, ck, data_pre, data_ft, x, lrs,
                               k_mc, k_probe, checks)
                row.update(label=f"depth {depth}\n{act} student\n{teacher} teacher", th_sv=th_sv,
                           th_sharpness=th_sharp, th_norm=th_norm, teacher_sv=teacher_sv, th_ft=th_ft, th_tp=th_tp,
                           th_sens=np.asarray(th_sens.sensitivity, float)[:, 0],
                           th_pert=np.asarray(th_sens.perturbed_loss, float)[:, 0])
                summary["settings"][key] = _summarise(cfg, row, th, th_sens, lin_fit, data_pre, lrs[:R]) | {
                    "depth": depth, "activation": act, "teacher": teacher}
                rows.append(row)
                tag = f"depth{depth}_{act}_{teacher}"
                data.update({f"{tag}_t": row["t"], f"{tag}_singular_values": row["sv"],
                             f"{tag}_singular_values_linear_theory": th_sv,
                             f"{tag}_sharpness": row["sharpness"], f"{tag}_sharpness_linear_theory": th_sharp,
                             f"{tag}_weight_norm": row["norm"], f"{tag}_weight_norm_linear_theory": th_norm,
                             f"{tag}_sensitivity_mc": row["sm"], f"{tag}_sensitivity_mc_stderr": row["se_m"],
                             f"{tag}_sensitivity_hutchinson": row["sh"],
                             f"{tag}_sensitivity_linear_theory": row["th_sens"],
                             f"{tag}_perturbed_loss_mc": row["pm"], f"{tag}_perturbed_loss_hutchinson": row["ph"],
                             f"{tag}_perturbed_loss_linear_theory": row["th_pert"],
                             f"{tag}_pretrain_loss_after": row["fr"].pretrain_loss_after,
                             f"{tag}_pretrain_loss_after_linearised": row["pr"].pretrain_loss_after,
                             f"{tag}_pretrain_loss_after_linear_theory": th_ft.pretrain_loss_after})
    summary["tally"] = _tally(summary["settings"], tol)
    summary["checks"] = checks
    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        _plot(png, rows, lrs[:R], summary)
        C.save_data(npz, **data)
    return summary


def _tally(settings, tol):
    """Counts over the settings: measured U-curves (after fine-tuning, per lr; after perturbation) and how
    many turning points the linear theory and the linearised network put within ``tol`` of the measured one."""
    curves = [v for s in settings.values() for v in s["per_lr"].values()]
    measured = [v for v in curves if v["is_turning_point"]]
    within = lambda key: sum(v[key] is not None and v[key] <= 100 * tol for v in measured)  # noqa: E731
    return {"settings": len(settings), "u_curves": len(curves), "u_curves_measured": len(measured),
            "u_curves_linear_theory_within_tolerance": within("linear_theory_error_percent"),
            "u_curves_linearised_within_tolerance": within("linearised_error_percent"),
            "u_curves_linearised_not_measured": sum(not v["is_turning_point"] and v["t_star_linearised"] is not None
                                                    for v in curves),
            "perturbed_u_curves_measured": sum(s["perturbation"]["t_star_measured"] is not None
                                               for s in settings.values()),
            "perturbed_u_curves_linear_theory": sum(s["perturbation"]["t_star_linear_theory"] is not None
                                                    for s in settings.values()),
            "sensitivity_resolved_at_start": sum(s["sensitivity_growth"] is not None for s in settings.values())}


def _setting(cfg, stages, key, net, W0, ck, data_pre, data_ft, x, lrs, k_mc, k_probe, checks):
    """Run one student through the protocol; its measurements and predictions as a dict (one figure row).

    Appends the setting's checks (the linearised prediction at small lr x steps; Hutchinson against
    Monte Carlo for a smooth activation) to ``checks``."""
    R = len(cfg["ft_lrs"])
    with stages(key):
        run_ = lo.pretrain(net, W0, data_pre, lr=cfg["lr"], checkpoints=ck)
        fr = lo.finetune(net, run_, data_ft, lr=lrs, steps=cfg["ft_steps"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lo.theory.PastEdgeWarning)
            pr = linearised.finetune(net, run_, data_ft, lr=lrs, steps=cfg["ft_steps"])
        mc = lo.sensitivity.gaussian(net, run_, gamma=cfg["gamma"], samples=cfg["mc_samples"], key=k_mc)
        hu = hutchinson.second_order_sensitivity(net, run_, gamma=cfg["gamma"], probes=cfg["probes"], key=k_probe)
        sv = _best_linear(net, run_.weights, x)
        sharp = lo.theory.sharpness(run_, net=net)
    # the small lr x steps check of the linearised prediction (the last lr)
    before = np.asarray(fr.pretrain_loss_before, float)
    change = np.asarray(fr.pretrain_loss_after, float)[:, R] - before
    err = np.abs(np.asarray(pr.pretrain_loss_after, float)[:, R] - np.asarray(fr.pretrain_loss_after, float)[:, R])
    lin_small = float(err.max() / np.abs(change).max())
    checks.append(C.check(f"{key}: linearised vs measured pre-training loss after fine-tuning at lr "
                          f"{cfg['check_lr']:g} x {cfg['ft_steps']} steps, max error / max change",
                          lin_small, at_most=cfg["check_rtol"]))
    sm, se_m = np.asarray(mc.sensitivity, float)[:, 0], np.asarray(mc.stderr, float)[:, 0]
    sh, se_h = np.asarray(hu.sensitivity, float)[:, 0], np.asarray(hu.stderr, float)[:, 0]
    z = np.abs(sm - sh) / np.sqrt(se_m**2 + se_h**2)
    # near the saddle at the origin tr H ~ 0 and the gamma^4 term, which the second-order
    # estimate leaves out by construction, dominates: compare where the first mode is learnt
    loss = np.asarray(run_.loss, float)
    past = loss <= cfg["saddle_loss"] * loss[0]
    within = float(np.mean(z[past] <= cfg["z_max"])) if past.any() else float("nan")
    if net.activation != "relu":  # ReLU is not twice differentiable at its kinks: reported, not checked
        checks.append(C.check(f"{key}: Hutchinson within {cfg['z_max']:g} combined stderr of Monte Carlo "
                              f"(gamma {cfg['gamma']:g}) at >= {cfg['z_fraction']:.0%} of the checkpoints past the saddle",
                              bool(within >= cfg["z_fraction"]), expected=True))
    return dict(key=key, t=np.asarray(run_.t, float), loss=loss, past=past, sv=sv, sharpness=sharp,
                norm=_weight_norm(run_.weights), sm=sm, se_m=se_m, sh=sh,
                pm=np.asarray(mc.perturbed_loss, float)[:, 0], ph=np.asarray(hu.perturbed_loss, float)[:, 0],
                fr=fr, pr=pr, mc=mc, hu=hu, lin_small=lin_small, within=within,
                m_tp=lo.turning_point(fr, min_rise=C.DEPTH), p_tp=lo.turning_point(pr, min_rise=C.DEPTH))


def _summarise(cfg, row, th, th_sens, lin_fit, data_pre, lrs):
    """The summary entry of one setting: incremental learning, sensitivity, the perturbed and the
    fine-tuning U-curves measured against the linear theory and the linearised network, with verdicts."""
    t, d, tol = row["t"], cfg["width"], cfg["tolerance"]
    # U-curves after perturbation: the perturbed loss L + S over checkpoints, measured (Monte
    # Carlo), second order (Hutchinson) and the linear theory (exact expectation, DeepLinear)
    pert = {name: lo.turning_point(res, min_rise=C.DEPTH).curve(0)
            for name, res in (("measured", row["mc"]), ("hutchinson", row["hu"]), ("linear_theory", th_sens))}
    half, half_th = _half_times(t, row["sv"]), _half_times(t, row["th_sv"])
    k = min(8, d)
    per_lr, verdicts = {}, []
    for r, lr in enumerate(lrs):
        m, p, q = row["m_tp"].curve(r), row["p_tp"].curve(r), row["th_tp"].curve(r)
        both = m.is_turning_point and q.is_turning_point
        per_lr[f"{lr:g}"] = {
            "is_turning_point": m.is_turning_point,
            "t_star_measured": m.t_star if m.is_turning_point else None,
            "t_star_linear_theory": q.t_star if q.is_turning_point else None,
            "t_star_linearised": p.t_star if p.is_turning_point else None,
            "linear_theory_error_percent": 100 * C.rel_diff(q.t_star, m.t_star) if both else None,
            "t_star_ratio_measured_to_linear_theory": m.t_star / q.t_star if both else None,
            "linearised_error_percent": (100 * C.rel_diff(p.t_star, m.t_star)
                                         if m.is_turning_point and p.is_turning_point else None),
            "degradation_percent": 100 * m.degradation,
            "linear_theory_degradation_percent": 100 * q.degradation,
            "verdict": _verdict(f"lr {lr:g}", m, q, p, tol),
        }
        verdicts.append(per_lr[f"{lr:g}"]["verdict"])
    th_s = np.asarray(th_sens.sensitivity, float)[:, 0]
    # the first checkpoint past the saddle, if the run leaves it, and whether Monte Carlo resolves S there
    i0 = int(np.argmax(row["past"])) if row["past"].any() else None
    resolved = i0 is not None and row["sm"][i0] > 2 * row["se_m"][i0]
    at_saddle = lambda x: None if i0 is None else float(x[i0])  # noqa: E731
    return {
        "teacher_linear_fraction_percent": 100 * (1 - float(lin_fit.noise) * d / 2 / float(
            0.5 * np.mean(np.sum(np.asarray(data_pre.y, float) ** 2, 1)))),
        "final_loss": float(row["loss"][-1]), "final_loss_linear_theory": float(np.asarray(th.loss)[-1]),
        "half_time_ratio_mode8_to_mode1": float(half[k - 1] / half[0]),
        "half_time_ratio_mode8_to_mode1_linear_theory": float(half_th[k - 1] / half_th[0]),
        # S(last) / S(first): only where Monte Carlo resolves S(first) (above 2 standard errors); near the
        # saddle S is tiny and its ratio is noise (e.g. depth 3, tanh teacher: S(first) < 0)
        "sensitivity_growth": (float(row["sm"][-1] / row["sm"][0])
                               if row["sm"][0] > 2 * row["se_m"][0] else None),
        "sensitivity_growth_linear_theory": float(th_s[-1] / th_s[0]),
        # S(last) / S(t_saddle), t_saddle the first checkpoint past the saddle (the MLP's): the growth as
        # the later modes are learnt, progressive sensitivity; None where the run does not leave the
        # saddle or Monte Carlo does not resolve S there (above 2 standard errors)
        "past_saddle_t": at_saddle(t),
        "sensitivity_growth_past_saddle": float(row["sm"][-1] / row["sm"][i0]) if resolved else None,
        "sensitivity_growth_past_saddle_linear_theory": float(th_s[-1] / th_s[i0]) if resolved else None,
        "sensitivity_past_saddle_stderrs": at_saddle(row["sm"] / row["se_m"]),
        # the quantities the field reports per checkpoint: sharpness (top Hessian eigenvalue of the
        # pre-training loss) and the weight norm, at the saddle exit and at the end, MLP and linear theory
        "sharpness_past_saddle": at_saddle(row["sharpness"]), "sharpness_final": float(row["sharpness"][-1]),
        "sharpness_past_saddle_linear_theory": at_saddle(row["th_sharpness"]),
        "sharpness_final_linear_theory": float(row["th_sharpness"][-1]),
        "sharpness_final_ratio_to_linear_theory": float(row["sharpness"][-1] / row["th_sharpness"][-1]),
        "weight_norm_growth": float(row["norm"][-1] / row["norm"][0]),
        "weight_norm_growth_linear_theory": float(row["th_norm"][-1] / row["th_norm"][0]),
        "linearised_small_lr_error_percent": 100 * row["lin_small"],
        "hutchinson_within_stderr_percent": 100 * row["within"],
        "perturbation": {f"t_star_{name}": (c.t_star if c.is_turning_point else None) for name, c in pert.items()}
        | {"degradation_percent": 100 * pert["measured"].degradation,
           "linear_theory_error_percent": (100 * C.rel_diff(pert["linear_theory"].t_star, pert["measured"].t_star)
                                           if pert["measured"].is_turning_point
                                           and pert["linear_theory"].is_turning_point else None)},
        "per_lr": per_lr, "verdict": "; ".join(verdicts),
    }


def _plot(png, rows, lrs, summary):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter

    n, d = len(rows), summary["width"]
    with lp.style():
        # wider than a page: five panels a row, eight rows at full size (taller rows when there are few,
        # so that the figure legend below leaves the panels room)
        fig, axes = lp.subplots(n, 5, width=1.3 * lp.PAGE_WIDTH, aspect=0.62 * max(1.0, 4 / n), squeeze=False)
        gs = axes[0, 4].get_gridspec()
        for ax in axes[:, 4]:
            ax.remove()
        # the last column: (e)'s scatter over the top half of the rows (with two teachers, the first
        # teacher's: its x label then falls between them); below it one text panel with (e)'s legend on
        # top and the T* table at the bottom (with fewer than 4 rows, the legend stays in (e))
        n_e = max(1, n // 2)
        ex = fig.add_subplot(gs[:n_e, 4])
        tx = fig.add_subplot(gs[n_e:, 4]) if n > 1 else None
        lx = tx if n >= 4 else ex
        for i, row in enumerate(rows):
            ax, bx, cx, dx = axes[i, :4]
            t = row["t"]
            for j in SHOWN_MODES:
                if j < row["sv"].shape[1]:
                    col = lp.mode_color(j + 1)
                    lp.theory(ax, t, row["th_sv"][:, j], color=col, alpha=0.6)
                    lp.simulation(ax, t, row["sv"][:, j], color=col, markersize=2.2)
                    ax.axhline(row["teacher_sv"][j], color=col, lw=0.6, linestyle="--", zorder=0)
            ax.set_yscale("log")
            ax.set_ylim(1e-3, 2)
            ax.set_ylabel(row["label"], fontsize=6.5)
            lp.simulation(bx, t, row["sm"], yerr=row["se_m"], color="C0", markersize=2.2)
            lp.theory(bx, t, row["sh"], color="C0")
            lp.theory(bx, t, row["th_sens"], color="0.55", linestyle="--")
            bx.set_yscale("log")
            bx.set_ylim(0.3 * np.min(row["sm"][row["sm"] > 0]), 2 * np.max(row["sm"]))
            # (c) the perturbed loss L + S: Monte Carlo, Hutchinson (in units of the measured minimum),
            # the linear theory (in units of its own minimum)
            ref = np.min(row["pm"])
            lp.simulation(cx, t, row["pm"] / ref, yerr=row["se_m"] / ref, color="C0", markersize=2.2)
            lp.theory(cx, t, row["ph"] / ref, color="C0")
            lp.theory(cx, t, row["th_pert"] / np.min(row["th_pert"]), color="0.55", linestyle="--")
            s = summary["settings"][row["key"]]["perturbation"]
            lp.mark_turning_point(cx, measured=s["t_star_measured"], y_measured=1.0, predicted=s["t_star_hutchinson"],
                                  color="C0")
            cx.set_ylim(0.95, 2.0)
            # (d) the pre-training loss after fine-tuning
            pre = np.asarray(row["fr"].pretrain_loss_after, float)
            pl = np.asarray(row["pr"].pretrain_loss_after, float)
            pth = np.asarray(row["th_ft"].pretrain_loss_after, float)
            for r, lr in enumerate(lrs):
                col = lp.lr_color(lr)
                m = row["m_tp"].curve(r)
                ref = m.min_value
                lp.simulation(dx, t, pre[:, r] / ref, color=col, markersize=2.2)
                lp.theory(dx, t, pl[:, r] / ref, color=col)
                lp.theory(dx, t, pth[:, r] / np.nanmin(pth[:, r]), color=col, linestyle="--", alpha=0.5)
                if m.is_turning_point:
                    lp.mark_turning_point(dx, measured=m.t_star, y_measured=1.0, color=col)
                p = row["p_tp"].curve(r)
                if p.is_turning_point:
                    lp.mark_turning_point(dx, predicted=p.t_star, color=col)
            dx.set_ylim(0.95, 2.0)
            for a in (ax, bx, cx, dx):
                lp.time_axis(a, label=r"$t = \eta\,$steps" if i == n - 1 else "")
                if i < n - 1:
                    a.tick_params(labelbottom=False)
            if i == 0:
                ax.set_title("(a) singular values, best\nlinear map of the outputs", loc="left", fontsize=7)
                bx.set_title("(b) sensitivity to weight\n" + rf"noise, $\gamma$ = {summary['gamma']:g}",
                             loc="left", fontsize=7)
                cx.set_title("(c) perturbed loss $L + S$\n/ its minimum", loc="left", fontsize=7)
                dx.set_title("(d) pre-training loss after\nfine-tuning / its minimum", loc="left", fontsize=7)
        # (e) fine-tuning T* predicted vs measured, per setting (colour) and lr (open / filled) with a measured U-curve
        allt, set_cols = [], {}
        for i, row in enumerate(rows):
            col = set_cols.setdefault(_short(row["key"]), f"C{i % 10}")
            for r, lr in enumerate(lrs):
                m, p, q = row["m_tp"].curve(r), row["p_tp"].curve(r), row["th_tp"].curve(r)
                if not m.is_turning_point:
                    continue
                allt.append(m.t_star)
                for cur, marker in ((q, "o"), (p, "^")):
                    if cur.is_turning_point:
                        ex.plot(m.t_star, cur.t_star, marker=marker, color=col, linestyle="none", markersize=5,
                                markerfacecolor="none" if r == 0 else col)
                        allt.append(cur.t_star)
        if allt:
            lo_, hi = 0.5 * min(allt), 2.0 * max(allt)
            xs = np.geomspace(lo_, hi, 50)
            tol = summary["tolerance_percent"] / 100
            ex.plot(xs, xs, color="k", lw=0.8)
            ex.fill_between(xs, xs * (1 - tol), xs * (1 + tol), color="0.88", lw=0, zorder=0)
            ex.set(xlim=(lo_, hi), ylim=(lo_, hi))
        ex.set(xscale="log", yscale="log", xlabel=r"measured $T^*$ (MLP)", ylabel=r"predicted $T^*$")
        for axis in (ex.xaxis, ex.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ex.set_title(r"(e) fine-tuning $T^*$", loc="left", fontsize=7)
        lp.legend(lx, colors=set_cols, theory_label=None, sim_label=None,
                  loc="upper left", fontsize=5.5, extra=[
            ("linear theory", Line2D([], [], marker="o", color="0.3", markerfacecolor="none", linestyle="none")),
            ("linearised MLP", Line2D([], [], marker="^", color="0.3", markerfacecolor="none", linestyle="none")),
            (rf"open: $\eta$ {lrs[0]:g}, filled: {lrs[-1]:g}", Line2D([], [], marker="o", color="0.3",
                                                                    linestyle="none")),
            (rf"$\pm{summary['tolerance_percent']:g}\%$", Patch(color="0.88"))])
        if tx is not None:
            fmt = lambda v: "no U" if v is None else f"{v:.3g}"  # noqa: E731
            lines = [f"fine-tuning T* at lr {';   '.join(f'{lr:g}' for lr in lrs)}:",
                     "measured | linear theory | linearised"]
            for row in rows:
                per_lr = summary["settings"][row["key"]]["per_lr"].values()
                lines += [_short(row["key"]), "   " + ";   ".join(
                    " | ".join(fmt(v[k]) for k in ("t_star_measured", "t_star_linear_theory", "t_star_linearised"))
                    for v in per_lr)]
            tx.axis("off")
            tx.text(0.0, 0.0, "\n".join(lines), transform=tx.transAxes, va="bottom", ha="left", fontsize=5.5)
        lp.legend(fig, colors={**{f"mode {j + 1}": lp.mode_color(j + 1) for j in SHOWN_MODES if j < d},
                               **{rf"fine-tuning lr $\eta = {lr:g}$": lp.lr_color(lr) for lr in lrs}},
                  theory_label="line: (a) DeepLinear, same init and sample; (b, c) Hutchinson; (d) linearised MLP",
                  sim_label=r"marker: the MLP ((b, c) Monte Carlo $\mathbb{E}L(W+\gamma E) - L(W)$, $\mathbb{E}L(W+\gamma E)$)",
                  turning_point=True, measured_min=True, loc="outside lower center", ncol=4, fontsize=6.5, extra=[
                      ("dashed: (a) teacher's best linear map;\n(b, c, d) linear theory (DeepLinear)",
                       Line2D([], [], color="0.55", linestyle="--"))])
        lp.save(fig, png)


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
