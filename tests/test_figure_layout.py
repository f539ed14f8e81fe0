"""Figure files do not depend on how the work is laid out over processes (issue 20, acceptance 1): one
process or two, two concurrent ``--only`` runs into one folder, or a run killed with SIGKILL and rerun.
(In its own file so that the test runner's workers can run it beside the other long figure tests.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def test_figure_files_do_not_depend_on_the_process_layout(tmp_path):
    """Issue 20, acceptance 1: the same figures written by one process (``--jobs 1``), shared out over two
    (``--jobs 2``), by two concurrent ``--only`` runs into one folder, and by a run killed with SIGKILL
    mid-way and rerun are byte-identical, PNGs and ``summary.json`` included. (The numbers of a figure
    come from its own compiled programs, whatever else runs beside it; files are written atomically.)"""
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        cmd = [sys.executable, "-m", "linoverfit.cli", "figures", "--only", "F1,F11", "--quick", "--jobs", str(jobs),
               "--out", str(out), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert sorted(outs[1]) == sorted(outs[2]) and len(outs[1]) == 5, sorted(outs[1])
    assert [n for n in outs[1] if outs[1][n] != outs[2][n]] == []

    def figures(only, out, **kw):
        cmd = [sys.executable, "-m", "linoverfit.cli", "figures", "--only", only, "--quick", "--jobs", "1",
               "--out", str(out), "--no-progress"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, **kw)

    def files(out):
        return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}

    # two concurrent --only runs sharing one --out folder (summary.json merged under its lock)
    shared = tmp_path / "shared"
    procs = [figures("F1", shared), figures("F11", shared)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    assert files(shared) == outs[1]

    # killed (SIGKILL: no cleanup at all) once F1 is written and F11 is being computed, then rerun
    killed = tmp_path / "killed"
    proc = figures("F1,F11", killed)
    deadline = time.monotonic() + 600
    while not (killed / "F1_incremental.png").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    leftovers = [p.name for p in killed.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    rerun = figures("F1,F11", killed)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-3000:]
    assert files(killed) == outs[1], (leftovers, sorted(files(killed)))
