"""Timing of a whole predicted U-curve (issue 3, acceptance 5): 1000 times x 64 modes, after warm-up.

Usage (from the repository root)::

    python -m benchmarks.theory_curve [--repeat 50] [--json out.json]

Times :func:`linoverfit.theory.curves.perturbed_loss_curve` (depth 2 is closed form; the target is < 10 ms)
and, for reference, depth 3 (the mode ODE through scipy), the turning point and the exact
perturbed loss on 48 checkpoints of the W1 shape. Prints the best and the median of ``--repeat``
cached calls in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from .timing import timed


def _time(fn, repeat):
    """Best and median of ``repeat`` warm calls, in milliseconds."""
    runs = [1e3 * r for r in timed(fn, repeat)[0]]
    return min(runs), statistics.median(runs)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.theory_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import linoverfit as lo

    d = 64
    sigma = 1.0 / np.arange(1, d + 1)  # W1 teacher spectrum
    t = np.geomspace(1.0, 0.05 * 32768, 1000)  # W1 horizon: lr 0.05 x 32768 steps
    s0 = 1e-6  # scale 1e-3, depth 2
    rng = np.random.default_rng(0)
    weights = tuple(rng.normal(size=(48, d, d)) * 0.1 for _ in range(2))
    teacher = rng.normal(size=(d, d))

    cases = {
        "U-curve depth 2 (1000 t x 64 modes, 2 gammas)": lambda: lo.theory.curves.perturbed_loss_curve(
            sigma, t, np.array([0.01, 0.03]), widths=(d, d, d), s0=s0),
        "U-curve depth 3 (1000 t x 64 modes, ODE)": lambda: lo.theory.curves.perturbed_loss_curve(
            sigma, t, 0.01, widths=(d, d, d, d), s0=1e-9),  # scale 1e-3, depth 3
        "turning point depth 2 (4096-point grid + brentq)": lambda: lo.theory.turning.turning_point(
            sigma, gamma=0.03, widths=(d, d, d), s0=s0),
        "exact E[L(W + gamma E)] on 48 checkpoints 64x64x64": lambda: np.asarray(
            lo.theory.expected_perturbed_loss(weights, teacher, gamma=np.array([0.01, 0.03]))),
    }
    results = {}
    for name, fn in cases.items():
        best, median = _time(fn, args.repeat)
        results[name] = {"best_ms": best, "median_ms": median}
        print(f"{name:55s} best {best:8.2f} ms   median {median:8.2f} ms")
    target = results["U-curve depth 2 (1000 t x 64 modes, 2 gammas)"]["median_ms"]
    print(f"acceptance 5 (< 10 ms): {'PASS' if target < 10 else 'FAIL'} ({target:.2f} ms median)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
