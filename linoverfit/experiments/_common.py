"""Shared plumbing of the figure experiments: configs, progress, measured turning points, output files.

Nothing here simulates or computes theory: that is the public API (``lo.pretrain``,
``lo.finetune``, ``lo.sensitivity``, ``lo.theory``). This module only resolves configs, reports
progress, reads turning points off measured curves, and writes the ``.png`` / ``.npz`` outputs
and JSON-ready summaries.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ..files import atomic_write

__all__ = [
    "resolve_config",
    "Stages",
    "measured_minimum",
    "DEPTH",
    "check",
    "t_star_agreement",
    "degradation_percent",
    "rel_diff",
    "rounded",
    "save_data",
    "figure_paths",
    "script_main",
]


def resolve_config(default: dict, quick_overrides: dict, quick: bool = False, overrides: dict | None = None) -> dict:
    """``default``, updated by ``quick_overrides`` when ``quick``, then by ``overrides`` (unknown keys are an error)."""
    cfg = dict(default)
    if quick:
        cfg.update(quick_overrides)
    for k, v in (overrides or {}).items():
        if k not in default:
            raise KeyError(f"unknown config key {k!r}; known keys: {', '.join(sorted(default))}")
        cfg[k] = v
    return cfg


class Stages:
    """Progress over the stages of one figure (a tqdm bar when ``bar`` is given, silent otherwise).

    ``with stages("pretrain"): ...`` advances the bar by one when the block ends, showing the
    stage name while it runs.
    """

    def __init__(self, total: int, bar=None):
        self.total, self.bar, self.done = total, bar, 0
        if bar is not None:
            bar.reset(total=total)

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=True)
        yield
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def loop(self, items, name: str):
        """Iterate ``items`` as one stage per item (for loops over configurations, e.g. regularisation strengths)."""
        for i, item in enumerate(items):
            with self(f"{name} {i + 1}/{len(items)}"):
                yield item


def measured_minimum(t, y):
    """Turning point read off a measured U-curve on a log-spaced grid.

    Returns ``dict(t=..., index=..., interior=...)``: the grid argmin, refined by the vertex of the
    parabola through the three grid points around it in ``log t`` (the grid is log-spaced, so the
    refinement is in the natural variable), and whether the minimum is strictly inside the grid.
    Non-finite entries are ignored. ``t`` is NaN when no finite point exists.
    """
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(y) & np.isfinite(t) & (t > 0)
    if not np.any(ok):
        return {"t": math.nan, "t_grid": math.nan, "index": -1, "interior": False}
    idx = np.flatnonzero(ok)
    i = int(idx[np.argmin(y[ok])])
    interior = bool(0 < i < len(t) - 1 and ok[i - 1] and ok[i + 1])
    t_star = float(t[i])
    if interior:
        x = np.log(t[i - 1 : i + 2])
        a, b, _ = np.polyfit(x, y[i - 1 : i + 2], 2)
        if a > 0:
            t_star = float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
    return {"t": t_star, "t_grid": float(t[i]), "index": i, "interior": interior}


#: Depth of every figure's turning points (lo.theory.u_curve): a curve rising less than 1% after its
#: interior minimum is not a U-curve.
DEPTH = 0.01


def check(what: str, value, *, at_most=None, expected=None) -> dict:
    """One acceptance check of a figure: ``value <= at_most`` or ``value == expected``.

    Returns ``dict(what, value, at_most | expected, ok)``; a missing or NaN value fails. Figures put a
    list of them in ``summary["checks"]``; ``linoverfit figures`` reports every failed one on stderr
    and exits non-zero.
    """
    if (at_most is None) == (expected is None):
        raise ValueError("give exactly one of at_most= or expected=")
    if at_most is not None:
        ok = value is not None and math.isfinite(float(value)) and float(value) <= at_most
        return {"what": what, "value": value, "at_most": at_most, "ok": bool(ok)}
    return {"what": what, "value": value, "expected": expected, "ok": bool(value == expected)}


def t_star_agreement(t, simulated, predicted_at_t, t_star_predicted, measured, tolerance) -> dict:
    """Does a predicted T* agree with the simulated curve's minimum ``measured`` (a ``UCurve``)?

    A minimum is located only up to the flatness of the curve: where prediction and simulation differ by
    ``eps`` (max relative difference at the checkpoints within ``measured.interval``), every t at which the
    simulated curve is within ``2 eps`` of its minimum is as good a T*. So T* agrees when
    ``|T*_pred - T*_meas| / T*_meas <= tolerance``, or when the simulated curve at the predicted T*
    (linear in log t between checkpoints) is within ``2 eps`` of its minimum.

    Returns ``dict(rel_error, rel_error_percent, regret_at_predicted_percent, curve_rel_error_near_min_percent, within_tolerance)``.
    """
    t = np.asarray(t, float)
    y = np.asarray(simulated, float)
    yp = np.asarray(predicted_at_t, float)
    rel = rel_diff(t_star_predicted, measured.t_star)
    near = (t >= measured.interval[0]) & (t <= measured.interval[1]) & np.isfinite(y)
    eps = float(np.max(np.abs(yp[near] / y[near] - 1))) if np.any(near) else math.nan
    ok = np.isfinite(y) & (t > 0)
    regret = float(np.interp(np.log(t_star_predicted), np.log(t[ok]), y[ok]) / measured.min_value - 1) \
        if t_star_predicted is not None and t_star_predicted > 0 else math.nan
    agree = bool(rel <= tolerance or regret <= 2 * eps)
    return {"rel_error": rel, "rel_error_percent": 100 * rel, "regret_at_predicted_percent": 100 * regret,
            "curve_rel_error_near_min_percent": 100 * eps, "within_tolerance": agree}


def degradation_percent(y, index=None) -> float:
    """How far the last point of a U-curve lies above its minimum, in % of the minimum."""
    y = np.asarray(y, float)
    if index is None:
        index = int(np.nanargmin(y))
    return float(100.0 * (y[-1] - y[index]) / y[index])


def draw_keys(key, n: int) -> list:
    """``n`` keys for repeated random draws of one quantity: ``key`` itself first (so draw 0 is the
    figure's headline draw), then ``n - 1`` fresh keys derived from it."""
    return [key] + list(jax.random.split(jax.random.fold_in(key, 1), n - 1))


def spread(values) -> dict:
    """Median and spread of a headline number over random draws: ``dict(median, min, max, n, values)``
    (NaN draws are kept in ``values`` and left out of the statistics)."""
    v = np.asarray(values, float)
    ok = v[np.isfinite(v)]
    stats = (float(np.median(ok)), float(ok.min()), float(ok.max())) if ok.size else (math.nan,) * 3
    return {"median": stats[0], "min": stats[1], "max": stats[2], "n": int(v.size), "values": v.tolist()}


def rel_diff(predicted, measured) -> float:
    """``|predicted - measured| / measured`` (NaN when either is missing)."""
    if predicted is None or measured is None:
        return math.nan
    predicted, measured = float(predicted), float(measured)
    if not (math.isfinite(predicted) and math.isfinite(measured)) or measured == 0:
        return math.nan
    return abs(predicted - measured) / abs(measured)


def rounded(obj, digits: int = 4):
    """``obj`` made JSON-ready and deterministic: floats to ``digits`` significant digits, NaN/inf -> None,
    numpy scalars/arrays to Python, dict keys to str."""
    if isinstance(obj, dict):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return rounded(obj.tolist(), digits)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}")
    return obj


def figure_paths(out_dir, number: str, name: str):
    """``(png, npz)`` paths ``out_dir/F<n>_<name>.png`` / ``.npz``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{number}_{name}"
    return out_dir / f"{stem}.png", out_dir / f"{stem}.npz"


def save_data(path, **arrays) -> Path:
    """Write the plotted data as one ``.npz`` (values converted with ``np.asarray``; ``None`` skipped),
    atomically (:func:`linoverfit.files.atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    return path


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def script_main(module, argv=None) -> dict:
    """Command line of one figure script: ``[--out DIR] [--quick] [--seed N] [--set key=value ...]``."""
    p = argparse.ArgumentParser(
        prog=f"{module.NUMBER}_{module.NAME}",
        description=f"{module.NUMBER}: {module.TITLE}. Defaults are CONFIG in {module.__name__}; "
        "override any entry with --set key=value.",
    )
    p.add_argument("--out", default="paper_figs", help="output folder (default: paper_figs)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds), for tests")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a CONFIG entry, e.g. --set gamma=0.05 (Python literal values)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            p.error(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v.strip())
    try:
        cfg = resolve_config(module.CONFIG, module.QUICK, args.quick, overrides)
    except KeyError as err:
        p.error(str(err.args[0]))
    if args.show_config:
        print(json.dumps(cfg, indent=2, default=str))
        return {}
    from tqdm.auto import tqdm

    start = time.perf_counter()
    with tqdm(total=1, desc=module.NUMBER, file=sys.stderr) as bar:
        summary = module.run(args.out, quick=args.quick, seed=args.seed, config=overrides, progress=bar)
    print(json.dumps(rounded(summary), indent=2))
    print(f"{module.NUMBER} done in {time.perf_counter() - start:.1f} s -> {args.out}", file=sys.stderr)
    return summary
