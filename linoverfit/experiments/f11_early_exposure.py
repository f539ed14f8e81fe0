r"""F11 — early exposure in Feng et al.'s three-stage protocol: pre-train (on a mixture containing a
fraction rho of the post-training data), post-train, fine-tune on a third task; how much of the
post-training task does the last stage undo?

The protocol of Feng, Ghosal, Springer, Zhong & Raghunathan (2026, arXiv:2605.12705) in the linear
setting their App. C restates from Springer et al. (2025): depth 2, width 3, tasks sharing their
singular vectors :math:`U = V` (one Haar-random draw; every number below is invariant under it), the
init :math:`W_1(0) = W_2(0) = e^{-T}I`, full-batch GD, float64. Three features (modes):

* **general** (singular value 2 in all three tasks);
* **conflicting** (inconsistent): +1 in the pre-training and fine-tuning teachers, -1 in the
  post-training teacher (opposite sign: post-training can only drive it to 0 from a positive balanced
  start, and fine-tuning regrows it);
* **specialised**: 0 in pre-training, 1.5 in post-training, and zero input variance in the fine-tuning
  data (Lemma C.16: :math:`\partial L/\partial W_1 = W_2^\top(P - B)\Sigma`, so with :math:`\Sigma v = 0`
  the last stage leaves :math:`W_1v` unchanged; aligned, it leaves the whole mode unchanged).

Stages: pre-train on ``lo.tasks.mixture(pre, post, rho)`` (``lo.pretrain``), post-train on the post-
training task (``lo.finetune(..., return_weights=True)``), chain (``FinetuneResult.as_run``), fine-tune
(``lo.finetune(..., pretrain_task=post)``). :math:`\Delta = L_{post}(\text{after fine-tuning}) -
L_{post}(\text{before})`, the post-training loss the last stage adds (white inputs).

Checkpoints: the **idealised** mixed checkpoint is the gradient-flow limit of mixed pre-training from a
balanced positive aligned start, :math:`s_i = \max(\tau_i(\rho), 0)` for the mixture's singular values
:math:`\tau(\rho) = (1-\rho)\sigma_{pre} + \rho\sigma_{post}`: for :math:`\rho \ge \rho^* = 1/2` the
conflicting mode sits at an exact zero, a saddle that neither post-training nor fine-tuning can leave,
so :math:`\Delta_{mixed} = 0` to round-off (Theorem C.17's conclusion, as reconstructed here). The
**simulated** checkpoint is ``pre_steps`` of GD on the mixture from :math:`e^{-T}I`: the conflicting mode
is small, not zero, and fine-tuning regrows it (the fragility). Panel (d) puts a floor
:math:`\varepsilon` under the conflicting mode of the idealised checkpoint: how exact the zero must be.

Panels: (a) the post-training loss through post-training and fine-tuning for the unmixed route, the
idealised and the simulated mixed checkpoint (rho = ``rho``): what fine-tuning adds is :math:`\Delta`;
(b) the conflicting mode through all three stages (log scale: zero, small, regrown); (c) :math:`\Delta`
against the mixture fraction for idealised and simulated checkpoints (:math:`\rho = 0` is the unmixed
route: ``lo.tasks.mixture(pre, post, 0.0)`` returns ``pre``); (d) :math:`\Delta` against a floor under the
conflicting mode of the idealised checkpoint, with the simulated checkpoint's value marked. Panel (c)
also shows pre-training from a small Gaussian init (not balanced, not aligned; markers only, median and
range over ``draws`` init draws): such a network represents the mixture's negative conflicting value,
so there is no zero to keep.

Lines are theory: the exact per-mode scalar GD map :math:`a \leftarrow a - \eta\kappa a(a^2 - \tau)` of
a balanced aligned depth-2 network (mode value :math:`s = a^2`), iterated in numpy, without simulating
matrices. Markers are the simulation (the library's matrix GD through its public API). Both are exact
GD in float64: they agree to round-off (checked to 1e-10).

App. C of the paper could not be retrieved here; the setting above is a reconstruction from the
secondary descriptions of its App. C (shared singular vectors, specialised features with zero fine-tuning input variance,
inconsistent features, exact zeros on the conflicting features of the mixed checkpoint; docs/theory.md
section 8.5). The two-stage variant of earlier versions (a fraction of the *fine-tuning* task mixed into
pre-training, a fixed fine-tuning budget) is a different protocol and is no longer drawn.

Run: ``python experiments/F11_early_exposure.py [--quick] [--out DIR] [--set rhos="(0.0, 0.75)"]``.

Size: one figure of one protocol in three variants (idealised and simulated mixed checkpoints, a Gaussian
init), each with its theory line and its checks; its panels share the three-stage chain, so it stays one file.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.lines import Line2D

import linoverfit as lo
from linoverfit import plotting as lp
from linoverfit.experiments import _common as C
from linoverfit.precision import enable_x64

NUMBER, NAME = "F11", "early_exposure"
TITLE = "early exposure in Feng et al.'s three stages: pre-train on a mixture, post-train, fine-tune"

# ----------------------------------------------------------------------------- config
CONFIG = dict(
    sigma_pre=(2.0, 1.0, 0.0),     # general, conflicting, specialised: pre-training teacher
    sigma_post=(2.0, -1.0, 1.5),   # post-training teacher (the conflicting mode with the opposite sign)
    sigma_ft=(2.0, 1.0, 0.0),      # fine-tuning teacher
    ft_var=(1.0, 1.0, 0.0),        # fine-tuning input variance per mode (0 on the specialised one)
    T=2.0,                         # init W1 = W2 = exp(-T) I
    key=0,                         # the shared U = V (Haar-random draw)
    lr=0.01,                       # every stage; far below the edge 2/(2 * 2 * 2)
    pre_steps=1000,                # pre-training flow time 10
    post_steps=300,                # post-training flow time 3
    ft_steps=1000,                 # fine-tuning flow time 10
    record_every=50,               # trajectory markers in (a), (b)
    rho=0.75,                      # the headline mixture fraction (>= rho* = 1/2)
    rhos=(0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0),
    theory_rhos=201,
    floors=(1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1),   # (d): the conflicting mode's value at the checkpoint
    theory_floors=121,
    draws=5,                       # random U = V behind the headline numbers (median and range)
)
QUICK = dict(rhos=(0.0, 0.25, 0.5, 0.75, 1.0), theory_rhos=41, floors=(1e-9, 1e-4, 1e-2), theory_floors=31,
             record_every=100, draws=1)
# ----------------------------------------------------------------------------- end of config

MODES = ("general", "conflicting", "specialised")
#: |Delta| of the idealised mixed checkpoint, at most: the losses are O(1) and float64 round-off per step
#: is ~1e-16 of them; the exact zero of the conflicting mode is a zero to round-off (~1e-16) in a rotated
#: basis, which fine-tuning's growth rate e^{t_ft} (about 2e4 in a, ~5e8 in s) leaves far below 1e-12.
ROUND_OFF = 1e-12
#: theory (per-mode scalar map) vs simulation (matrix GD): both exact GD, they differ by round-off
RTOL = 1e-10


# ----------------------------------------------------------------------------- the setting
def tasks(cfg, key, dtype=np.float64):
    """The three tasks sharing a Haar-random ``U = V`` drawn from ``key``: pre-training (white inputs),
    post-training (white), fine-tuning (input variance ``ft_var`` per mode); and ``U``."""
    d = len(cfg["sigma_pre"])
    Q, R = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(key) if isinstance(key, int) else key,
                                                     (d, d)), np.float64))
    U = Q * np.sign(np.diagonal(R))

    def mat(s):
        return jnp.asarray((U * np.asarray(s, np.float64)) @ U.T, dtype)

    pre = lo.Task(teacher=mat(cfg["sigma_pre"]))
    post = lo.Task(teacher=mat(cfg["sigma_post"]))
    ft = lo.Task(teacher=mat(cfg["sigma_ft"]), input_cov=mat(cfg["ft_var"]))
    return pre, post, ft, U


def mixture_sigma(cfg, rho) -> np.ndarray:
    r"""The mixture teacher's singular values :math:`\tau(\rho) = (1-\rho)\sigma_{pre} + \rho\sigma_{post}`
    (equal, white covariances), signed, per mode."""
    return (1 - rho) * np.asarray(cfg["sigma_pre"], float) + rho * np.asarray(cfg["sigma_post"], float)


def checkpoint(U, s, dtype=np.float64) -> tuple:
    r"""The balanced aligned checkpoint with mode values ``s >= 0``: :math:`W_1 = W_2 = U\operatorname{diag}(\sqrt s)U^\top`."""
    W = jnp.asarray((U * np.sqrt(np.asarray(s, float))) @ U.T, dtype)
    return W, W


def as_run(weights, task) -> lo.PretrainResult:
    """Checkpoints ``weights`` (a list of ``(W1, W2)``) as one :class:`~linoverfit.PretrainResult`, the
    start of the post-training stage (checkpoint axis: their order)."""
    W1 = jnp.stack([w[0] for w in weights])
    W2 = jnp.stack([w[1] for w in weights])
    n = len(weights)
    return lo.PretrainResult(steps=np.arange(1, n + 1), loss=task.loss(W2 @ W1), weights=(W1, W2), task=task,
                             lr=1.0, times=np.arange(1, n + 1, dtype=float), prediction="feng.checkpoint", exact=False)


def stages(cfg, net, start, post, ft, record=True):
    """Post-train then fine-tune every checkpoint of ``start`` through the public API. Returns
    ``(stage2, stage3, delta (C,))`` with ``delta = L_post(after) - L_post(before)`` of the last stage."""
    kw = dict(lr=cfg["lr"], return_weights=True)
    rec = dict(record_every=cfg["record_every"]) if record else {}
    stage2 = lo.finetune(net, start, post, steps=cfg["post_steps"], **kw, **rec)
    stage3 = lo.finetune(net, stage2.as_run(post), ft, steps=cfg["ft_steps"], pretrain_task=post, **kw, **rec)
    delta = np.asarray(stage3.pretrain_loss_after, np.float64)[:, 0] - np.asarray(stage3.pretrain_loss_before, np.float64)
    return stage2, stage3, delta


def mode_values(U, W1, W2) -> np.ndarray:
    r"""Mode values :math:`s_i = u_i^\top W_2W_1u_i` of weights ``(..., d, d)``, shape ``(..., d)``."""
    P = np.asarray(W2, np.float64) @ np.asarray(W1, np.float64)
    return np.einsum("ji,...jk,ki->...i", U, P, U)


# ----------------------------------------------------------------------------- theory: the per-mode map
def mode_map(a, tau, kappa, lr, steps, every=None):
    r"""``steps`` of the exact per-mode GD map of a balanced aligned depth-2 network,
    :math:`a \leftarrow a - \eta\kappa a(a^2 - \tau)` (all arrays broadcast; mode value :math:`s = a^2`).
    Returns the final ``a``, or with ``every`` also ``a`` every ``every`` steps ``(steps/every + 1, ...)``."""
    a = np.asarray(a, np.float64).copy()
    out = [a.copy()]
    for k in range(1, steps + 1):
        a = a - lr * kappa * a * (a * a - tau)
        if every and k % every == 0:
            out.append(a.copy())
    return (a, np.stack(out)) if every else a


def post_loss(cfg, s) -> np.ndarray:
    r"""The post-training loss :math:`\tfrac12\sum_i(s_i - \sigma^{post}_i)^2` of mode values ``s (..., d)`` (white inputs)."""
    return 0.5 * np.sum((np.asarray(s) - np.asarray(cfg["sigma_post"], float)) ** 2, axis=-1)


def predicted_chain(cfg, a0, every=None):
    """The theory of post-training then fine-tuning from per-mode ``a0 (..., d)``: ``(delta, s_before_ft, s_after_ft)``
    and, with ``every``, the mode values along both stages."""
    lr = cfg["lr"]
    sp, sf, kf = (np.asarray(cfg[k], float) for k in ("sigma_post", "sigma_ft", "ft_var"))
    if every:
        a1, tr1 = mode_map(a0, sp, 1.0, lr, cfg["post_steps"], every)
        a2, tr2 = mode_map(a1, sf, kf, lr, cfg["ft_steps"], every)
    else:
        a1 = mode_map(a0, sp, 1.0, lr, cfg["post_steps"])
        a2 = mode_map(a1, sf, kf, lr, cfg["ft_steps"])
    delta = post_loss(cfg, a2 ** 2) - post_loss(cfg, a1 ** 2)
    if every:
        return delta, a1 ** 2, a2 ** 2, tr1 ** 2, tr2 ** 2
    return delta, a1 ** 2, a2 ** 2


def ideal_s(cfg, rho) -> np.ndarray:
    r"""The idealised mixed checkpoint's mode values: the flow limit :math:`\max(\tau_i(\rho), 0)`."""
    return np.maximum(mixture_sigma(cfg, rho), 0.0)


def simulated_a(cfg, rho) -> np.ndarray:
    """Theory of the simulated checkpoint: ``pre_steps`` of the per-mode map on the mixture from exp(-T)."""
    return mode_map(np.full(len(cfg["sigma_pre"]), np.exp(-cfg["T"])), mixture_sigma(cfg, rho), 1.0, cfg["lr"],
                    cfg["pre_steps"])


def rho_star(cfg) -> float:
    r""":math:`\rho^*`: the smallest :math:`\rho` at which every mode the fine-tuning data excite and the
    post-training teacher contradicts (sign) has :math:`\tau_i(\rho) \le 0`."""
    sa, sp, kf = (np.asarray(cfg[k], float) for k in ("sigma_pre", "sigma_post", "ft_var"))
    conflict = (kf > 0) & (sa > 0) & (sp < 0)
    return float(np.max(sa[conflict] / (sa[conflict] - sp[conflict]))) if conflict.any() else float("nan")


# ----------------------------------------------------------------------------- the figure
def run(out_dir, quick: bool = False, seed: int = 0, config: dict | None = None, progress=None) -> dict:
    """Make ``F11_early_exposure.png`` / ``.npz`` in ``out_dir``; return the headline numbers (float64).

    ``seed`` is not used: the setting is deterministic given ``CONFIG["key"]`` (the shared U = V)."""
    with enable_x64(True):
        return _run(out_dir, quick, config, progress)


def floored(cfg, eps) -> np.ndarray:
    """The idealised mixed checkpoint's mode values at ``cfg['rho']`` with ``eps`` under the conflicting mode."""
    s = ideal_s(cfg, float(cfg["rho"])).copy()
    s[MODES.index("conflicting")] = eps
    return s


def _chains(cfg, key, full=True):
    """The three stages for one ``U = V`` draw, through the API. Checkpoints, in one batch: the headline three
    (unmixed simulated, mixed idealised, mixed simulated at ``cfg['rho']``) and, with ``full``, the idealised and
    the simulated mixed checkpoint at every ``rhos`` and the floored idealised one at every ``floors``.
    Returns a dict: tasks, ``U``, the pre-training runs, both later stages and ``delta`` (C,)."""
    pre, post, ft, U = tasks(cfg, key)
    d = len(cfg["sigma_pre"])
    net = lo.DeepLinear((d, d, d))
    W0 = checkpoint(U, np.full(d, np.exp(-2 * cfg["T"])))
    rho = float(cfg["rho"])
    ck = np.unique(np.geomspace(1, cfg["pre_steps"], 25).astype(int))

    def pretrain(r, checkpoints):
        return lo.pretrain(net, W0, lo.tasks.mixture(pre, post, float(r)), lr=cfg["lr"], checkpoints=checkpoints)

    def last(run_):
        return tuple(w[-1] for w in run_.weights)

    runs = {"unmixed": pretrain(0.0, ck), "mixed_simulated": pretrain(rho, ck)}
    starts = [last(runs["unmixed"]), checkpoint(U, ideal_s(cfg, rho)), last(runs["mixed_simulated"])]
    if full:
        starts += [checkpoint(U, ideal_s(cfg, r)) for r in cfg["rhos"]]
        starts += [last(pretrain(r, [cfg["pre_steps"]])) for r in cfg["rhos"]]
        starts += [checkpoint(U, floored(cfg, e)) for e in cfg["floors"]]
    start = as_run(starts, post)
    s2, s3, delta = stages(cfg, net, start, post, ft, record=full)
    return dict(pre=pre, post=post, ft=ft, U=U, net=net, runs=runs, ck=ck, start=start, stage2=s2, stage3=s3,
                delta=delta)


ROUTES = ("unmixed", "mixed_idealised", "mixed_simulated")


def _gaussian(cfg, h, g_rhos) -> dict:
    """The three stages from a small Gaussian init (entries N(0, e^{-2T}/d): the Frobenius norm of
    e^{-T}I; not balanced, not aligned), ``cfg['draws']`` init draws x every fraction in ``g_rhos``, one
    batch through the API. No theory line (the modes couple). Returns ``delta`` and the signed conflicting
    mode of the checkpoint, each ``(draws, len(g_rhos))``."""
    d = len(cfg["sigma_pre"])
    net, pre, post, ft, U = h["net"], h["pre"], h["post"], h["ft"], h["U"]
    starts = []
    for key in C.draw_keys(jax.random.fold_in(jax.random.key(cfg["key"]), 7), int(cfg["draws"])):
        W0 = net.init(key, scale=float(np.exp(-cfg["T"]) / np.sqrt(d)), dtype=jnp.float64)
        for r in g_rhos:
            run_ = lo.pretrain(net, W0, lo.tasks.mixture(pre, post, float(r)), lr=cfg["lr"], checkpoints=[cfg["pre_steps"]])
            starts.append(tuple(w[-1] for w in run_.weights))
    start = as_run(starts, post)
    delta = stages(cfg, net, start, post, ft, record=False)[2].reshape(int(cfg["draws"]), len(g_rhos))
    s_c = mode_values(U, *start.weights)[:, MODES.index("conflicting")].reshape(delta.shape)
    return {"delta": delta, "conflicting_mode": s_c}


def _run(out_dir, quick, config, progress) -> dict:
    cfg = C.resolve_config(CONFIG, QUICK, quick, config)
    rhos = np.asarray(cfg["rhos"], float)
    floors = np.asarray(cfg["floors"], float)
    rho = float(cfg["rho"])
    d = len(cfg["sigma_pre"])
    st = C.Stages(5, progress)
    g_rhos = np.unique(np.concatenate([rhos, [rho]]))
    lr = cfg["lr"]
    ci = MODES.index("conflicting")
    si = MODES.index("specialised")
    n = len(rhos)

    with st(f"three stages from {3 + 2 * n + len(floors)} checkpoints (simulated)"):
        h = _chains(cfg, cfg["key"])
    U, post = h["U"], h["post"]
    routes = ROUTES
    delta = dict(zip(routes, h["delta"][:3].tolist()))
    sweep_ideal, sweep_sim = h["delta"][3: 3 + n], h["delta"][3 + n: 3 + 2 * n]
    floor_delta = h["delta"][3 + 2 * n:]
    W1s, W2s = (np.asarray(w, np.float64) for w in h["start"].weights)
    sim_s0 = mode_values(U, W1s, W2s)[:3]
    sim_s1 = mode_values(U, h["stage2"].weights[0][:3, 0], h["stage2"].weights[1][:3, 0])
    sim_s2 = mode_values(U, h["stage3"].weights[0][:3, 0], h["stage3"].weights[1][:3, 0])

    with st("theory: the per-mode GD map"):
        a0 = np.stack([simulated_a(cfg, 0.0), np.sqrt(ideal_s(cfg, rho)), simulated_a(cfg, rho)])
        th_delta, th_before, th_after, th_tr2, th_tr3 = predicted_chain(cfg, a0, every=cfg["record_every"])
        th_pre_tr = {}
        every_pre = 10
        for name, r_ in (("unmixed", 0.0), ("mixed_simulated", rho)):
            _, tr = mode_map(np.full(d, np.exp(-cfg["T"])), mixture_sigma(cfg, r_), 1.0, lr, cfg["pre_steps"], every_pre)
            th_pre_tr[name] = tr ** 2
        rho_th = np.unique(np.concatenate([np.linspace(0, 1, cfg["theory_rhos"]), rhos]))
        th_sweep_ideal = predicted_chain(cfg, np.sqrt(np.stack([ideal_s(cfg, r) for r in rho_th])))[0]
        th_sweep_sim = predicted_chain(cfg, np.stack([simulated_a(cfg, r) for r in rho_th]))[0]
        th_at_rhos_ideal = predicted_chain(cfg, np.sqrt(np.stack([ideal_s(cfg, r) for r in rhos])))[0]
        th_at_rhos_sim = predicted_chain(cfg, np.stack([simulated_a(cfg, r) for r in rhos]))[0]
        eps_th = np.unique(np.concatenate([np.geomspace(min(floors.min(), 1e-14), 1.0, cfg["theory_floors"]), floors]))
        th_floor = predicted_chain(cfg, np.sqrt(np.stack([floored(cfg, e) for e in eps_th])))[0]
        th_floor_at = predicted_chain(cfg, np.sqrt(np.stack([floored(cfg, e) for e in floors])))[0]

    with st(f"{cfg['draws']} random U = V: the headline numbers"):
        # draw 0 is the figure's own run (same key, same batch)
        per_draw = {k: [delta[k]] for k in routes}
        for key in C.draw_keys(jax.random.key(cfg["key"]), int(cfg["draws"]))[1:]:
            for k, v in zip(routes, _chains(cfg, key, full=False)["delta"].tolist()):
                per_draw[k].append(v)

    with st(f"small Gaussian init ({cfg['draws']} draws x {len(g_rhos)} fractions)"):
        gauss = _gaussian(cfg, h, g_rhos)

    # ---------------------------------------------------------------- numbers and checks
    def rel(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))

    err = max(rel(list(delta.values()), th_delta), rel(sweep_ideal, th_at_rhos_ideal), rel(sweep_sim, th_at_rhos_sim),
              rel(floor_delta, th_floor_at), rel(sim_s1, th_before), rel(sim_s2, th_after))
    rs = rho_star(cfg)
    above = rhos >= rs - 1e-12
    loss_post = {k: float(v) for k, v in zip(routes, np.asarray(h["stage3"].pretrain_loss_before, float)[:3])}
    gain_kept = 100 * (1 - delta["mixed_simulated"] / delta["unmixed"])
    sim_eps = float(sim_s0[2, ci])
    per_rho = {f"{r:g}": {"delta_idealised": float(a), "delta_simulated": float(b),
                          "conflicting_mode_idealised": float(ideal_s(cfg, r)[ci]),
                          "conflicting_mode_simulated": float(simulated_a(cfg, r)[ci] ** 2)}
               for r, a, b in zip(rhos, sweep_ideal, sweep_sim)}
    floor_rows = {f"{e:g}": float(v) for e, v in zip(floors, floor_delta)}
    # the floor at which Delta reaches half of Delta_unmixed (theory, log-interpolated)
    half = 0.5 * delta["unmixed"]
    j = int(np.argmax(th_floor >= half))
    eps_half = float(np.exp(np.interp(half, th_floor[j - 1: j + 1], np.log(eps_th[j - 1: j + 1])))) if j > 0 else float("nan")
    # small-mode growth rates: post-training multiplies s_c by exp(2 sigma_post t_post) (< 1), fine-tuning by
    # exp(2 kappa sigma_ft t_ft): a checkpoint value below their product's inverse is not regrown in time
    t_post, t_ft = lr * cfg["post_steps"], lr * cfg["ft_steps"]
    eps_est = float(np.exp(-2 * (cfg["ft_var"][ci] * cfg["sigma_ft"][ci] * t_ft + cfg["sigma_post"][ci] * t_post)))
    checks = [
        C.check(f"Delta_mixed of the idealised checkpoint (rho={rho:g}) is 0 to round-off, |Delta|",
                abs(delta["mixed_idealised"]), at_most=ROUND_OFF),
        C.check("Delta_mixed (idealised) < Delta_unmixed", bool(delta["mixed_idealised"] < delta["unmixed"]), expected=True),
        C.check("Delta_unmixed > 0.1 (the last stage undoes post-training)", bool(delta["unmixed"] > 0.1), expected=True),
        C.check(f"idealised Delta = 0 to round-off for every rho >= rho* = {rs:g}, max |Delta|",
                float(np.max(np.abs(sweep_ideal[above]))) if above.any() else 0.0, at_most=ROUND_OFF),
        C.check(f"idealised Delta > 0 for every rho < rho*", bool(np.all(sweep_ideal[~above] > 1e-3)), expected=True),
        C.check("rho = 0 (mixture(pre, post, 0) is pre) reproduces Delta_unmixed of the simulated chain, |diff|",
                abs(float(sweep_sim[0]) - delta["unmixed"]) if rhos[0] == 0 else 0.0, at_most=ROUND_OFF),
        C.check("theory (per-mode map) vs simulation (matrix GD), max relative difference", err, at_most=RTOL),
        C.check("the specialised mode is unchanged by fine-tuning (Lemma C.16), max |change|",
                float(np.max(np.abs(sim_s2[:, si] - sim_s1[:, si]))), at_most=ROUND_OFF),
        # relative: the simulated checkpoint's small conflicting mode (~1e-6) carries the basis's round-off
        # (~1e-16 absolute) into Delta through the steep regrowth, ~1e-12 measured
        C.check("every random U = V gives the same Deltas (rotation invariance), max |diff| / max(1, |Delta|)",
                max(abs(v - per_draw[k][0]) / max(1.0, abs(per_draw[k][0])) for k in routes for v in per_draw[k]),
                at_most=RTOL),
    ]
    gi0, gir = int(np.flatnonzero(g_rhos == 0.0)[0]) if 0.0 in g_rhos else None, int(np.flatnonzero(g_rhos == rho)[0])
    g_unmixed = C.spread(gauss["delta"][:, gi0]) if gi0 is not None else None
    g_mixed = C.spread(gauss["delta"][:, gir])
    g_mode = C.spread(gauss["conflicting_mode"][:, gir])
    verdict = (
        f"Feng et al.'s (2026, arXiv:2605.12705) three stages in the linear setting their App. C restates from "
        f"Springer et al. (2025): depth 2, tasks sharing U = V, init exp(-T) I (T = {cfg['T']:g}), GD at lr {lr:g} "
        f"(pre-train {cfg['pre_steps']}, post-train {cfg['post_steps']}, fine-tune {cfg['ft_steps']} steps), "
        f"float64. Delta = the post-training loss the last stage adds. With an idealised mixed checkpoint "
        f"(rho = {rho:g}: the flow limit of mixed pre-training, the conflicting mode at an exact zero) "
        f"Delta_mixed = {delta['mixed_idealised']:.3g}, 0 to round-off, against Delta_unmixed = "
        f"{delta['unmixed']:.4g}: Theorem C.17's conclusion (as reconstructed here: App. C was not retrievable) holds, and for every rho >= rho* = {rs:g} "
        f"(where the mixture's conflicting singular value (1-rho) sigma_pre + rho sigma_post <= 0). Conditions: "
        f"the specialised feature has zero fine-tuning input variance (Lemma C.16 keeps it, in both routes), and "
        f"the conflicting feature sits at an exact zero of a balanced aligned checkpoint, a saddle that neither "
        f"later stage can leave. The gain is fragile: the simulated mixed checkpoint ({cfg['pre_steps']} GD steps "
        f"on the mixture) holds the conflicting mode at {sim_eps:.3g}, not 0, and fine-tuning regrows it: "
        f"Delta_mixed = {delta['mixed_simulated']:.4g} ({gain_kept:.3g}% of the gain kept); a floor of "
        f"{eps_half:.2g} under that mode already costs half of Delta_unmixed (growth-rate estimate "
        f"exp(-2 (sigma_ft t_ft + sigma_post t_post)) = {eps_est:.2g}); a longer fine-tuning regrows any nonzero "
        f"value, only an exact zero keeps the gain for every fine-tuning length. From a small Gaussian init (not "
        f"balanced, not aligned) there is no zero at all: the network represents the mixture's negative conflicting "
        f"value (checkpoint {g_mode['median']:.3g}, median of {g_mode['n']} init draws), post-training takes it to about "
        f"-1 and fine-tuning undoes all of it: Delta_mixed = {g_mixed['median']:.4g} ({g_mixed['min']:.4g}-"
        f"{g_mixed['max']:.4g}) against Delta_unmixed = {g_unmixed['median']:.4g} ({g_unmixed['min']:.4g}-"
        f"{g_unmixed['max']:.4g}) from the same inits: early exposure then adds to what fine-tuning undoes. "
        f"Immediate post-training loss "
        f"does not predict retention: {loss_post['unmixed']:.4g} (unmixed), {loss_post['mixed_idealised']:.4g} "
        f"(mixed, idealised), {loss_post['mixed_simulated']:.4g} (mixed, simulated)."
    )
    summary = {
        "dtype": "float64", "modes": list(MODES), "sigma_pre": list(cfg["sigma_pre"]),
        "sigma_post": list(cfg["sigma_post"]), "sigma_ft": list(cfg["sigma_ft"]), "ft_var": list(cfg["ft_var"]),
        "T": cfg["T"], "lr": lr, "pre_steps": cfg["pre_steps"], "post_steps": cfg["post_steps"],
        "ft_steps": cfg["ft_steps"], "rho": rho, "rho_star": rs, "rhos": rhos.tolist(), "floors": floors.tolist(),
        "delta_unmixed": delta["unmixed"], "delta_mixed": delta["mixed_idealised"],
        "delta_mixed_simulated": delta["mixed_simulated"], "gain_kept_simulated_percent": gain_kept,
        "conflicting_mode_simulated_checkpoint": sim_eps, "floor_for_half_of_delta_unmixed": eps_half,
        "floor_growth_rate_estimate": eps_est,
        "post_training_loss_before_finetuning": loss_post,
        "per_rho": per_rho, "per_floor": floor_rows,
        "gaussian_init": {
            "what": "pre-training from a small Gaussian init (entries N(0, exp(-2T)/d)), not balanced or aligned; "
                    "median and range over the draws of the init",
            "delta_unmixed": g_unmixed, "delta_mixed": g_mixed, "conflicting_mode_mixed_checkpoint": g_mode,
            "per_rho": {f"{r:g}": C.spread(gauss["delta"][:, j]) for j, r in enumerate(g_rhos)}},
        "max_rel_error_theory_vs_simulation": err,
        "draws": {"n": int(cfg["draws"]), "what": "Haar-random U = V, one key per draw (draw 0: the figure's)",
                  "delta": {k: C.spread(v) for k, v in per_draw.items()},
                  "gaussian_init_delta": {"what": "the small Gaussian init, one init key per draw (section "
                                                  "gaussian_init)", "unmixed": g_unmixed, "mixed": g_mixed}},
        "checks": checks,
        "condition": "depth 2, width 3, tasks sharing U = V, white pre- and post-training inputs, fine-tuning inputs "
                     "with zero variance on the specialised feature, balanced aligned checkpoints, full-batch GD, "
                     "float64; idealised = flow limit of mixed pre-training (exact zeros where the mixture's "
                     "singular value <= 0); App. C reconstructed (not retrieved)",
        "verdict": verdict,
    }

    # ---------------------------------------------------------------- plot
    with st("plot"):
        png, npz = C.figure_paths(out_dir, NUMBER, NAME)
        cols = {"unmixed": "tab:red", "mixed_idealised": "tab:blue", "mixed_simulated": "tab:purple",
                "gaussian": "tab:green"}
        labels = {"unmixed": r"unmixed ($\rho = 0$; simulated pre-training)",
                  "mixed_idealised": rf"mixed, idealised checkpoint ($\rho = {rho:g}$ in a, b, d)",
                  "mixed_simulated": rf"mixed, simulated checkpoint ($\rho = {rho:g}$ in a, b)"}
        t_pre, t_post, t_ft = (lr * cfg[k] for k in ("pre_steps", "post_steps", "ft_steps"))
        rec = cfg["record_every"]
        t2 = t_pre + lr * np.arange(0, cfg["post_steps"] + 1, rec)
        t3 = t_pre + t_post + lr * np.arange(0, cfg["ft_steps"] + 1, rec)
        tp = lr * np.arange(0, cfg["pre_steps"] + 1, every_pre)
        # simulated post-training loss along the stages (record_every): stage 2 records its own task (post),
        # stage 3 records the post-training task as pretrain_task
        sim_l2 = np.concatenate([np.asarray(h["stage2"].finetune_loss_before, float)[:3].reshape(-1, 1),
                                 np.asarray(h["stage2"].finetune_loss_trajectory, float)[:3, 0]], axis=1)
        sim_l3 = np.concatenate([np.asarray(h["stage3"].pretrain_loss_before, float)[:3].reshape(-1, 1),
                                 np.asarray(h["stage3"].pretrain_loss_trajectory, float)[:3, 0]], axis=1)
        if sim_l2.shape[1] != t2.size or sim_l3.shape[1] != t3.size:
            raise AssertionError("record grid")
        with lp.style():
            fig, axes = lp.subplots(2, 2, width="page", aspect=0.62, squeeze=False)
            (a, b), (c, dd) = axes
            for j, k in enumerate(routes):
                col = cols[k]
                # (a) post-training loss through post-training and fine-tuning
                lp.theory(a, t2, post_loss(cfg, th_tr2[:, j]), color=col)
                lp.theory(a, t3, post_loss(cfg, th_tr3[:, j]), color=col)
                lp.simulation(a, t2, sim_l2[j], color=col, markersize=3)
                lp.simulation(a, t3, sim_l3[j], color=col, markersize=3)
                # (b) the conflicting mode through all three stages
                if k in th_pre_tr:
                    lp.theory(b, tp, th_pre_tr[k][:, ci], color=col)
                    pre_s = mode_values(U, *h["runs"][k].weights)[:, ci]
                    lp.simulation(b, lr * np.asarray(h["ck"], float), pre_s, color=col, markersize=3)
                lp.theory(b, t2, th_tr2[:, j, ci], color=col)
                lp.theory(b, t3, th_tr3[:, j, ci], color=col)
                lp.simulation(b, [t_pre, t_pre + t_post, t_pre + t_post + t_ft], [sim_s0[j, ci], sim_s1[j, ci], sim_s2[j, ci]],
                              color=col, markersize=4)
            for ax in (a, b):
                for x in (t_pre, t_pre + t_post):
                    ax.axvline(x, color="0.6", lw=0.6, ls=":")
            a.set(xlabel="training time $t = \\eta\\cdot$steps (post-training, then fine-tuning)",
                  ylabel="post-training task loss", xlim=(t_pre - 0.3, t_pre + t_post + t_ft + 0.3))
            a.text(t_pre + 0.5 * t_post, 0.97, "post-train", transform=a.get_xaxis_transform(), ha="center", va="top",
                   fontsize=6)
            a.text(t_pre + t_post + 0.5 * t_ft, 0.97, "fine-tune", transform=a.get_xaxis_transform(), ha="center",
                   va="top", fontsize=6)
            a.set_title(r"(a) $\Delta$: what fine-tuning adds", loc="left")
            a.text(0.98, 0.88, "\n".join([r"$\Delta$ = " + f"{delta['unmixed']:.4g} (unmixed)",
                                          f"{delta['mixed_simulated']:.3g} (mixed, simulated)",
                                          f"{delta['mixed_idealised']:.1g} (mixed, idealised)"]),
                   transform=a.transAxes, ha="right", va="top", fontsize=6)
            b.set(yscale="log", ylim=(1e-12, 3), xlabel="training time $t$ (pre-train, post-train, fine-tune)",
                  ylabel="conflicting mode $s_c$")
            b.text(0.98, 0.04, "idealised: $s_c = 0$ exactly after pre-training\n(off the log axis)",
                   transform=b.transAxes, ha="right", va="bottom", fontsize=6, color=cols["mixed_idealised"])
            b.set_title("(b) the conflicting mode: zero, small, regrown", loc="left")
            # (c) Delta vs rho
            lp.theory(c, rho_th, th_sweep_ideal, color=cols["mixed_idealised"])
            lp.simulation(c, rhos, sweep_ideal, color=cols["mixed_idealised"], markersize=4)
            lp.theory(c, rho_th, th_sweep_sim, color=cols["mixed_simulated"])
            lp.simulation(c, rhos, sweep_sim, color=cols["mixed_simulated"], marker="s", markersize=4)
            g_med = np.median(gauss["delta"], axis=0)
            g_err = np.stack([g_med - gauss["delta"].min(axis=0), gauss["delta"].max(axis=0) - g_med])
            if gauss["delta"].shape[0] > 1:  # the range over init draws
                c.errorbar(g_rhos, g_med, yerr=g_err, fmt="none", ecolor=cols["gaussian"], elinewidth=0.7)
            lp.simulation(c, g_rhos, g_med, color=cols["gaussian"], marker="^", markersize=4)
            c.axhline(delta["unmixed"], color=cols["unmixed"], lw=0.8, ls="--")
            c.axvline(rs, color="0.5", lw=0.6, ls=":")
            c.text(rs, 0.5 * delta["unmixed"], rf" $\rho^* = {rs:g}$", fontsize=6, ha="left")
            c.axvline(rho, color="0.5", lw=0.6, ls="-.")
            c.text(rho, 0.8 * delta["unmixed"], rf" $\rho = {rho:g}$ (a, b, d)", fontsize=6, ha="left", va="top")
            c.set(xlabel=r"mixture fraction $\rho$ (post-training data in pre-training)",
                  ylabel=r"$\Delta$ (post-training loss added)",
                  ylim=(-0.05 * delta["unmixed"], 1.1 * max(delta["unmixed"], float(np.max(gauss["delta"])))))
            c.set_title(r"(c) $\Delta$ against the mixture fraction", loc="left")
            # (d) Delta vs the floor under the conflicting mode
            lp.theory(dd, eps_th, th_floor, color=cols["mixed_idealised"])
            lp.simulation(dd, floors, floor_delta, color=cols["mixed_idealised"], marker="D", markersize=4)
            dd.axhline(delta["unmixed"], color=cols["unmixed"], lw=0.8, ls="--")
            dd.axvline(sim_eps, color=cols["mixed_simulated"], lw=0.8, ls="-.")
            lp.simulation(dd, [sim_eps], [delta["mixed_simulated"]], color=cols["mixed_simulated"], marker="s",
                          markersize=4)
            dd.text(sim_eps, 0.45 * delta["unmixed"], " simulated\n checkpoint", fontsize=6, color=cols["mixed_simulated"])
            dd.set(xscale="log", xlabel=rf"conflicting mode $s_c$ put into the idealised checkpoint ($\rho = {rho:g}$)",
                   ylabel=r"$\Delta$ (post-training loss added)", ylim=(-0.05 * delta["unmixed"], 1.15 * delta["unmixed"]))
            dd.set_title("(d) how exact the zero must be", loc="left")
            labels["gaussian"] = f"small Gaussian init (c; {int(cfg['draws'])} draws: median, range; no theory)"
            lp.legend(fig, colors={labels[k]: cols[k] for k in (*routes, "gaussian")},
                      theory_label="theory: exact per-mode GD map (numpy)",
                      sim_label="simulation: matrix GD, lo.pretrain / lo.finetune / as_run",
                      extra=[(r"$\Delta_{unmixed}$ (c, d)", Line2D([], [], color=cols["unmixed"], lw=0.8, ls="--"))],
                      loc="outside lower center", ncol=3)
            lp.save(fig, png)
        C.save_data(npz, gaussian_rhos=g_rhos, gaussian_delta=gauss["delta"],
                    gaussian_conflicting_mode=gauss["conflicting_mode"], rhos=rhos, delta_idealised=sweep_ideal, delta_simulated=sweep_sim, rho_theory=rho_th,
                    delta_idealised_theory=th_sweep_ideal, delta_simulated_theory=th_sweep_sim, floors=floors,
                    delta_floor=floor_delta, floor_theory=eps_th, delta_floor_theory=th_floor,
                    delta_headline=np.asarray([delta[k] for k in routes]), delta_headline_theory=th_delta,
                    post_loss_stage2=sim_l2, post_loss_stage3=sim_l3, t_stage2=t2, t_stage3=t3)
    return summary


def main(argv=None):
    return C.script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
