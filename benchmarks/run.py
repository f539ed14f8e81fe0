"""Benchmark W1 / W2 through the public API, against the machine's matmul rate and eager PyTorch.

Usage (from the repository root)::

    python -m benchmarks.run W1 [--torch] [--mlp] [--cpu-devices N] [--repeat 3]
    python -m benchmarks.run W2 [--ft-steps 50] [--memory]
    python -m benchmarks.run all --torch --json results.json

Per phase (pre-train, fine-tune, sensitivity) it prints: compile time (first call minus a
second, cached call), run time (best cached call), steps/s, achieved GFLOP/s (counted matmul
FLOPs, see :mod:`benchmarks.workloads`, over the run time), peak RSS, and whether a second call
with new *values* recompiled. The reference is the float32 GFLOP/s of a large square matmul
measured in the same process. ``--torch`` also runs :mod:`benchmarks.torch_w1` (W1 only) and prints
the end-to-end ratio, JAX's side *including* compilation. ``--mlp`` also runs the W1 schedule on a
tanh :class:`lo.MLP` of the same widths (trained on ``--mlp-samples`` samples: it has no population
loss) and prints its time over the DeepLinear W1's, per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=["W1", "W2", "all"], nargs="?", default="W1")
    p.add_argument("--torch", action="store_true", help="also run the eager PyTorch W1 loop and print the ratio")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch.set_num_threads for --torch; default 1, torch's fastest setting for these tiny matmuls "
                        "(its default, one thread per core, was slower here and much slower on a loaded machine); "
                        "0 = torch's default")
    p.add_argument("--mlp", action="store_true",
                   help="also run W1's schedule on a tanh MLP of the same widths and print the ratio MLP / DeepLinear")
    p.add_argument("--mlp-samples", type=int, default=None,
                   help="samples the MLP is trained on (default benchmarks.workloads.MLP_SAMPLES = 64)")
    p.add_argument("--mlp-activation", default="tanh", help="activation of the --mlp network (default tanh)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="expose N CPU devices (lo.parallel.use_cpu_devices) so sweeps shard over cores; 0 = one per core")
    p.add_argument("--repeat", type=int, default=1, help="cached calls per phase; the best is reported")
    p.add_argument("--ft-steps", type=int, default=None,
                   help="fine-tuning steps to time (default: W1 1000; W2 50, then extrapolated to 1000)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="pre-training steps (default: the workload's 32768)")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: pretrain,finetune,sensitivity")
    p.add_argument("--memory", action="store_true",
                   help="also measure peak RSS of pre-training with all checkpoints kept vs metrics only (fresh processes)")
    p.add_argument("--memory-steps", type=int, default=2048,
                   help="pre-training steps for --memory (memory does not depend on them; default 2048)")
    p.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    return p.parse_args(argv)


def _rss_reset():
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # lifetime peak (KiB on Linux)


def _load():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def matmul_peak(n: int = 4096, repeat: int = 5) -> float:
    """float32 GFLOP/s of one large square matmul ``(n, n) @ (n, n)`` on the default device, best of ``repeat``."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class _Compiles:
    """Counts XLA backend compilations (jax.monitoring event)."""

    def __init__(self):
        import jax.monitoring

        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, name, *a, **k):
        if name == "/jax/core/compile/backend_compile_duration":
            self.n += 1


def _block(x):
    import jax

    return jax.block_until_ready(jax.tree.leaves(x.to_dict() if hasattr(x, "to_dict") else x))


def _phase(name, first, again, flops, steps, repeat, compiles):
    """Time ``first()`` (compile + run), then ``again()`` ``repeat`` times (cached, new values)."""
    _rss_reset()
    t0 = time.perf_counter()
    out = first()
    _block(out)
    t_first = time.perf_counter() - t0
    c0 = compiles.n
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        _block(again())
        best = min(best, time.perf_counter() - t0)
    row = {
        "phase": name,
        "first_s": t_first,
        "compile_s": max(t_first - best, 0.0),
        "run_s": best,
        "steps": steps,
        "steps_per_s": steps / best,
        "gflop": flops / 1e9,
        "gflops": flops / best / 1e9,
        "recompiles_on_new_values": compiles.n - c0,
        "peak_rss_mib": _rss_peak_mib(),
    }
    return out, row


def run_workload(spec, args, compiles, peak, mlp_samples=None):
    """Time the three phases of ``spec`` (of its MLP variant on ``mlp_samples`` samples when given)."""
    import jax

    import linoverfit as lo
    from benchmarks import workloads

    total = spec.total_steps if args.pretrain_steps is None else args.pretrain_steps
    ck = spec.checkpoints if args.pretrain_steps is None else spec.checkpoints_for(total)
    full_ft = spec.ft_steps
    ft_steps = args.ft_steps or (full_ft if spec.width <= 64 else 50)
    fl = workloads.phase_flops(spec, ft_steps=ft_steps, total_steps=total, mlp_samples=mlp_samples)
    skip = set(filter(None, args.skip.split(",")))
    if mlp_samples is None:
        build = workloads.build
    else:
        def build(spec, key=0):
            return workloads.build_mlp(spec, mlp_samples, getattr(args, "mlp_activation", "tanh"), key=key)
    net, task, ft, W0 = build(spec)
    # the same shapes with other values (teacher, init, lr, gamma): must not recompile
    net_b, task_b, ft_b, W0_b = build(spec, key=1)
    rows = []

    pre, row = _phase(
        "pretrain",
        lambda: lo.pretrain(net, W0, task, lr=spec.lr, checkpoints=ck),
        lambda: lo.pretrain(net, W0_b, task_b, lr=spec.lr * 1.01, checkpoints=ck),
        fl["pretrain"]["flops"], fl["pretrain"]["steps"], args.repeat, compiles,
    )
    rows.append(row)
    if "finetune" not in skip:
        _, row = _phase(
            "finetune",
            lambda: lo.finetune(net, pre, ft, lr=spec.ft_lrs, steps=ft_steps),
            lambda: lo.finetune(net, pre, ft_b, lr=tuple(1.01 * r for r in spec.ft_lrs), steps=ft_steps),
            fl["finetune"]["flops"], fl["finetune"]["steps"], args.repeat, compiles,
        )
        if ft_steps != full_ft:
            row["note"] = f"timed {ft_steps} of {full_ft} steps; run_s/first_s extrapolated x{full_ft / ft_steps:g}"
            scale = full_ft / ft_steps
            row["timed_ft_steps"] = ft_steps
            row["run_s"] *= scale
            row["first_s"] = row["compile_s"] + row["run_s"]
            row["steps"] = int(row["steps"] * scale)
            row["gflop"] *= scale
        rows.append(row)
    if "sensitivity" not in skip:
        _, row = _phase(
            "sensitivity",
            lambda: lo.sensitivity.gaussian(net, pre, gamma=spec.gammas, samples=spec.samples, key=jax.random.key(0)),
            lambda: lo.sensitivity.gaussian(net, pre, gamma=tuple(1.1 * g for g in spec.gammas), samples=spec.samples,
                                            key=jax.random.key(1)),
            fl["sensitivity"]["flops"], fl["sensitivity"]["steps"], args.repeat, compiles,
        )
        rows.append(row)
    for r in rows:
        r["frac_of_matmul_peak"] = r["gflops"] / peak
    total_row = {
        "phase": "total",
        "first_s": sum(r["first_s"] for r in rows),
        "compile_s": sum(r["compile_s"] for r in rows),
        "run_s": sum(r["run_s"] for r in rows),
        "gflop": sum(r["gflop"] for r in rows),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
    }
    total_row["gflops"] = total_row["gflop"] / total_row["run_s"]
    total_row["frac_of_matmul_peak"] = total_row["gflops"] / peak
    rows.append(total_row)
    name = spec.name if mlp_samples is None else f"{spec.name}-MLP"
    return {"workload": name, "pretrain_steps": total, "checkpoints": len(ck), "ft_steps_timed": ft_steps,
            "rows": rows, "_pre": pre, "_inputs": (task, ft, W0)}


def _fmt(rows):
    head = f"{'phase':<12}{'compile s':>10}{'run s':>9}{'first s':>9}{'steps/s':>11}{'GFLOP':>9}{'GFLOP/s':>9}{'% peak':>8}{'RSS MiB':>9}{'recomp':>7}"
    out = [head, "-" * len(head)]
    for r in rows:
        sps = f"{r['steps_per_s']:.3g}" if "steps_per_s" in r else ""
        rec = str(r.get("recompiles_on_new_values", ""))
        out.append(
            f"{r['phase']:<12}{r['compile_s']:>10.2f}{r['run_s']:>9.2f}{r['first_s']:>9.2f}{sps:>11}{r['gflop']:>9.1f}"
            f"{r['gflops']:>9.1f}{100 * r['frac_of_matmul_peak']:>7.0f}%{r['peak_rss_mib']:>9.0f}{rec:>7}"
        )
        if "note" in r:
            out.append(f"{'':<12}({r['note']})")
    return "\n".join(out)


def main(argv=None):
    args = _parse(argv)
    # no progress bars (they would only appear on the slower phases and clutter the tables); the
    # ticks are compiled in either way, so this does not change what is timed
    os.environ.setdefault("LINOVERFIT_PROGRESS", "0")
    if args.cpu_devices is not None:
        import linoverfit.parallel as par

        par.use_cpu_devices(None if args.cpu_devices == 0 else args.cpu_devices)
    import jax

    from benchmarks import workloads

    compiles = _Compiles()
    print(f"linoverfit benchmarks | jax {jax.__version__} | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} CPUs | devices: {len(jax.devices())} x {jax.devices()[0].platform} | "
          f"load avg {'/'.join(f'{x:.2f}' for x in _load())}")
    peak = matmul_peak()
    print(f"reference: float32 4096x4096 matmul = {peak:.1f} GFLOP/s (jax.jit(jnp.matmul), best of 5)\n")
    report = {"jax": jax.__version__, "cpu_count": os.cpu_count(), "devices": len(jax.devices()),
              "platform": jax.devices()[0].platform, "load_before": _load(), "matmul_peak_gflops_start": peak,
              "workloads": []}
    names = ["W1", "W2"] if args.workload == "all" else [args.workload]
    for name in names:
        spec = workloads.WORKLOADS[name]
        res = run_workload(spec, args, compiles, peak)
        # the reference again after the workload: on a shared machine take the better of the two
        again = matmul_peak()
        if again > peak:
            print(f"reference re-measured after {name}: {again:.1f} GFLOP/s (used below)")
            peak = again
            for r in res["rows"]:
                r["frac_of_matmul_peak"] = r["gflops"] / peak
        res["matmul_peak_gflops"] = peak
        print(f"== {name}: widths {spec.widths}, {spec.seeds} seeds, {res['checkpoints']} checkpoints to step "
              f"{res['pretrain_steps']}, fine-tune {len(spec.ft_lrs)} lrs x {spec.ft_steps} steps, "
              f"sensitivity {len(spec.gammas)} gammas x {spec.samples} samples")
        print(_fmt(res["rows"]), flush=True)
        if args.mlp and name == "W1":
            res["mlp"] = _mlp_compare(spec, res, args, compiles, peak)
        if args.torch and name == "W1":
            res["torch"] = _torch_compare(spec, res, args)
        if args.memory:
            res["memory"] = _memory(name, args.memory_steps)
        print()
        report["workloads"].append({k: v for k, v in res.items() if not k.startswith("_")})
    report["load_after"] = _load()
    print(f"load avg after: {'/'.join(f'{x:.2f}' for x in report['load_after'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)
    return report


def _mlp_compare(spec, res, args, compiles, peak):
    """The W1 schedule on a tanh MLP of the same widths (same teacher, shift, init), on a fixed sample."""
    from benchmarks import workloads

    n = args.mlp_samples or workloads.MLP_SAMPLES
    mlp = run_workload(spec, args, compiles, peak, mlp_samples=n)
    print(f"== W1 on a {args.mlp_activation} MLP {spec.widths} (no population loss: full-batch GD on {n} samples "
          f"of the teacher; fine-tuning on {n} samples of the shifted task; sensitivity on the {n} samples)")
    print(_fmt(mlp["rows"]))
    lin = {r["phase"]: r for r in res["rows"]}
    ratios = {}
    for r in mlp["rows"]:
        if r["phase"] in lin:
            ratios[r["phase"]] = {"run": r["run_s"] / lin[r["phase"]]["run_s"],
                                  "first": r["first_s"] / lin[r["phase"]]["first_s"]}
            print(f"  MLP / DeepLinear {r['phase']:<12} cached {r['run_s']:7.2f} / {lin[r['phase']]['run_s']:5.2f} s "
                  f"= {ratios[r['phase']]['run']:4.2f}x | incl. compile {r['first_s']:7.2f} / "
                  f"{lin[r['phase']]['first_s']:5.2f} s = {ratios[r['phase']]['first']:4.2f}x", flush=True)
    return {"samples": n, "activation": args.mlp_activation, "ratios": ratios,
            **{k: v for k, v in mlp.items() if not k.startswith("_")}}


def _memory(name, steps):
    from benchmarks.memory import measure_subprocess

    out = {mode: measure_subprocess(name, mode, steps) for mode in ("keep", "metrics")}
    k, m = out["keep"], out["metrics"]
    print(f"memory, pre-training {name} ({k['checkpoints']} checkpoints; fresh process each; {steps} steps, "
          f"memory does not depend on them): one checkpoint = {k['one_checkpoint_mib']:.1f} MiB, "
          f"all = {k['all_checkpoints_mib']:.0f} MiB")
    print(f"  keep_weights=True : peak RSS {k['peak_mib']:7.0f} MiB")
    print(f"  keep_weights=False: peak RSS {m['peak_mib']:7.0f} MiB, of which the run itself "
          f"{m['run_growth_mib']:.1f} MiB above the runtime + compiled program ({m['baseline_mib']:.0f} MiB)")
    return out


def _torch_compare(spec, res, args):
    import numpy as np

    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch not installed: pip install -e .[bench]  (installs torch==2.13.0, CPU build)")
        return None
    from benchmarks.torch_w1 import run_w1

    task, ft, W0 = res["_inputs"]
    times, out = run_w1(spec, np.asarray(task.teacher), np.asarray(ft.teacher), tuple(np.asarray(w) for w in W0),
                        ft_steps=res["ft_steps_timed"], pretrain_steps=args.pretrain_steps, threads=args.torch_threads or None)
    jax_first = {r["phase"]: r["first_s"] for r in res["rows"]}
    jax_run = {r["phase"]: r["run_s"] for r in res["rows"]}
    print(f"eager PyTorch {__import__('torch').__version__} ({__import__('torch').get_num_threads()} threads), same W1:")
    for ph in ("pretrain", "finetune", "sensitivity", "total"):
        if ph in jax_first:
            print(f"  {ph:<12} torch {times[ph]:8.2f} s | jax incl. compile {jax_first[ph]:7.2f} s "
                  f"-> {times[ph] / jax_first[ph]:5.1f}x | jax cached {jax_run[ph]:7.2f} s -> {times[ph] / jax_run[ph]:5.1f}x")
    # agreement: both compute the same pre-training losses up to float32 round-off (relative to the
    # initial loss: late checkpoints fit the teacher to ~1e-8, below float32 resolution of the scale)
    pre = np.asarray(res["_pre"].loss)
    rel = float(np.max(np.abs(pre - out["pretrain_loss"])) / np.max(np.abs(pre[0])))
    print(f"  sanity: max |pre-training loss, torch - jax| / initial loss = {rel:.1e}")
    return {"times": times, "ratio_incl_compile": times["total"] / jax_first["total"],
            "ratio_cached": times["total"] / jax_run["total"], "pretrain_loss_rel_diff": rel}


if __name__ == "__main__":
    main()
