"""Progress bars advanced from inside the compiled sweeps: in a terminal, in a notebook, no recompiles."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import linoverfit as lo
from linoverfit import progress as P

ROOT = Path(__file__).resolve().parents[1]

# a small fine-tuning sweep with the layout of W2 (checkpoints x seeds x learning rates, sharded over
# the runs); W2 itself (widths 256, 576 runs x 1000 steps) takes minutes
SWEEP = textwrap.dedent("""
    import jax, numpy as np, linoverfit as lo
    task = lo.tasks.power_law(8, 8, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((8, 8, 8))
    # 8 checkpoints x 2 seeds of weights (no pre-training needed to time fine-tuning)
    W = tuple(w.reshape((8, 2) + w.shape[1:]) for w in net.init(jax.random.key(2), scale=0.3, seeds=16))
    run = lo.PretrainResult(steps=100 * np.arange(1, 9), loss=np.zeros((8, 2)), weights=W, task=task, lr=0.05)
    ftr = lo.finetune(net, run, ft, lr=(0.01, 0.03, 0.1), steps=100, progress=True)
    print("runs:", ftr.pretrain_loss_after.size)
""")


class _Recorder:
    """Stands in for tqdm.auto.tqdm and records what the sweep does to its bar."""

    made: list = []

    def __init__(self, total, **kw):
        self.total, self.n, self.kw, self.updates, self.closed = total, 0, kw, [], False
        _Recorder.made.append(self)

    def update(self, k):
        self.updates.append(k)
        self.n += k

    def close(self):
        self.closed = True


@pytest.fixture
def recorder(monkeypatch):
    import tqdm.auto

    _Recorder.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    return _Recorder.made


@pytest.fixture(scope="module")
def small():
    task = lo.tasks.power_law(6, 6, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((6, 6, 6))
    W0 = net.init(jax.random.key(2), scale=1e-3, seeds=3)
    return net, task, ft, W0


def test_bars_are_advanced_from_inside_the_sweeps(small, recorder):
    net, task, ft, W0 = small
    ck = lo.log_checkpoints(600, 5)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck, progress=True)
    ftr = lo.finetune(net, run, ft, lr=(0.01, 0.03), steps=20, layout=lo.Layout(progress=True, chunk=1))
    lo.sensitivity.gaussian(net, run, gamma=(0.01,), samples=4, key=jax.random.key(3), progress=True)
    pre, fin, sens = recorder
    # pre-training counts what the user asked for, 600 steps (issue 20), whatever the seeds (3 here,
    # run together): the ticks of every seed and padding seed are scaled onto it, so several
    # updates reach the host during the run
    assert pre.total == 600 and pre.n == pre.total and pre.closed
    assert len(pre.updates) >= len(ck)
    # fine-tuning: one tick per run, 5 checkpoints x 3 seeds x 2 lrs = 30 runs
    assert fin.total == ftr.pretrain_loss_after.size == 30 and fin.n == 30 and len(fin.updates) >= 15
    assert sens.total == 15 and sens.n == 15 and sens.closed
    assert all(b.kw["desc"] for b in recorder)


def test_progress_toggle_never_recompiles(small, recorder, count_compiles):
    net, task, ft, W0 = small
    ck = lo.log_checkpoints(300, 4)
    run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck, progress=False)
    lo.finetune(net, run, ft, lr=(0.01,), steps=10, progress=False)
    with count_compiles() as c:
        run = lo.pretrain(net, W0, task, lr=0.05, checkpoints=ck, progress=True)
        lo.finetune(net, run, ft, lr=(0.01,), steps=10, progress=True)
    assert c["n"] == 0
    assert len(recorder) == 2


def test_results_do_not_depend_on_progress(small):
    net, task, ft, W0 = small
    a = lo.pretrain(net, W0, task, lr=0.05, checkpoints=[50, 200], progress=False)
    b = lo.pretrain(net, W0, task, lr=0.05, checkpoints=[50, 200], progress=True)
    np.testing.assert_array_equal(np.asarray(a.loss), np.asarray(b.loss))


def test_automatic_choice(monkeypatch):
    monkeypatch.delenv("LINOVERFIT_PROGRESS", raising=False)
    assert P.resolve(None, 2 * P.AUTO_SECONDS) and not P.resolve(None, 0.5 * P.AUTO_SECONDS)
    assert P.resolve(True, 0.0) and not P.resolve(False, 1e9)
    monkeypatch.setenv("LINOVERFIT_PROGRESS", "0")
    assert not P.resolve(None, 1e9)
    monkeypatch.setenv("LINOVERFIT_PROGRESS", "1")
    assert P.resolve(None, 0.0)
    with pytest.raises(TypeError, match="progress"):
        P.resolve("yes", 0.0)
    # the estimate: W2 fine-tuning (576 runs x 1000 steps, widths 256) is long, the quickstart short
    w2 = P.step_flops((256, 256, 256)) * 1000 * 576
    quick = P.step_flops((32, 32, 32)) * 16384
    assert P.estimate_seconds(w2) > 10 * P.AUTO_SECONDS
    assert P.estimate_seconds(quick) < P.AUTO_SECONDS


def test_bar_in_a_terminal_goes_to_stderr():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINOVERFIT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", SWEEP], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs: 48" in proc.stdout and "fine-tuning" not in proc.stdout
    frames = [f for f in re.split(r"[\r\n]", proc.stderr) if f.startswith("fine-tuning")]
    assert frames and re.search(r"100%\|.*\| 48/48", frames[-1]), proc.stderr[-2000:]


def test_bar_in_a_notebook(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SWEEP)])
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    # tqdm.auto chose the notebook bar: a widget (with its text form) in the cell's output, not stderr text
    widgets = [o for o in outputs if o.output_type == "display_data"
               and "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, outputs
    text = widgets[0]["data"].get("text/plain", "")
    assert "fine-tuning" in text, text
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "fine-tuning" not in stderr
