"""F9 — does the pre-training schedule or optimiser change catastrophic overtraining?

Depth 2, widths 16, sigma_i = 1/i, balanced teacher-aligned init. Pre-training runs (markers):
full-batch GD with a constant rate, cosine decay and warmup-stable-decay (WSD), all reaching the
same final time; heavy-ball momentum, Adam and SAM at a constant rate; online SGD (batch 4, label
noise) with a constant rate and with cosine decay. Time is the cumulative learning rate
t = sum_k eta_k (``PretrainResult.t``). At every checkpoint: the sharpness (top Hessian eigenvalue,
``lo.theory.sharpness``), the exact expected loss after Gaussian weight perturbation
(``lo.theory.gaussian`` on the trained weights) and the pre-training loss after fine-tuning on a
shifted task (``lo.finetune``). Lines: gradient-flow theory (``lo.theory.gaussian`` on
``lo.theory.pretrain(..., method="flow")``, ``finetune_curve``, ``sharpness_from_spectrum``), which in t
is the same for every schedule; for momentum it is drawn at t/(1 - beta). Turning points and
degradation of measured and predicted results alike by ``lo.turning_point`` (seed mean for SGD).

Bottom row: (g, h) the same net at a peak lr of 0.9 and 1.1 times the stability edge of the
minimum, 2 / (L sigma_1^(2 - 2/L)) = 1, at a constant lr (lines: the exact GD map of the modes,
``lo.theory.pretrain``/``lo.theory.finetune``) and under cosine decay; checkpoints on even steps,
because above the edge constant-lr GD ends on a period-2 orbit (its other phase is annotated).
(i) GD and SAM from the balanced init and from an unbalanced Gaussian init (layer scales 1 and
0.05): forgetting, with the final sharpness written on each bar.

Size: one figure of nine panels whose eight pre-training settings share one batched sharpness and
perturbation call; the near-edge and init rows reuse its task, shift and fine-tuning budget.

Run: ``python experiments/F9_schedule_optimizer.py [--quick] [--out DIR] [--set sam_rho=0.02]``.
"""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64
from linoverfit.validation import cast_objective

NUMBER, NAME = "F9", "schedule_optimizer"
TITLE = "pre-training schedule and optimiser: sharpness, perturbation and fine-tuning U-curves in flow time"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    width=16,              # d_in = hidden = d_out (depth 2)
    alpha=1.0,             # teacher spectrum sigma_i = i**-alpha
    init_scale=0.05,       # aligned init: s0 = scale^2
    t_final=100.0,         # final flow time of every run (all 16 modes learnt); constant lr = t_final / steps
    steps=8192,            # cosine / WSD peaks chosen so that every schedule ends at t_final
    checkpoints=32,
    first_step=8,
    warmup=0.05,           # WSD: warmup fraction; decay fraction below
    wsd_decay=0.2,
    momentum=0.9,          # heavy ball: lr * (1 - beta) per step, so the flow time t/(1-beta) matches GD
    adam_lr=0.002,
    sam_rho=0.05,          # SAM radius (below the weight norm at init, ~0.3: a larger one stalls at the saddle W=0)
    gamma=0.1,             # perturbation scale: modes below gamma^2 (d_in + d_out) = 0.32 do not pay
    ft_shift=0.3,          # additive shift of the fine-tuning task
    ft_lr=0.02,
    ft_steps=100,          # fine-tuning flow time 2: a clear U-curve (theory: T* ~ 6, degradation ~ 60%)
    sgd_batch=4,           # online SGD
    sgd_noise=0.1,         # label-noise variance of the online stream
    sgd_seeds=4,
    sharpness_iters=24,    # Lanczos steps (the top eigenvalue converges long before)
    edge_fractions=(0.9, 1.1),  # (g, h): peak lr as a fraction of the stability edge 2 / (2 sigma_1) of the minimum
    edge_steps=2000,       # steps of the near-edge runs (t ~ 1000-2000: every mode learnt)
    edge_checkpoints=40,   # log-spaced EVEN steps: above the edge the weights alternate on a period-2 orbit
    unbalanced_scales=(1.0, 0.05),  # (i): Gaussian init, entries N(0, c_l^2 / d) for layer 1 and 2
    sam_rhos=(0.05, 0.4),  # (i): SAM radii from the unbalanced init
    draws=5,               # random fine-tuning shifts behind the headline fine-tuning numbers (median, range)
)
QUICK = dict(width=8, t_final=40.0, steps=4096, checkpoints=24, sgd_seeds=2, sharpness_iters=16, edge_steps=400,
             edge_checkpoints=16, draws=1)
# ----------------------------------------------------------------------------- end of config



def _wsd(peak, n, warmup, decay):
    """Warmup-stable-decay: linear warmup, constant, linear decay to 0 over the last ``decay`` fraction."""
    w, d = max(int(warmup * n), 1), max(int(decay * n), 1)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, w), optax.constant_schedule(peak),
                                 optax.linear_schedule(peak, 0.0, d)], [w, n - d])


def _mean_lr(schedule, n):
    return float(np.mean(np.asarray(schedule(jnp.arange(n)), np.float64)))


def settings(cfg):
    """Name -> dict(lr, optimizer, online, time_factor, family)."""
    n = cfg["steps"]
    lr = cfg["t_final"] / n
    cos = optax.cosine_decay_schedule(1.0, n)
    cos = optax.cosine_decay_schedule(lr / _mean_lr(cos, n), n)
    wsd = _wsd(1.0, n, cfg["warmup"], cfg["wsd_decay"])
    wsd = _wsd(lr / _mean_lr(wsd, n), n, cfg["warmup"], cfg["wsd_decay"])
    beta = cfg["momentum"]
    # the constant rate as a schedule: the three GD runs (and the two SGD runs) share one compiled program
    const = optax.constant_schedule(lr)
    return {
        "GD constant": dict(lr=const, optimizer=None, family="schedule"),
        "GD cosine": dict(lr=cos, optimizer=None, family="schedule"),
        "GD WSD": dict(lr=wsd, optimizer=None, family="schedule"),
        "momentum": dict(lr=lr * (1 - beta), optimizer=lo.optimizers.Momentum(beta), family="optimizer",
                         time_factor=1 / (1 - beta)),
        "Adam": dict(lr=cfg["adam_lr"], optimizer=lo.optimizers.Adam(), family="optimizer"),
        "SAM": dict(lr=lr, optimizer=lo.optimizers.SAM(cfg["sam_rho"]), family="optimizer"),
        "SGD constant": dict(lr=const, optimizer=None, family="noise", online=True),
        "SGD cosine": dict(lr=cos, optimizer=None, family="noise", online=True),
    }


STYLE = {"GD constant": ("k", "o"), "GD cosine": ("tab:blue", "s"), "GD WSD": ("tab:green", "^"),
         "momentum": ("tab:purple", "D"), "Adam": ("tab:orange", "v"), "SAM": ("tab:red", "P"),
         "SGD constant": ("0.45", "o"), "SGD cosine": ("tab:cyan", "s")}


def _edge_runs(cfg, net, task, ft, W0, runs: dict) -> dict:
    """(g, h): GD at a constant lr and under cosine decay from the same peak, at fractions of the
    stability edge of the minimum, eta_edge = 2 / lambda_min with lambda_min = L sigma_1^(2 - 2/L) the
    sharpness of the balanced global minimum (the flattest one). Sharpness and forgetting (pre-training
    loss after fine-tuning minus before) at every checkpoint; for the constant lr also predicted, by the
    exact GD map of the modes (``lo.theory.pretrain``) and ``lo.theory.finetune`` on it."""
    L, sigma1 = net.depth, float(np.max(np.asarray(task.spectrum)))
    edge_lr = 2.0 / (L * sigma1 ** (2 - 2 / L))
    n = int(cfg["edge_steps"])
    ck = 2 * lo.log_checkpoints(n // 2, int(cfg["edge_checkpoints"]), first=4)  # one phase of a period-2 orbit
    out = {}
    for frac in cfg["edge_fractions"]:
        peak = float(frac) * edge_lr
        for name, lr in (("constant", peak), ("cosine", optax.cosine_decay_schedule(peak, n))):
            run_ = lo.pretrain(net, W0, task, lr=lr, checkpoints=ck)
            fr = lo.finetune(net, run_, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)
            r = dict(frac=float(frac), peak=peak, edge_lr=edge_lr, t=np.asarray(run_.t, float),
                     loss=np.asarray(run_.loss, float),
                     sharp=np.asarray(lo.theory.sharpness(run_.weights, task, iters=cfg["sharpness_iters"]), float),
                     forget=np.asarray(fr.forgetting, float)[:, 0])
            if name == "constant":
                with warnings.catch_warnings():  # past the edge on purpose: the exact map still describes GD
                    warnings.simplefilter("ignore", lo.theory.PastEdgeWarning)
                    th = lo.theory.pretrain(net, W0, task, lr=peak, checkpoints=ck)
                    fth = lo.theory.finetune(net, th, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)
                    last2 = lo.theory.pretrain(net, W0, task, lr=peak, checkpoints=[n - 1, n])
                r["orbit_sharpness"] = [float(x) for x in lo.theory.sharpness(last2.weights, task, iters=cfg["sharpness_iters"])]
                r.update(t_th=np.asarray(th.t, float), loss_th=np.asarray(th.loss, float),
                         sharp_th=np.asarray(lo.theory.sharpness(th.weights, task, iters=cfg["sharpness_iters"]), float),
                         forget_th=np.asarray(fth.forgetting, float)[:, 0])
            out[f"{frac:g}_{name}"] = r
            runs[f"{frac:g}_{name}"] = run_
    return out


def _sam_runs(cfg, net, task, ft, W0, runs: dict) -> dict:
    """(i): GD and SAM from the balanced aligned init ``W0`` and from an unbalanced Gaussian init
    (layer l entries N(0, c_l^2 / d)), each pre-trained to ``t_final``: final sharpness and forgetting."""
    d, n = cfg["width"], int(cfg["steps"])
    Wu = tuple(c / np.sqrt(d) * w for c, w in zip(cfg["unbalanced_scales"], net.init(jax.random.key(3), scale=1.0)))
    out = {}
    for init, W in (("balanced", W0), ("unbalanced", Wu)):
        # from the small balanced init a large radius never leaves the saddle W = 0: only the smallest one there
        rhos = cfg["sam_rhos"] if init == "unbalanced" else cfg["sam_rhos"][:1]
        for opt, optimizer in (("GD", None), *((f"SAM {r:g}", lo.optimizers.SAM(r)) for r in rhos)):
            run_ = lo.pretrain(net, W, task, lr=cfg["t_final"] / n, checkpoints=[n], optimizer=optimizer)
            fr = lo.finetune(net, run_, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)
            out[f"{init}, {opt}"] = {
                "init": init, "optimizer": opt, "final_loss": float(np.asarray(run_.loss)[-1]),
                "sharpness": float(np.asarray(lo.theory.sharpness(run_.weights, task, iters=cfg["sharpness_iters"]))[-1]),
                "forgetting": float(np.asarray(fr.forgetting)[-1, 0])}
            runs[f"{init}, {opt}"] = run_
    return out


def _draws(cfg, net, task, runs, k_shift) -> dict:
    """The headline fine-tuning numbers over ``cfg["draws"]`` random fine-tuning shifts (draw 0: the
    figure's), re-fine-tuning the same pre-trained runs: GD's and SAM's fine-tuning degradation, the
    extra forgetting of decay above the edge, of an unbalanced init, and SAM's cut there."""
    rho_hi, frac_hi = max(cfg["sam_rhos"]), max(cfg["edge_fractions"])
    rows = {k: [] for k in ("GD constant", "SAM")}
    decay, unbalanced, cut = [], [], []
    for key in C.draw_keys(k_shift, int(cfg["draws"])):
        ft = lo.tasks.shifted(task, kind="additive", size=cfg["ft_shift"], key=key, scale="absolute")

        def fine_tune(name):
            return lo.finetune(net, runs[name], ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)

        for name in rows:
            u = lo.turning_point(fine_tune(name), min_rise=C.DEPTH, seeds="mean").curve(0)
            rows[name].append(100 * u.degradation)
        last = {k: float(np.asarray(fine_tune(k).forgetting)[-1, 0])
                for k in (f"{frac_hi:g}_constant", f"{frac_hi:g}_cosine", "balanced, GD", "unbalanced, GD",
                          f"unbalanced, SAM {rho_hi:g}")}
        decay.append(100 * (last[f"{frac_hi:g}_cosine"] / last[f"{frac_hi:g}_constant"] - 1))
        unbalanced.append(100 * (last["unbalanced, GD"] / last["balanced, GD"] - 1))
        cut.append(100 * (1 - last[f"unbalanced, SAM {rho_hi:g}"] / last["unbalanced, GD"]))
    return {"n": int(cfg["draws"]), "what": "additive fine-tuning shift, one key per draw (draw 0: the figure's)",
            "finetune_degradation_percent": {k: C.spread(v) for k, v in rows.items()},
            "decay_vs_constant_forgetting_percent": C.spread(decay),
            "unbalanced_vs_balanced_forgetting_percent": C.spread(unbalanced),
            "sam_cut_unbalanced_percent": C.spread(cut)}


def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F9_schedule_optimizer.png`` / ``.npz`` in ``out_dir``; return the headline numbers."""
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    setts = settings(cfg)
    stages = C.Stages(len(setts) + 5, progress)
    k_task, k_shift, k_sgd = jax.random.split(jax.random.key(seed), 3)
    d = cfg["width"]
    task = lo.tasks.power_law(d, d, alpha=cfg["alpha"], key=k_task)
    ft = lo.tasks.shifted(task, kind="additive", size=cfg["ft_shift"], key=k_shift, scale="absolute")
    net = lo.DeepLinear((d, d, d))
    s0 = cfg["init_scale"] ** 2
    W0 = net.init(jax.random.key(0), scale=cfg["init_scale"], scheme="aligned", task=task)
    ck = lo.log_checkpoints(cfg["steps"], cfg["checkpoints"], first=cfg["first_step"])
    noisy = task.with_(noise=cfg["sgd_noise"])
    S = cfg["sgd_seeds"]
    W0_seeds = tuple(jnp.broadcast_to(w, (S,) + w.shape) for w in W0)

    res, data, runs = {}, {}, {}  # runs: every pre-training result by name, for the random-shift draws
    for name, st in setts.items():
        with stages(name):
            if st.get("online"):
                run_ = lo.pretrain(net, W0_seeds, noisy, lr=st["lr"], checkpoints=ck, batch_size=cfg["sgd_batch"],
                                   online=True, key=k_sgd)
                weights = run_.weights  # (C, S, ...)
            else:
                run_ = lo.pretrain(net, W0, task, lr=st["lr"], checkpoints=ck, optimizer=st["optimizer"])
                weights = run_.weights
            fr = lo.finetune(net, run_, ft, lr=cfg["ft_lr"], steps=cfg["ft_steps"], pretrain_task=task)
            ft_after = np.asarray(fr.pretrain_loss_after, float)[:, 0]
            ft_after = ft_after.mean(-1) if ft_after.ndim == 2 else ft_after  # seeds averaged
            lead = np.shape(weights[0])[:-2]
            res[name] = dict(t=run_.t, ft=ft_after, lead=lead, run=run_,
                             fu=lo.turning_point(fr, min_rise=C.DEPTH, seeds="mean").curve(0),
                             flat=tuple(np.reshape(w, (-1,) + w.shape[-2:]) for w in weights))

    with stages("sharpness and perturbed loss at every checkpoint"):
        # the sharpness of every checkpoint (and seed) of every run in one call: one compiled program
        stacked = tuple(np.concatenate([r["flat"][layer] for r in res.values()]) for layer in range(2))
        sharp_all = np.asarray(lo.theory.sharpness(stacked, task, iters=cfg["sharpness_iters"]), float)
        start = 0
        for name, r in res.items():
            n = int(np.prod(r["lead"]))
            sharp = sharp_all[start:start + n].reshape(r["lead"])
            start += n
            # exact E L(W + gamma E) on the original (noise-free) task, and its turning point (seed mean)
            runs[name] = r.pop("run")
            meas = lo.theory.gaussian(net, runs[name], task, gamma=cfg["gamma"])
            pert = np.asarray(meas.perturbed_loss, float)[:, 0]
            if pert.ndim == 2:  # seeds averaged
                pert, sharp = pert.mean(1), sharp.mean(1)
            t = r.pop("t")
            r.update(t=t, pert=pert, sharp=sharp, pu=lo.turning_point(meas, min_rise=C.DEPTH, seeds="mean").curve(0))
            del r["flat"]
            data.update({f"{name}_t": t, f"{name}_perturbed_loss": pert, f"{name}_sharpness": sharp,
                         f"{name}_pretrain_loss_after_ft": r["ft"]})

    with stages("theory"):
        # the flow of the same start through the simulation's calls (lo.theory.pretrain(method="flow"),
        # lo.theory.gaussian) on a dense step grid at the constant rate, and the function-space flow of
        # fine-tuning (finetune_curve); both results judged by lo.turning_point like the measured ones
        lr_c = cfg["t_final"] / cfg["steps"]
        dense = np.union1d(ck, np.round(np.geomspace(ck[0], ck[-1], 200)).astype(int))
        with enable_x64(True):
            flow = lo.theory.pretrain(net, tuple(np.asarray(w, np.float64) for w in W0), cast_objective(task, np.float64),
                                      lr=lr_c, checkpoints=dense, method="flow")
            th_g = lo.theory.gaussian(net, flow, gamma=cfg["gamma"])
        t_th = np.asarray(th_g.t, float)
        th_pert = np.asarray(th_g.perturbed_loss, float)[:, 0]
        pred_ft = lo.theory.curves.finetune_curve(task, ft, t_th, widths=net, s0=s0, lr=cfg["ft_lr"], steps=cfg["ft_steps"])
        th_ft = np.asarray(pred_ft.pretrain_loss_after, float)[:, 0]
        sig = np.sort(np.asarray(task.spectrum, float))[::-1]
        s_t = lo.theory.modes.mode_trajectory(sig, t_th, s0, depth=2)
        th_sharp = np.asarray(lo.theory.curvature.sharpness_from_spectrum(s_t, task, net), float)
        th_pu = lo.turning_point(th_g, min_rise=C.DEPTH).curve(0)
        th_fu = lo.turning_point(pred_ft, min_rise=C.DEPTH).curve(0)
        data.update(t_theory=t_th, perturbed_loss_theory=th_pert, pretrain_loss_after_ft_theory=th_ft,
                    sharpness_theory=th_sharp)

    with stages("at and above the stability edge; SAM from an unbalanced init"):
        edge = _edge_runs(cfg, net, task, ft, W0, runs)
        sam_rows = _sam_runs(cfg, net, task, ft, W0, runs)
        for key, r in edge.items():
            data.update({f"edge{key}_t": r["t"], f"edge{key}_sharpness": r["sharp"], f"edge{key}_forgetting": r["forget"]})
            if "t_th" in r:
                data.update({f"edge{key}_t_theory": r["t_th"], f"edge{key}_sharpness_theory": r["sharp_th"],
                             f"edge{key}_forgetting_theory": r["forget_th"]})
        data.update(sam_sharpness=np.array([r["sharpness"] for r in sam_rows.values()]),
                    sam_forgetting=np.array([r["forgetting"] for r in sam_rows.values()]))

    # ---------------------------------------------------------------- summary
    base = res["GD constant"]
    per = {}
    for name, r in res.items():
        i_star = r["pu"].index
        f = setts[name].get("time_factor", 1.0)
        per[name] = {
            "t_star": r["pu"].t_star,
            "t_star_flow_time": r["pu"].t_star * f,
            "is_turning_point": r["pu"].is_turning_point,
            "degradation_percent": 100 * r["pu"].degradation,
            "sharpness_at_t_star": float(r["sharp"][i_star]),
            "final_sharpness": float(r["sharp"][-1]),
            "finetune_t_star": r["fu"].t_star,
            "finetune_degradation_percent": 100 * r["fu"].degradation,
            "finetune_is_turning_point": r["fu"].is_turning_point,
            "final_perturbed_vs_gd_constant_percent": 100 * (r["pert"][-1] / base["pert"][-1] - 1),
            "final_forgetting_vs_gd_constant_percent": 100 * (r["ft"][-1] / base["ft"][-1] - 1),
        }
    # flow-time claim: every GD schedule follows the same flow curve in t, compared at its own checkpoints
    # (no interpolation between the schedules' different t grids, whose error on a coarse grid is larger)
    agree = {}
    for name in ("GD constant", "GD cosine", "GD WSD"):
        r = res[name]
        flow = np.asarray(lo.theory.curves.perturbed_loss_curve(task, r["t"], cfg["gamma"], widths=net, s0=s0), float)[:, 0]
        agree[name] = float(np.max(np.abs(r["pert"] / flow - 1)))
    th_gap = agree.pop("GD constant")
    sgd_c, sgd_d = per["SGD constant"], per["SGD cosine"]
    sam, gd = per["SAM"], per["GD constant"]
    sam_cut = 100 * (1 - sam["finetune_degradation_percent"] / gd["finetune_degradation_percent"]) \
        if gd["finetune_degradation_percent"] else float("nan")
    edge_sum, edge_checks = {}, []
    for frac in cfg["edge_fractions"]:
        rc, rd = edge[f"{frac:g}_constant"], edge[f"{frac:g}_cosine"]
        more = 100 * (rd["forget"][-1] / rc["forget"][-1] - 1)
        gap = float(max(np.max(np.abs(rc["forget_th"] / rc["forget"] - 1)), np.max(np.abs(rc["sharp_th"] / rc["sharp"] - 1))))
        edge_sum[f"{frac:g}"] = {
            "peak_lr": rc["peak"], "edge_lr": rc["edge_lr"], "peak_lr_over_edge": float(frac),
            "constant": {"final_loss": rc["loss"][-1], "final_sharpness": rc["sharp"][-1],
                         "orbit_sharpness": rc["orbit_sharpness"], "final_forgetting": rc["forget"][-1],
                         "final_loss_after_finetune": rc["loss"][-1] + rc["forget"][-1]},
            "cosine": {"final_loss": rd["loss"][-1], "final_sharpness": rd["sharp"][-1],
                       "final_forgetting": rd["forget"][-1],
                       "final_loss_after_finetune": rd["loss"][-1] + rd["forget"][-1]},
            "decay_vs_constant_forgetting_percent": more,
            "theory_vs_simulation_constant_max_rel": gap}
        # the exact GD map of the modes vs float32 GD: round-off, not amplified on a stable fixed point or an
        # attracting period-2 orbit; 1e-3 still catches a wrong orbit (its sharpness differs by a factor 2)
        edge_checks.append(C.check(f"{frac:g} x edge, constant lr: exact GD map vs simulation (sharpness and "
                                   "forgetting), max relative gap", gap, at_most=1e-3))
        if frac < 1:
            edge_checks.append(C.check(f"{frac:g} x edge: |forgetting cosine / constant - 1| (the schedule changes "
                                       "nothing below the edge)", abs(more) / 100, at_most=0.01))
        else:
            edge_checks.append(C.check(f"{frac:g} x edge: decay forgets more than the constant lr on its period-2 orbit",
                                       bool(more > 0), expected=True))
    e_lo, e_hi = (edge_sum[f"{f:g}"] for f in (min(cfg["edge_fractions"]), max(cfg["edge_fractions"])))
    bal, unb = sam_rows["balanced, GD"], sam_rows["unbalanced, GD"]
    rho_hi = max(cfg["sam_rhos"])
    sam_unb = sam_rows[f"unbalanced, SAM {rho_hi:g}"]
    with stages(f"{cfg['draws']} random shifts: the headline fine-tuning numbers"):
        draws = _draws(cfg, net, task, runs, k_shift)
    edge_checks.append(C.check("draw 0 reproduces the headline fine-tuning degradations (GD constant, SAM)", max(
        abs(draws["finetune_degradation_percent"][k]["values"][0] - per[k]["finetune_degradation_percent"])
        for k in ("GD constant", "SAM")), at_most=1e-9))
    sam_sum = {"rows": sam_rows,
               "unbalanced_vs_balanced_forgetting_percent": 100 * (unb["forgetting"] / bal["forgetting"] - 1),
               "sam_cut_unbalanced_percent": {f"{r:g}": 100 * (1 - sam_rows[f"unbalanced, SAM {r:g}"]["forgetting"]
                                                             / unb["forgetting"]) for r in cfg["sam_rhos"]}}
    verdict = (
        f"Full-batch GD: constant, cosine and WSD schedules give the same perturbation U-curve in t = cumulative lr, "
        f"the gradient-flow curve (max deviation at the checkpoints: constant {100 * th_gap:.2g}%, cosine "
        f"{100 * agree['GD cosine']:.2g}%, WSD {100 * agree['GD WSD']:.2g}%), "
        f"and T* and degradation do not depend on the schedule (degradation {gd['degradation_percent']:.3g}%, "
        f"{per['GD cosine']['degradation_percent']:.3g}%, {per['GD WSD']['degradation_percent']:.3g}%). "
        f"Sharpness is a function of the weights, hence of t, not of the decay, in this regime (every lr far below "
        f"the stability edge 2/sharpness). At {e_lo['peak_lr_over_edge']:g} x the edge of the minimum the schedule "
        f"still changes nothing (forgetting, cosine vs constant: {e_lo['decay_vs_constant_forgetting_percent']:+.2g}%). "
        f"Above it ({e_hi['peak_lr_over_edge']:g} x) constant-lr GD cannot settle in the minimum (sharpness "
        f"{e_hi['cosine']['final_sharpness']:.3g}) and sits on a period-2 orbit (sharpness alternating "
        f"{e_hi['constant']['orbit_sharpness'][0]:.3g} / {e_hi['constant']['orbit_sharpness'][1]:.3g}, loss "
        f"{e_hi['constant']['final_loss']:.2g}); cosine decay lets it settle and it then forgets "
        f"{e_hi['decay_vs_constant_forgetting_percent']:.3g}% more ({e_hi['cosine']['final_forgetting']:.3g} vs "
        f"{e_hi['constant']['final_forgetting']:.3g}), the sign Rofin, Varre & Flammarion (2026, arXiv:2604.13627) "
        f"report for language models; the loss after fine-tuning is the same ({e_hi['cosine']['final_loss_after_finetune']:.4g} "
        f"vs {e_hi['constant']['final_loss_after_finetune']:.4g}): the orbit started that much higher. What the linear model cannot say: how much sharpness decay adds at scale (here "
        f"sharpness never exceeds that of the balanced minimum, {e_hi['cosine']['final_sharpness']:.3g}; they measure "
        f"a KL proxy, not the Hessian). "
        f"Momentum follows the flow in t/(1-beta); Adam learns all modes at nearly the same time and moves T* "
        f"(T* {per['Adam']['t_star']:.3g} in its own lr units vs {gd['t_star']:.3g}); SAM (rho={cfg['sam_rho']:g}) "
        f"{'lowers' if sam_cut > 0 else 'raises'} the fine-tuning degradation by {abs(sam_cut):.3g}% of GD's "
        f"({sam['finetune_degradation_percent']:.3g}% vs {gd['finetune_degradation_percent']:.3g}%) from this "
        f"balanced small init: every global minimum has end-to-end map A and GD from a balanced init already "
        f"reaches the flattest (balanced) one. Watts, Li, Goyal, Springer & Raghunathan (2026, arXiv:2605.02105) "
        f"measure up to an 80% cut with SAM pre-training of language models. From an unbalanced init (layer scales "
        f"{cfg['unbalanced_scales'][0]:g}, {cfg['unbalanced_scales'][1]:g}) GD ends sharper ({unb['sharpness']:.3g} vs "
        f"{bal['sharpness']:.3g}) and forgets {sam_sum['unbalanced_vs_balanced_forgetting_percent']:.3g}% more; SAM "
        f"(rho {rho_hi:g}) brings the sharpness back to {sam_unb['sharpness']:.3g} but cuts that forgetting by only "
        f"{sam_sum['sam_cut_unbalanced_percent'][f'{rho_hi:g}']:.2g}%: sharpness is not what sets the forgetting here. "
        f"Online SGD (batch {cfg['sgd_batch']}, label noise {cfg['sgd_noise']:g}): degradation "
        f"{sgd_c['degradation_percent']:.3g}% at a constant rate, {sgd_d['degradation_percent']:.3g}% with cosine decay."
    )
    summary = {
        "width": d, "lr": cfg["t_final"] / cfg["steps"], "t_final": cfg["t_final"], "steps": cfg["steps"], "gamma": cfg["gamma"], "momentum": cfg["momentum"],
        "adam_lr": cfg["adam_lr"], "sam_rho": cfg["sam_rho"], "ft_lr": cfg["ft_lr"], "ft_steps": cfg["ft_steps"],
        "ft_shift": cfg["ft_shift"], "sgd_batch": cfg["sgd_batch"], "sgd_noise": cfg["sgd_noise"],
        "settings": per,
        # the cited findings this figure tests (numbers quoted from the papers, not measured here)
        "cited": {"watts_2026_sam_forgetting_cut_up_to_percent": 80},
        "theory": {"t_star": th_pu.t_star, "degradation_percent": 100 * th_pu.degradation,
                   "finetune_t_star": th_fu.t_star, "finetune_degradation_percent": 100 * th_fu.degradation},
        # max |simulated / flow theory - 1| of the perturbed loss at each schedule's own checkpoints
        "schedule_vs_flow_percent": {k: 100 * v for k, v in agree.items()},
        "theory_vs_gd_constant_percent": 100 * th_gap,
        "sam_finetune_degradation_cut_percent": sam_cut,
        "stability_edge": edge_sum,
        "sam_inits": sam_sum,
        "draws": draws,
        # discretisation: GD at peak rates <= 0.03 moves each mode's time by O(eta sigma_1 log(sigma/s0)) ~ 1-3%,
        # which moves the perturbed loss by at most that where a mode is mid-transition: 3% / 2% as tolerances
        "checks": [C.check("GD cosine/WSD vs the flow curve in t, max relative gap", max(agree.values()), at_most=0.03),
                   C.check("gradient-flow theory vs GD constant, max relative gap", th_gap, at_most=0.02),
                   C.check("GD constant has a perturbation turning point", gd["is_turning_point"], expected=True),
                   *edge_checks],
        "condition": "depth 2, balanced aligned init, population loss (full batch) unless marked SGD; "
                     "t = cumulative learning rate",
        "verdict": verdict,
    }

    # ---------------------------------------------------------------- figure
    with stages("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        with lp.style():
            fig, axes = lp.subplots(3, 3, width="page", aspect=0.8, squeeze=False)
            (a, b, c), (e, f_, g), (h1, h2, h3) = axes

            def mark(ax, name, y, x=None, every=1):
                col, m = STYLE[name]
                r = res[name]
                x = r["t"] * setts[name].get("time_factor", 1.0) if x is None else x
                lp.simulation(ax, x[::every], y[::every], color=col, marker=m, markersize=3)

            # (a) sharpness
            lp.theory(a, t_th, th_sharp, color="k")
            for name in res:
                mark(a, name, res[name]["sharp"])
            a.set(ylabel=r"sharpness $\lambda_{max}(\nabla^2 L)$")
            a.set_title("(a) sharpness at every checkpoint", loc="left")
            # (b) GD schedules, perturbation
            ref = th_pu.min_value
            lp.theory(b, t_th, th_pert / ref, color="k")
            for name in ("GD constant", "GD cosine", "GD WSD"):
                mark(b, name, res[name]["pert"] / ref)
            lp.mark_turning_point(b, predicted=th_pu.t_star)
            b.set(ylim=(0.9, 2.5), ylabel="$\\mathbb{E}L(W+\\gamma E)$\n/ theory min")
            b.set_title(r"(b) GD schedules: same curve in $t$", loc="left")
            # (c) optimisers, perturbation
            lp.theory(c, t_th, th_pert / ref, color="k")
            for name in ("GD constant", "momentum", "Adam", "SAM"):
                mark(c, name, res[name]["pert"] / ref)
            c.set(ylim=(0.9, 2.5))
            c.set_title("(c) optimisers (momentum at $t/(1-\\beta)$;\nSAM lags: its ascent step slows the escape from $W=0$)",
                        loc="left", fontsize=7)
            # (e) fine-tuning U-curves
            ref_f = th_fu.min_value
            lp.theory(e, t_th, th_ft / ref_f, color="k")
            for name in ("GD constant", "GD cosine", "GD WSD", "momentum", "Adam", "SAM"):
                mark(e, name, res[name]["ft"] / ref_f)
            lp.mark_turning_point(e, predicted=th_fu.t_star)
            e.set(ylim=(0.8, 3.0), ylabel="pre-training loss after\nfine-tuning / theory min")
            e.set_title("(d) fine-tuning U-curves (SAM above the line\nbefore T*: the same lag)", loc="left", fontsize=7)
            # (f) minibatch noise
            lp.theory(f_, t_th, th_pert / ref, color="k")
            for name in ("SGD constant", "SGD cosine"):
                mark(f_, name, res[name]["pert"] / ref)
            f_.set(ylim=(0.9, 2.5))
            f_.set_title(f"(e) online SGD, batch {cfg['sgd_batch']}, noise {cfg['sgd_noise']:g}", loc="left")
            for ax in (a, b, c, e, f_):
                lp.time_axis(ax, label=r"$t = \sum_k \eta_k$")
                ax.set_xlim(base["t"][0], base["t"][-1] * 1.1)
            # (g) degradation bars
            names = list(res)
            x = np.arange(len(names))
            g.bar(x - 0.2, [per[n]["degradation_percent"] for n in names], 0.4, color=[STYLE[n][0] for n in names],
                  label="perturbation")
            g.bar(x + 0.2, [per[n]["finetune_degradation_percent"] for n in names], 0.4,
                  color=[STYLE[n][0] for n in names], alpha=0.45, hatch="//", label="fine-tuning")
            g.axhline(100 * th_pu.degradation, color="k", lw=1.0)
            g.axhline(100 * th_fu.degradation, color="k", lw=1.0, ls="--")
            g.set_xticks(x, names, rotation=60, ha="right", fontsize=6)
            g.set_ylabel("degradation (%):\nlast vs min")
            g.set_title("(f) degradation (lines: GD flow theory)", loc="left")
            from matplotlib.lines import Line2D
            from matplotlib.patches import Patch

            # headroom above the tallest bar and line, so that the legend sits clear of both
            top = max([per[n]["degradation_percent"] for n in names] + [per[n]["finetune_degradation_percent"]
                      for n in names] + [100 * th_pu.degradation, 100 * th_fu.degradation])
            g.set_ylim(0, 1.8 * top)
            g.legend(handles=[Patch(facecolor="0.45", label="perturbation"),
                              Patch(facecolor="0.45", alpha=0.45, hatch="//", label="fine-tuning"),
                              Line2D([], [], color="k", lw=1.0, label="theory, perturbation"),
                              Line2D([], [], color="k", lw=1.0, ls="--", label="theory, fine-tuning")],
                     fontsize=6, loc="upper left", ncol=2, columnspacing=1.0, handlelength=1.8)

            # (g, h) at and above the stability edge: constant lr (markers, exact GD map as lines) vs cosine decay
            edge_cols = {f: c for f, c in zip(cfg["edge_fractions"], ("tab:blue", "tab:red", "tab:green"))}
            for key, r in edge.items():
                col = edge_cols[r["frac"]]
                const = key.endswith("constant")
                kw = dict(color=col, marker="o" if const else "s", markersize=3, linestyle="none",
                          markerfacecolor="none" if const else col)
                h1.plot(r["t"], r["sharp"], **kw)
                h2.plot(r["t"], r["forget"], **kw)
                if const:
                    lp.theory(h1, r["t_th"], r["sharp_th"], color=col)
                    lp.theory(h2, r["t_th"], r["forget_th"], color=col)
                    h1.axhline(2 / r["peak"], color=col, ls=":", lw=1.0)  # the edge of this lr: 2 / eta
            for ax in (h1, h2):
                lp.time_axis(ax, label=r"$t = \sum_k \eta_k$")
            h1.set(ylabel=r"sharpness $\lambda_{max}$", ylim=(0.6, 2.6))
            h1.set_title("(g) sharpness near the edge", loc="left")
            h2.set(ylabel="forgetting (pre-training\nloss after - before)")
            h2.set_title("(h) forgetting near the edge", loc="left")
            edge_handles = [(f"{f:g} x edge, constant lr (line: exact GD map)",
                             Line2D([], [], color=edge_cols[f], marker="o", markerfacecolor="none", lw=1.2))
                            for f in cfg["edge_fractions"]]
            edge_handles += [(f"{f:g} x edge, cosine decay", Line2D([], [], color=edge_cols[f], marker="s",
                                                                   linestyle="none")) for f in cfg["edge_fractions"]]
            edge_handles.append((r"the edge of the constant lr, $2/\eta$", Line2D([], [], color="0.4", ls=":", lw=1.0)))
            for key, r in edge.items():  # the checkpoints are even steps: say where the odd ones are
                if key.endswith("constant") and r["orbit_sharpness"][0] != r["orbit_sharpness"][1]:
                    h1.annotate(f"period-2 orbit: even steps {r['orbit_sharpness'][1]:.2f},\nodd steps "
                                f"{r['orbit_sharpness'][0]:.2f}", (r["t"][len(r["t"]) // 2], r["sharp"][len(r["t"]) // 2]),
                                xytext=(0.03, 0.05), textcoords="axes fraction", fontsize=5.5, color=edge_cols[r["frac"]],
                                arrowprops=dict(arrowstyle="->", lw=0.6, color=edge_cols[r["frac"]]))
            # (i) SAM from a balanced and an unbalanced init: forgetting bars, sharpness written on each
            rows = list(sam_rows.values())
            xs = np.arange(len(rows))
            cols_i = ["0.3" if r["optimizer"] == "GD" else "tab:red" for r in rows]
            h3.bar(xs, [r["forgetting"] for r in rows], 0.7, color=cols_i)
            for xi, r in zip(xs, rows):
                h3.text(xi, r["forgetting"], f"{r['sharpness']:.2f}", ha="center", va="bottom", fontsize=5.5)
            h3.set_xticks(xs, [f"{r['init']}\n{r['optimizer']}" for r in rows], rotation=60, ha="right", fontsize=5.5)
            h3.set(ylabel="forgetting after pre-training", ylim=(0, 1.25 * max(r["forgetting"] for r in rows)))
            h3.set_title(r"(i) GD vs SAM by init (numbers: sharpness)", loc="left")

            lp.legend(fig, colors=None, theory_label="theory: gradient flow in t (same for every schedule)",
                      sim_label=None, turning_point=True, loc="outside lower center", ncol=5,
                      extra=[(n, Line2D([], [], color=STYLE[n][0], marker=STYLE[n][1], markerfacecolor="none",
                                        linestyle="none")) for n in names] + [("(g, h):", Line2D([], [], lw=0))]
                      + edge_handles)
            lp.save(fig, png)
        C.save_data(npz, **data)
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
