"""CI step: the declared dependency floors work.

Reads the ``>=`` floors of ``[project] dependencies`` in pyproject.toml (plus ``jaxlib`` at the
``jax`` floor), installs linoverfit with exactly those versions (a pip constraints file) into a
fresh virtual environment, and runs there the README quickstart and a sharded sweep on two
simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), which must
reproduce the one-device sweep to float32 round-off. Usage (from anywhere)::

    python .ci/floors.py [--venv DIR]

Exits non-zero on any failure; prints the versions it tested and the time each part took.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHARDED = """
import jax, numpy as np, linoverfit as lo
assert len(jax.devices()) == 2, jax.devices()
task = lo.tasks.power_law(8, 8, key=jax.random.key(0))
ft = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1), scale="absolute")
net = lo.DeepLinear((8, 8, 8))
W0 = net.init(jax.random.key(2), scale=1e-3, seeds=2)
ck = lo.log_checkpoints(2000, 8)
for devices in (2, 1):
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck, layout=lo.Layout(devices=devices))
    ftr = lo.finetune(net, run, ft, lr=(0.01, 0.03), steps=50, layout=lo.Layout(devices=devices))
    sens = lo.sensitivity.gaussian(net, run, gamma=(0.01,), samples=16, key=jax.random.key(3), layout=lo.Layout(devices=devices))
    out = [np.asarray(x) for x in (run.loss, ftr.pretrain_loss_after, sens.sensitivity)]
    if devices == 2:
        sharded = out
for a, b in zip(sharded, out):
    # float32: pre-training vmaps a device's seeds together (2 on one device, 1 per device on two),
    # so the matmul batching and its round-off differ; 1e-5 relative to the curve's scale is ~100 ulp
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
print("sharded on 2 devices = 1 device:", jax.__version__, [d.id for d in jax.devices()])
"""


def floors(pyproject: str) -> list[str]:
    """``["jax==0.6.1", "jaxlib==0.6.1", ...]`` from the ``>=`` floors of the dependencies."""
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    pins = []
    for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)>=([^",;\s]+)"', deps):
        pins.append(f"{name}=={version}")
        if name == "jax":
            pins.append(f"jaxlib=={version}")
    if not pins:
        raise SystemExit("no >= floors found in pyproject.toml dependencies")
    return pins


def _norm(version: str | None) -> tuple:
    """``"4.66"`` and ``"4.66.0"`` compare equal (PEP 440 zero padding)."""
    parts = [int(x) if x.isdigit() else x for x in (version or "").split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def quickstart(readme: str) -> str:
    return re.search(r"<!-- quickstart:start -->\s*```python\n(.*?)```", readme, re.S).group(1)


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=None, help="where to create the environment (default: a temporary folder)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    pins = floors((ROOT / "pyproject.toml").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="linoverfit-floors-"))
    venv = Path(args.venv) if args.venv else tmp / "venv"
    constraints = tmp / "floors.txt"
    constraints.write_text("\n".join(pins) + "\n")
    print("declared floors:", " ".join(pins), flush=True)
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    run([python, "-m", "pip", "install", "-q", "-c", str(constraints), str(ROOT)])
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    got = {line.split("==")[0].lower(): line.split("==")[1] for line in freeze.splitlines() if "==" in line}
    for pin in pins:
        name, version = pin.split("==")
        if _norm(got.get(name.lower())) != _norm(version):
            raise SystemExit(f"{name} installed at {got.get(name.lower())}, expected the floor {version}")
    t_install = time.perf_counter() - t0

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["MPLBACKEND"] = "Agg"
    work = tmp / "run"
    work.mkdir()
    t1 = time.perf_counter()
    run([python, "-m", "linoverfit", "--version"], cwd=work, env=env)
    proc = subprocess.run([python, "-c", quickstart((ROOT / "README.md").read_text())], cwd=work, env=env,
                          capture_output=True, text=True)
    print(proc.stdout, proc.stderr[-3000:], sep="\n")
    if proc.returncode or not (work / "quickstart.png").exists():
        raise SystemExit("the README quickstart failed with the declared floors")
    t_quick = time.perf_counter() - t1
    t2 = time.perf_counter()
    run([python, "-c", SHARDED], cwd=work, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    t_sharded = time.perf_counter() - t2
    print(f"floors step passed: install {t_install:.0f} s, quickstart {t_quick:.0f} s, two-device sweep "
          f"{t_sharded:.0f} s, total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
