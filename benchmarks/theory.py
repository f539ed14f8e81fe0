"""Theory against the simulation it predicts, timed in the same run on the same machine (issue 10, acceptance 6).

Usage (from the repository root)::

    python -m benchmarks.theory [--repeat 2] [--skip-sim] [--json out.json]

Rows (float64, warm: every timing is the best of ``--repeat`` calls after one warm-up call, so jit
compilation is excluded on both sides):

* fine-tuning sweep of W1 (48 checkpoints x 3 lrs x 1000 steps, widths 64, one seed) from a
  Gaussian-init pre-training run, depth 2 and depth 3: ``lo.finetune`` against
  ``lo.theory.forgetting.predict_finetune`` from the run's own layers as gradient flow (``gd_order=0``), with
  its default (``gd_order="auto"``: GD itself), and at depth 2 in closed form from the own layers
  (``method="closed"``, lambda-balanced) and from the balanced factors of the maps alone; each
  theory row also prints its largest relative error in the losses after fine-tuning against the
  simulation;
* ``lo.theory.turning.turning_point`` (perturbation, 64 modes) at depths 2, 3 and 4 (its simulation would
  need ``T* / lr`` pre-training steps: printed, not run);
* the explorer's fine-tuning redraw (``linoverfit.explorer.closed_form_curves(mode="finetune")``).

The machine this runs on may be shared: report its load (printed) with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .timing import timed


def _best(fn, repeat, box=None):
    """Best wall time of ``repeat`` warm calls; the last result goes to ``box["out"]``."""
    runs, out = timed(fn, repeat)
    if box is not None:
        box["out"] = out
    return min(runs)


def _error(pred, sim):
    """Largest relative error of the predicted losses after fine-tuning against the simulated ones."""
    return max(float(np.max(np.abs(np.asarray(getattr(pred, n)) / np.asarray(getattr(sim, n)) - 1)))
               for n in ("pretrain_loss_after", "finetune_loss_after"))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.theory", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--skip-sim", action="store_true", help="time the theory only")
    p.add_argument("--depths", default="2,3", help="fine-tuning sweep depths")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    os.environ.setdefault("LINOVERFIT_PROGRESS", "0")  # no progress bars between the timings
    import jax

    jax.config.update("jax_enable_x64", True)
    import linoverfit as lo
    from linoverfit import explorer

    from .workloads import W1, build

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = {}

    def row(name, seconds, ref=None, err=None):
        rows[name] = seconds if err is None else {"seconds": seconds, "max_rel_error_vs_simulation": err}
        ratio = f"   {ref / seconds:6.1f}x faster than the simulation" if ref else ""
        acc = f"   loss-after error vs simulation {100 * err:.3g}%" if err is not None else ""
        print(f"{name:68s} {seconds:9.3f} s{ratio}{acc}", flush=True)

    for depth in [int(x) for x in args.depths.split(",")]:
        spec = W1.with_(seeds=1, depth=depth) if depth == 2 else W1.with_(seeds=1, depth=depth, total_steps=4096, init_scale=0.05)
        net, task, ft, W0 = build(spec, dtype=np.float64)
        W0 = tuple(w[0] for w in W0) if W0[0].ndim == 3 else W0
        run = lo.pretrain(net, W0, task, lr=spec.lr, checkpoints=spec.checkpoints)
        lrs, steps = spec.ft_lrs, spec.ft_steps
        sim, box = None, {}
        if not args.skip_sim:
            sim = _best(lambda: jax.block_until_ready(lo.finetune(net, run, ft, lr=lrs, steps=steps)), args.repeat, box)
            row(f"depth {depth}: lo.finetune (simulation)", sim)
        simulated = box.get("out")

        def theory_row(name, fn):
            out = {}
            seconds = _best(fn, args.repeat, out)
            row(f"depth {depth}: predict_finetune, {name}", seconds, sim,
                None if simulated is None else _error(out["out"], simulated))

        theory_row("own layers, gradient flow", lambda: lo.theory.forgetting.predict_finetune(run, ft, lr=lrs, steps=steps, gd_order=0))
        theory_row("own layers, gd_order='auto' (default)", lambda: lo.theory.forgetting.predict_finetune(run, ft, lr=lrs, steps=steps))
        if depth == 2:
            P = np.asarray(run.end_to_end)
            theory_row("own layers, closed form (lambda-balanced)", lambda: lo.theory.forgetting.predict_finetune(
                run, ft, lr=lrs, steps=steps, gd_order=0, method="closed"))
            theory_row("balanced maps, closed form", lambda: lo.theory.forgetting.predict_finetune(
                P, ft, lr=lrs, steps=steps, depth=2, pretrain_task=task, gd_order=0, method="closed"))

    d = 64
    sigma = 1.0 / np.arange(1, d + 1)
    for depth, s0 in ((2, 1e-6), (3, 1e-9), (4, 1e-12)):
        box = {}
        seconds = _best(lambda: lo.theory.turning.turning_point(sigma, gamma=0.03, widths=(d,) * (depth + 1), s0=s0),
                        args.repeat, box)
        row(f"depth {depth}: turning_point, 64 modes (sim: {box['out'].t_star / 0.05:.3g} steps at lr 0.05, not run)", seconds)

    row("explorer fine-tuning redraw (closed_form_curves, depth 2)", _best(
        lambda: explorer.closed_form_curves("finetune"), args.repeat))
    row("explorer fine-tuning redraw (closed_form_curves, depth 3)", _best(
        lambda: explorer.closed_form_curves("finetune", depth=3, s0=1e-4), args.repeat))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
