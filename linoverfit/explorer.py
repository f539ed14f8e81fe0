r"""``lo.explore()``: an interactive panel of the closed forms, for lectures and notebooks.

Sliders set the perturbation scale :math:`\gamma` (or the fine-tuning learning rate :math:`\eta`),
the spectrum decay :math:`\alpha` of the teacher (:math:`\sigma_i = i^{-\alpha}`) and the depth
:math:`L`; the plot shows, over pre-training time :math:`t = \eta_{pre}\cdot\text{steps}`,

* perturbation mode: the predicted pre-training loss after Gaussian noise,
  :func:`linoverfit.theory.curves.perturbed_loss_curve`, and its minimiser :math:`T^*`
  (:func:`linoverfit.theory.turning.turning_point`);
* fine-tuning mode: the predicted pre-training loss after fine-tuning for ``ft_steps`` steps,
  :func:`linoverfit.theory.curves.finetune_curve`, and its minimum on the grid;

next to the plain pre-training loss. Closed forms only, so a slider move redraws at once. The
*simulate* button runs the real thing for the current setting (:func:`linoverfit.pretrain` from an
aligned init, then :func:`linoverfit.sensitivity.gaussian` or :func:`linoverfit.finetune`) and adds
it as markers.

Widgets are an optional extra (``pip install "linoverfit[widgets]"``); this module imports without
them and :func:`explore` raises an ``ImportError`` saying so. Everything the panel draws is also
returned by :meth:`update` / :meth:`simulate`, so a test (or a script) can drive it headless.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import jax
import numpy as np

from . import checkpoints as _checkpoints
from . import theory
from .finetuning import finetune
from .networks import DeepLinear
from .pretraining import pretrain
from .sensitivity import gaussian
from .tasks import power_law, shifted

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["explore", "closed_form_curves", "simulate"]

MODES = ("perturbation", "finetune")
_MAX_SIM_STEPS = 2**17
_PRETRAIN_LR = 0.05


def _require_widgets():
    try:
        import ipywidgets  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "lo.explore needs ipywidgets, an optional extra: pip install \"linoverfit[widgets]\" "
            "(or pip install ipywidgets)"
        ) from err
    return ipywidgets


def _task(width: int, alpha: float, seed: int):
    return power_law(width, width, alpha=alpha, key=jax.random.key(seed))


_T_ALL = np.geomspace(1e-3, 1e8, 661)  # 60 points per decade


def _learnt_spectrum(sigma, s0, depth, grid_only=False):
    r"""Grid ``t`` ``(N,)`` from ``1e-4 t_max`` to ``t_max`` and the learnt spectrum ``s`` ``(N, M)`` on it.

    ``t_max`` is twice the time at which every mode is within 1% of its limit
    (:func:`~linoverfit.theory.modes.mode_asymptote`). Depth >= 3 solves the mode ODE at ``rtol=1e-8``
    (plotting accuracy, 4x faster than the default). With ``grid_only`` (``s`` is then ``None``) at
    depth >= 3 and :math:`s_0 \le \sigma_{min}/100` only the smallest mode is solved: every mode then
    starts far below its limit, its escape time :math:`\propto \sigma^{-1}s_0^{-(1-2/L)}` dominates, and
    the smallest is the last to get within 1%, so the grid is the same (``tests/test_explore.py``) at a
    tenth of the cost. (A mode with :math:`\sigma` near or below :math:`s_0` converges at once or decays,
    and another mode is the last: then every mode is solved.)
    """
    if grid_only and depth >= 3 and s0 <= 0.01 * float(np.min(sigma)):
        sigma = sigma[np.argmin(sigma)][None]
    s = theory.modes.mode_trajectory(sigma, _T_ALL, s0, depth, rtol=1e-8)
    limit = theory.modes.mode_asymptote(sigma, s0, depth)
    done = np.all(np.abs(s - limit) <= 0.01 * np.maximum(limit, s0), axis=1)
    t_max = 2.0 * _T_ALL[int(np.argmax(done)) if done.any() else -1]
    keep = (_T_ALL >= 1e-4 * t_max) & (_T_ALL <= t_max)
    return _T_ALL[keep], (None if grid_only else s[keep])


def closed_form_curves(mode: str = "perturbation", *, gamma: float = 0.05, lr: float = 0.03, alpha: float = 1.0,
                       depth: int = 2, width: int = 32, s0: float = 1e-6, ft_steps: int = 500, shift: float = 0.1,
                       seed: int = 0, points: int | None = None) -> dict:
    r"""The curves :func:`explore` draws for one setting, from the closed forms only.

    Teacher :math:`\sigma_i = i^{-\alpha}`, :math:`i = 1..\text{width}`, white inputs; network of
    depth :math:`L` and all widths ``width``; balanced aligned init with mode value :math:`s_0`
    (``net.init(scheme="aligned", scale=s0 ** (1 / depth))``).

    * ``mode="perturbation"``: ``curve`` is :math:`\mathbb E[L(W(t) + \gamma E)]`, i.e.
      :func:`~linoverfit.theory.curves.perturbed_loss_curve`, computed as
      :math:`\tfrac12\sum_i(\sigma_i - s_i)^2` + :func:`~linoverfit.theory.perturbation.sensitivity_from_spectrum`
      on one mode solve; ``t_star`` its minimiser: depth <= 2 from
      :func:`~linoverfit.theory.turning.turning_point` (exact root of :math:`f'`), depth >= 3 the minimum on
      the grid (60 points per decade; the exact root finder is slow there).
      ``threshold`` is :math:`\sigma^*` of :func:`~linoverfit.theory.turning.perturbation_threshold`
      (depth 2: :math:`\gamma^2(d_{in}+d_{out})`) and ``worth`` the number of modes above it.
    * ``mode="finetune"``: ``curve`` is the pre-training loss after fine-tuning for
      :math:`\tau = \eta\cdot\text{ft\_steps}` on an additive shift of absolute size ``shift``
      (``lo.tasks.shifted(..., scale="absolute")``: entries of variance ``shift**2 / width``)
      (:func:`~linoverfit.theory.curves.finetune_curve`); ``t_star`` its minimum on the grid.

    The time grid runs from :math:`10^{-4} t_{max}` to :math:`t_{max}`, twice the time every mode
    needs to get within 1% of its limit (fine-tuning: ``points``, default 24, log-spaced points).

    Returns a dict of numpy arrays / floats: ``t`` ``(N,)``, ``loss`` ``(N,)`` (pre-training loss),
    ``curve`` ``(N,)``, ``t_star``, ``interior`` (False when the minimum is at an end of the grid),
    ``threshold``, ``worth`` (perturbation only, else NaN / -1) and ``settings``.

    Examples:
      >>> from linoverfit.explorer import closed_form_curves
      >>> a = closed_form_curves(gamma=0.03)
      >>> b = closed_form_curves(gamma=0.06)
      >>> a["curve"].shape == a["t"].shape, bool(b["t_star"] < a["t_star"])   # larger gamma: earlier T*
      (True, True)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    width = int(width)
    widths = (width,) * (depth + 1)
    sigma = np.arange(1, width + 1, dtype=np.float64) ** (-float(alpha))
    t, s = _learnt_spectrum(sigma, s0, depth, grid_only=mode == "finetune")
    settings = dict(mode=mode, gamma=float(gamma), lr=float(lr), alpha=float(alpha), depth=depth, width=width,
                    s0=float(s0), ft_steps=int(ft_steps), shift=float(shift), seed=int(seed))
    out = {"settings": settings, "threshold": float("nan"), "worth": -1}
    if mode == "perturbation":
        # perturbed_loss_curve, composed from its public parts so one mode solve serves the whole grid
        loss = 0.5 * np.sum((sigma - s) ** 2, axis=-1)
        curve = loss + theory.perturbation.sensitivity_from_spectrum(s, gamma, widths)[:, 0]  # one gamma: (T, 1)
        i = int(np.argmin(curve))
        t_star, interior = float(t[i]), 0 < i < t.size - 1
        if depth <= 2:
            tp = theory.turning.turning_point(sigma, gamma=gamma, widths=widths, s0=s0, t_max=t[-1])
            t_star, interior = tp.t_star, bool(tp.interior and tp.t_star > t[0])
        threshold = float(theory.turning.perturbation_threshold(gamma, widths))
        out.update(threshold=threshold, worth=int(np.sum(sigma > threshold)))
    else:
        t = np.geomspace(t[0], t[-1], points or 24)
        task = _task(width, alpha, seed)
        ft = _finetune_task(task, shift, seed)
        pred = theory.curves.finetune_curve(task, ft, t, widths=widths, s0=s0, lr=lr, steps=int(ft_steps))
        curve = np.asarray(pred.pretrain_loss_after[:, 0])
        loss = np.asarray(pred.pretrain_loss_before)
        i = int(np.argmin(curve))
        t_star, interior = float(t[i]), 0 < i < t.size - 1
    out.update(t=t, loss=loss, curve=curve, t_star=float(t_star), interior=bool(interior))
    return out


def _finetune_task(task, shift, seed):
    return shifted(task, kind="additive", size=shift, key=jax.random.key(seed + 1), scale="absolute")


def simulate(curves: dict, *, pretrain_lr: float = _PRETRAIN_LR, checkpoints: int = 24, samples: int = 128) -> dict:
    r"""Simulate the setting of ``curves`` (a :func:`closed_form_curves` result) with the public API.

    Pre-trains ``DeepLinear((width,) * (depth + 1))`` from ``init(scheme="aligned",
    scale=s0 ** (1 / depth))`` by GD at ``pretrain_lr`` to the end of the curve's time grid (at most
    :math:`2^{17}` steps), ``checkpoints`` log-spaced checkpoints; then measures the perturbed loss
    (``samples`` Monte Carlo draws) or the pre-training loss after fine-tuning.

    Returns ``t`` ``(C,)``, ``loss`` ``(C,)`` (pre-training loss), ``value`` ``(C,)`` (what ``curve``
    predicts), ``t_min`` (the measured minimiser) and ``truncated`` (True when the step cap cut the
    run short of the grid).
    """
    st = curves["settings"]
    task = _task(st["width"], st["alpha"], st["seed"])
    net = DeepLinear((st["width"],) * (st["depth"] + 1))
    W0 = net.init(jax.random.key(st["seed"] + 2), scale=st["s0"] ** (1.0 / st["depth"]), scheme="aligned", task=task)
    want = int(math.ceil(curves["t"][-1] / pretrain_lr))
    total = min(max(want, checkpoints), _MAX_SIM_STEPS)
    run = pretrain(net, W0, task, lr=pretrain_lr, checkpoints=_checkpoints.log_checkpoints(total, checkpoints))
    if st["mode"] == "perturbation":
        res = gaussian(net, run, gamma=(st["gamma"],), samples=samples, key=jax.random.key(st["seed"] + 3))
        value = np.asarray(res.perturbed_loss[:, 0])
    else:
        ft = _finetune_task(task, st["shift"], st["seed"])
        res = finetune(net, run, ft, lr=(st["lr"],), steps=st["ft_steps"])
        value = np.asarray(res.pretrain_loss_after[:, 0])
    i = int(np.nanargmin(value)) if np.isfinite(value).any() else 0
    return {"t": np.asarray(run.t), "loss": np.asarray(run.loss), "value": value, "t_min": float(run.t[i]),
            "truncated": total < want}


class _Canvas:
    """One matplotlib figure (no pyplot: headless), built once; each render moves the artists'
    data and returns PNG bytes, so a slider move costs one Agg draw."""

    RED = "tab:red"

    def __init__(self, width_in: float = 6.4, height_in: float = 3.4):
        from . import plotting as lp

        self._lp = lp
        rc = {"font.size": 9, "axes.labelsize": 9, "legend.fontsize": 8, "axes.titlesize": 9}
        self._style = lambda: lp.style(**rc)
        with self._style():
            from matplotlib.figure import Figure

            self.fig = Figure(figsize=(width_in, height_in))  # fixed margins: no layout pass per frame
            self.fig.subplots_adjust(left=0.11, right=0.98, bottom=0.15, top=0.9)
            self.ax = ax = self.fig.add_subplot()
            nan = [np.nan]
            self.loss = lp.theory(ax, nan, nan, color="0.6", linestyle="--")
            self.curve = lp.theory(ax, nan, nan, color=self.RED)
            self.tstar = ax.axvline(1.0, color=self.RED, linestyle=":", linewidth=1.1, zorder=1)
            self.sim = lp.simulation(ax, nan, nan, color=self.RED)
            (self.star,) = ax.plot(nan, nan, marker="*", markersize=9, color=self.RED, markeredgecolor="k",
                                   markeredgewidth=0.5, linestyle="none", zorder=4)
            lp.time_axis(ax)
            ax.set(yscale="log", ylabel="pre-training loss")
            self.legend = None

    def render(self, curves: dict, sim: dict | None) -> bytes:
        st = curves["settings"]
        what = (fr"after noise, $\gamma$ = {st['gamma']:.3g}" if st["mode"] == "perturbation"
                else fr"after fine-tuning, $\eta$ = {st['lr']:.3g} x {st['ft_steps']} steps")
        with self._style():
            self.loss.set_data(curves["t"], curves["loss"])
            self.curve.set_data(curves["t"], curves["curve"])
            self.tstar.set_xdata([curves["t_star"]] * 2)
            self.tstar.set_visible(bool(curves["interior"]))
            if sim is None:
                self.sim.set_data([np.nan], [np.nan])
                self.star.set_data([np.nan], [np.nan])
            else:
                ok = np.isfinite(sim["value"])
                self.sim.set_data(sim["t"][ok], sim["value"][ok])
                i = int(np.nanargmin(sim["value"]))
                self.star.set_data([sim["t_min"]], [sim["value"][i]])
            lo_, hi = np.nanmin(curves["loss"]), np.nanmax(curves["curve"])
            values = [curves["curve"]] + ([sim["value"][np.isfinite(sim["value"])]] if sim is not None else [])
            bottom = max(min(np.nanmin(v) for v in values) / 2.0, lo_, 1e-3 * hi)
            self.ax.set_xlim(curves["t"][0], curves["t"][-1])
            self.ax.set_ylim(bottom, hi * 1.3)
            self.ax.set_title(fr"$\sigma_i = i^{{-{st['alpha']:.2g}}}$, depth {st['depth']}, width {st['width']}: "
                              + (fr"predicted $T^*$ = {curves['t_star']:.3g}" if curves["interior"]
                                 else "no interior turning point"))
            if self.legend is not None:
                self.legend.remove()
            self.legend = self._lp.legend(self.ax, colors={"pre-training loss": "0.6", what: self.RED},
                                          sim_label="simulation (GD)" if sim is not None else None,
                                          turning_point=True, measured_min=sim is not None, loc="lower left")
            buf = io.BytesIO()
            self.fig.savefig(buf, format="png", dpi=100, bbox_inches=None)
        return buf.getvalue()


def explore(mode: str = "perturbation", *, gamma: float = 0.05, lr: float = 0.01, alpha: float = 1.0,
            depth: int = 2, width: int | None = None, s0: float = 1e-6, ft_steps: int = 500, shift: float = 0.3,
            seed: int = 0) -> ipywidgets.VBox:
    r"""Interactive panel: sliders for :math:`\gamma` (or the fine-tuning lr), :math:`\alpha` and depth.

    ``mode="perturbation"`` (default) plots the predicted loss after Gaussian noise of scale
    :math:`\gamma` and its turning point :math:`T^*`; ``mode="finetune"`` the predicted loss after
    ``ft_steps`` steps of fine-tuning at learning rate ``lr`` on an additive shift of absolute size
    ``shift`` (``scale="absolute"``; the flow solve takes 0.5-2 s per setting at width 16, so the sliders update on
    release; at large ``lr * ft_steps`` fine-tuning forgets everything and the curve goes flat). Curves
    come from :func:`closed_form_curves`; the *simulate* button overlays :func:`simulate`.
    ``width`` defaults to 32 (perturbation) or 16 (fine-tuning); ``s0`` is the initial mode value.

    Returns an ``ipywidgets.VBox`` (display it as the last line of a cell) with, for scripts and tests:

    * ``.sliders``: ``{"gamma" or "lr", "alpha", "depth": slider}``;
    * ``.update(**settings)``: set sliders (any of those names), recompute, redraw; returns the
      :func:`closed_form_curves` dict (``t``, ``loss``, ``curve``, ``t_star``, ...), also kept in ``.curves``;
    * ``.simulate()``: run the simulation for the current setting, redraw; returns the
      :func:`simulate` dict, also kept in ``.simulated`` (cleared when a slider moves);
    * ``.image``: the ``ipywidgets.Image`` holding the PNG; ``.status``: a text line with :math:`T^*`.

    Raises ``ImportError`` naming ``pip install "linoverfit[widgets]"`` when ipywidgets is missing.

    Examples:
      >>> import linoverfit as lo
      >>> panel = lo.explore(gamma=0.03)          # doctest: +SKIP
      >>> panel.update(gamma=0.06)["t_star"]      # doctest: +SKIP
    """
    widgets = _require_widgets()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    width = int(width or (32 if mode == "perturbation" else 16))
    fixed = dict(mode=mode, width=width, s0=s0, ft_steps=ft_steps, shift=shift, seed=seed)
    perturb = mode == "perturbation"
    live = perturb  # the fine-tuning flow takes ~0.5 s: update on release there

    if perturb:
        knob = widgets.FloatLogSlider(value=gamma, base=10, min=-2.5, max=-0.7, step=0.02, description="gamma",
                                      readout_format=".3f", continuous_update=live)
    else:
        knob = widgets.FloatLogSlider(value=lr, base=10, min=-3, max=-1, step=0.05, description="ft lr",
                                      readout_format=".3f", continuous_update=live)
    sliders = {
        "gamma" if perturb else "lr": knob,
        "alpha": widgets.FloatSlider(value=alpha, min=0.3, max=2.5, step=0.05, description="decay alpha",
                                     continuous_update=live),
        "depth": widgets.IntSlider(value=depth, min=1, max=4, step=1, description="depth", continuous_update=False),
    }
    button = widgets.Button(description="simulate", tooltip="run lo.pretrain + lo.sensitivity / lo.finetune here",
                            icon="play")
    status = widgets.HTML()
    image = widgets.Image(format="png")
    panel = widgets.VBox([widgets.HBox(list(sliders.values())), widgets.HBox([button, status]), image])
    panel.sliders, panel.image, panel.status, panel.button = sliders, image, status, button
    panel.curves, panel.simulated = None, None
    state = {"hold": False}
    canvas = _Canvas()

    def settings():
        return {**fixed, **{k: s.value for k, s in sliders.items()}}

    def describe():
        c, st = panel.curves, panel.curves["settings"]
        parts = [f"predicted T* = {c['t_star']:.4g} (step {c['t_star'] / _PRETRAIN_LR:.0f} at pre-training lr {_PRETRAIN_LR})"
                 if c["interior"] else "no interior turning point on this range"]
        if st["mode"] == "perturbation":
            parts.append(f"threshold sigma* = {c['threshold']:.3g}: {c['worth']} of {st['width']} modes worth learning")
        if panel.simulated is not None:
            s = panel.simulated
            parts.append(f"simulated minimum at t = {s['t_min']:.4g}" + (" (run truncated)" if s["truncated"] else ""))
        status.value = " &nbsp;|&nbsp; ".join(parts)

    def redraw():
        image.value = canvas.render(panel.curves, panel.simulated)
        describe()

    def update(**changes):
        unknown = set(changes) - set(sliders)
        if unknown:
            raise TypeError(f"update() got unknown settings {sorted(unknown)}; the sliders are {sorted(sliders)}")
        state["hold"] = True
        try:
            for k, v in changes.items():
                sliders[k].value = v
        finally:
            state["hold"] = False
        panel.simulated = None
        panel.curves = closed_form_curves(**settings())
        redraw()
        return panel.curves

    def on_change(_change):
        if not state["hold"]:
            update()

    def simulate_now(*_):
        status.value = "simulating ..."
        panel.simulated = simulate(panel.curves)
        redraw()
        return panel.simulated

    for s in sliders.values():
        s.observe(on_change, names="value")
    button.on_click(simulate_now)
    panel.update, panel.simulate = update, simulate_now
    update()
    return panel
