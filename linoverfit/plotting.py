r"""The house figure style of linoverfit, and small helpers every figure uses.

One place decides how linoverfit figures look, so that the paper figures (``linoverfit figures``)
and a user's notebook plots agree:

* :func:`style` — a context manager (or :func:`use` globally) with the rcParams: 8 pt fonts,
  thin spines, light grid, readable at a paper's column width (:data:`COLUMN_WIDTH` = 3.4 in,
  :data:`PAGE_WIDTH` = 7.0 in).
* **Theory is a line, simulation is a marker.** :func:`theory` draws a closed form as a solid
  line, :func:`simulation` draws measurements as open markers (optionally with error bars), and
  :func:`legend` builds one legend that says which is which and what the colours mean.
* **Colours are consistent across figures**: :func:`gamma_color` (noise scale, viridis on a
  fixed log range), :func:`lr_color` (learning rate, a warm map on a fixed log range),
  :func:`depth_color`, :func:`mode_color`. The same gamma or learning rate gets the same colour
  in every figure.
* :func:`mark_turning_point` marks a predicted T* (dotted vertical line) and a measured minimum
  (star), :func:`time_axis` makes a log axis labelled with the pre-training time
  :math:`t = \eta\cdot\text{steps}`.
* :func:`subplots` makes a figure without pyplot (works headless, no global state) and
  :func:`save` writes it.

Example:
  >>> import numpy as np, linoverfit.plotting as lp
  >>> t = np.geomspace(1, 100, 20)
  >>> with lp.style():
  ...     fig, ax = lp.subplots()
  ...     _ = lp.theory(ax, t, 1 / t, color=lp.gamma_color(0.03))
  ...     _ = lp.simulation(ax, t, 1 / t, color=lp.gamma_color(0.03))
  ...     lp.time_axis(ax)
  ...     _ = lp.legend(ax, colors={"gamma = 0.03": lp.gamma_color(0.03)})
  >>> ax.get_xlabel()
  'pre-training time $t = \\eta \\cdot \\mathrm{steps}$'
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .files import atomic_write

__all__ = [
    "RC",
    "COLUMN_WIDTH",
    "PAGE_WIDTH",
    "GAMMA_RANGE",
    "LR_RANGE",
    "TIME_LABEL",
    "style",
    "use",
    "subplots",
    "save",
    "gamma_color",
    "lr_color",
    "depth_color",
    "mode_color",
    "strength_colors",
    "theory",
    "simulation",
    "mark_turning_point",
    "time_axis",
    "legend",
    "panel_label",
]

#: Width of one column of a two-column paper, inches.
COLUMN_WIDTH = 3.4
#: Width of a full page (both columns), inches.
PAGE_WIDTH = 7.0

#: The house rcParams (applied by :func:`style` / :func:`use`).
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.color": "0.88",
    "grid.linewidth": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.6,
    "errorbar.capsize": 1.5,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "image.cmap": "viridis",
    "mathtext.fontset": "dejavusans",
}

#: Noise scales gamma are coloured on a log scale over this range (viridis).
GAMMA_RANGE = (5e-3, 8e-2)
#: Learning rates are coloured on a log scale over this range (warm map).
LR_RANGE = (1e-3, 0.3)
#: Label of the pre-training time axis.
TIME_LABEL = r"pre-training time $t = \eta \cdot \mathrm{steps}$"

_GAMMA_CMAP = matplotlib.colormaps["viridis"]
_LR_CMAP = matplotlib.colormaps["plasma"]
_DEPTH_COLORS = {1: "0.45", 2: "#1f77b4", 3: "#d62728", 4: "#2ca02c", 5: "#9467bd", 6: "#8c564b"}
_MODE_CMAP = matplotlib.colormaps["tab10"]


@contextlib.contextmanager
def style(**overrides: Any) -> Iterator[None]:
    """Context manager applying the house rcParams (:data:`RC`), plus any ``overrides``.

    >>> import matplotlib, linoverfit.plotting as lp
    >>> with lp.style():
    ...     matplotlib.rcParams["font.size"]
    8.0
    """
    with matplotlib.rc_context({**RC, **overrides}):
        yield


def use(**overrides: Any) -> None:
    """Apply the house rcParams globally (for a notebook session)."""
    matplotlib.rcParams.update({**RC, **overrides})


def subplots(nrows: int = 1, ncols: int = 1, width: float | str = "column", aspect: float = 0.75,
             **kw: Any) -> tuple[Figure, Any]:
    """A :class:`~matplotlib.figure.Figure` and its axes, without pyplot (works headless).

    Args:
      width: ``"column"`` (:data:`COLUMN_WIDTH`), ``"page"`` (:data:`PAGE_WIDTH`) or inches.
      aspect: height of one panel row over the figure width divided by ``ncols``.
      kw: passed to :meth:`~matplotlib.figure.Figure.subplots` (``sharex``, ``squeeze``, ...).

    Call inside :func:`style` so the figure picks up the house rcParams. Layout is
    ``constrained``. Returns ``(fig, axes)`` like ``pyplot.subplots``.
    """
    if isinstance(width, str):
        if width not in ("column", "page"):
            raise ValueError(f"width must be 'column', 'page' or a number of inches, got {width!r}")
        width = COLUMN_WIDTH if width == "column" else PAGE_WIDTH
    width = float(width)
    if not (width > 0 and aspect > 0):
        raise ValueError(f"width and aspect must be > 0, got {width}, {aspect}")
    height = nrows * aspect * width / ncols
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def save(fig: Figure, path: str | Path, **kw: Any) -> Path:
    """Save ``fig`` to ``path`` (PNG by default; parent folders created). Returns the path.

    No creation-date or software metadata is written, so the same figure gives the same bytes.
    Written atomically (:func:`linoverfit.files.atomic_write`): an interrupted save leaves the
    previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = kw.pop("format", None) or (path.suffix[1:].lower() or "png")
    meta = {"Software": None} if fmt == "png" else {}
    with atomic_write(path) as fh:
        fig.savefig(fh, format=fmt, metadata=meta, **kw)
    return path


# ----------------------------------------------------------------------------- colours


def _log_position(x, lo, hi) -> float:
    x = float(x)
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"colour scale needs a finite value > 0, got {x}")
    return float(np.clip((math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)), 0.0, 1.0))


def gamma_color(gamma: float) -> str:
    """Colour of a noise scale ``gamma`` (viridis on a log scale over :data:`GAMMA_RANGE`), same in every figure."""
    return mcolors.to_hex(_GAMMA_CMAP(0.9 * (1.0 - _log_position(gamma, *GAMMA_RANGE))))


def lr_color(lr: float) -> str:
    """Colour of a learning rate (plasma on a log scale over :data:`LR_RANGE`), same in every figure."""
    return mcolors.to_hex(_LR_CMAP(0.9 * _log_position(lr, *LR_RANGE)))


def depth_color(depth: int) -> str:
    """Colour of a network depth (depth 1, the no-depth baseline, is grey)."""
    return _DEPTH_COLORS.get(int(depth), mcolors.to_hex(_MODE_CMAP(int(depth) % 10)))


def mode_color(i: int) -> str:
    """Colour of teacher mode ``i`` (0-based: the largest singular value is mode 0)."""
    return mcolors.to_hex(_MODE_CMAP(int(i) % 10))


def strength_colors(n: int, cmap: str = "cividis") -> list[str]:
    """``n`` colours from light to dark for an ordered sweep (e.g. regularisation strengths, weakest first)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cm = matplotlib.colormaps[cmap]
    return [mcolors.to_hex(cm(x)) for x in np.linspace(0.85, 0.0, n)]


# ----------------------------------------------------------------------------- drawing

#: Line style of closed-form (theory) curves.
THEORY_STYLE = {"linestyle": "-", "marker": None, "zorder": 2}
#: Marker style of simulated (measured) values: open markers, no line.
SIM_STYLE = {"linestyle": "none", "marker": "o", "markerfacecolor": "none", "markeredgewidth": 0.9, "zorder": 3}


def theory(ax: Axes, x: Any, y: Any, color: Any = "k", **kw: Any) -> Line2D:
    """Draw a closed-form prediction as a solid line. Extra keywords go to ``ax.plot``."""
    return ax.plot(x, y, color=color, **{**THEORY_STYLE, **kw})[0]


def simulation(ax: Axes, x: Any, y: Any, color: Any = "k", yerr: Any = None, marker: str = "o", **kw: Any) -> Any:
    """Draw measured values as open markers (with error bars if ``yerr`` is given).

    Non-finite values (e.g. diverged fine-tuning runs) are not drawn; count them before calling
    and say so in the figure (see ``linoverfit.experiments``).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    style_ = {**SIM_STYLE, "marker": marker, **kw}
    if yerr is None:
        return ax.plot(x[ok], y[ok], color=color, **style_)[0]
    yerr = np.asarray(yerr, float)
    ok &= np.isfinite(yerr)
    return ax.errorbar(x[ok], y[ok], yerr=yerr[ok], color=color, elinewidth=0.7, **style_)


def mark_turning_point(ax: Axes, predicted: float | None = None, measured: float | None = None, color: Any = "k",
                       y_measured: float | None = None) -> list:
    """Mark a turning point: ``predicted`` T* as a dotted vertical line, ``measured`` as a star at
    ``(measured, y_measured)`` (or a dashed vertical line if ``y_measured`` is None).
    ``None`` or non-finite values are skipped (no turning point)."""
    out = []
    if predicted is not None and np.isfinite(predicted):
        out.append(ax.axvline(predicted, color=color, linestyle=":", linewidth=1.1, zorder=1))
    if measured is not None and np.isfinite(measured):
        if y_measured is None:
            out.append(ax.axvline(measured, color=color, linestyle="--", linewidth=0.9, zorder=1))
        else:
            out.append(ax.plot([measured], [y_measured], marker="*", markersize=8, color=color,
                               markeredgecolor="k", markeredgewidth=0.5, linestyle="none", zorder=4)[0])
    return out


def time_axis(ax: Axes, which: str = "x", label: str = TIME_LABEL) -> None:
    r"""Make ``which`` (``"x"`` or ``"y"``) a log axis labelled with the pre-training time :math:`t = \eta\cdot\text{steps}`."""
    if which == "x":
        ax.set_xscale("log")
        ax.set_xlabel(label)
    elif which == "y":
        ax.set_yscale("log")
        ax.set_ylabel(label)
    else:
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")


def legend(ax: Axes | Figure, colors: Mapping[str, Any] | None = None, theory_label: str | None = "theory (closed form)",
           sim_label: str | None = "simulation (GD)", turning_point: bool = False, measured_min: bool = False,
           extra: Sequence = (), title: str | None = None, **kw: Any) -> Any:
    """One legend that says what the colours mean and which curves are theory / simulation.

    ``ax`` may be an Axes or a Figure (a figure legend, e.g. ``loc="outside lower center"``).

    Args:
      colors: ``{label: colour}`` (e.g. ``{"gamma = 0.03": gamma_color(0.03)}``), drawn as colour swatches.
      theory_label / sim_label: entries for the black line / open marker (``None`` to omit).
      turning_point: add "predicted T*" (dotted line); measured_min: add "measured minimum" (star).
      extra: more ``(label, handle)`` pairs appended at the end.
      kw: passed to ``ax.legend`` (``loc``, ``ncol``, ...).
    """
    handles, labels = [], []
    for label, c in (colors or {}).items():
        handles.append(Line2D([], [], color=c, linewidth=4, solid_capstyle="butt"))
        labels.append(label)
    if theory_label:
        handles.append(Line2D([], [], color="k", **THEORY_STYLE))
        labels.append(theory_label)
    if sim_label:
        handles.append(Line2D([], [], color="k", **SIM_STYLE))
        labels.append(sim_label)
    if turning_point:
        handles.append(Line2D([], [], color="k", linestyle=":", linewidth=1.1))
        labels.append(r"predicted $T^*$")
    if measured_min:
        handles.append(Line2D([], [], color="k", marker="*", markersize=8, markeredgecolor="k",
                              markeredgewidth=0.5, linestyle="none"))
        labels.append("measured minimum")
    for label, h in extra:
        handles.append(h)
        labels.append(label)
    return ax.legend(handles, labels, title=title, **kw)


def panel_label(ax: Axes, text: str) -> None:
    """Bold panel letter ``(a)``, ``(b)``, ... in the top-left corner outside the axes."""
    ax.set_title(text, loc="left", fontweight="bold")
