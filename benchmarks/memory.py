"""Peak memory of pre-training with every checkpoint's weights kept vs metrics only.

Each mode runs in a fresh process (``python -m benchmarks.memory W2 keep|metrics [steps]``) so
allocator caches of other phases do not count. It prints one JSON line: resident memory once JAX
is up and the inputs are built (``start_mib``); after compiling the program with a tiny warm-up
run of the same shapes (``baseline_mib``); the peak during the measured run (``peak_mib``, the
kernel's peak counter is reset just before it) and ``run_growth_mib`` = peak - baseline; and the
size of the weights of one checkpoint and of all checkpoints. In ``keep`` mode the warm-up's own
checkpoints are freed but stay in the allocator (so its baseline already holds them): compare the
two modes by ``peak_mib``. In ``metrics`` mode ``run_growth_mib`` is what the run needs beyond the
runtime and the compiled program. Memory does not depend on the number of steps between checkpoints, so the step count may be reduced
(default: the workload's, 32768).
"""

from __future__ import annotations

import json
import subprocess
import sys


def _status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure(name: str, mode: str, steps: int | None = None) -> dict:
    import jax
    import numpy as np

    import linoverfit as lo
    from benchmarks import workloads

    spec = workloads.WORKLOADS[name]
    total = steps or spec.total_steps
    ck = spec.checkpoints_for(total)
    net, task, _, W0 = workloads.build(spec)
    keep = mode == "keep"
    start = _status("VmRSS")
    # compile first: step counts are values, so checkpoints 1..C compile the same program in no time
    warm = lo.pretrain(net, W0, task, lr=spec.lr, checkpoints=np.arange(1, len(ck) + 1), keep_weights=keep)
    jax.block_until_ready(warm.loss)
    del warm
    # the baseline: JAX up, program compiled, inputs built
    baseline = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    run = lo.pretrain(net, W0, task, lr=spec.lr, checkpoints=ck, keep_weights=keep)
    jax.block_until_ready(run.loss)
    if run.weights is not None:
        jax.block_until_ready(run.weights)
    peak = _status("VmHWM")
    one_ck = sum(int(np.prod(s)) for s in net.shapes) * spec.seeds * 4 / 2**20  # float32, all seeds
    return {"workload": name, "mode": mode, "steps": total, "checkpoints": len(ck), "start_mib": start,
            "baseline_mib": baseline, "peak_mib": peak,
            "run_growth_mib": peak - baseline, "one_checkpoint_mib": one_ck,
            "all_checkpoints_mib": one_ck * len(ck)}


def measure_subprocess(name: str, mode: str, steps: int | None = None) -> dict:
    """Run :func:`measure` in a fresh interpreter and return its result."""
    cmd = [sys.executable, "-m", "benchmarks.memory", name, mode] + ([str(steps)] if steps else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    name, mode = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(measure(name, mode, steps)))
