"""The committed acceptance numbers regenerate from a clean state (full size, F3-F6), compared with
``test_reproducible``'s tolerance. (In its own file so that the test runner's workers can run it beside
the other long figure tests.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_reproducible import ACCEPTANCE, COMMITTED, _leaves, _same


@pytest.mark.skipif(not COMMITTED.exists(), reason="paper_figs/summary.json not generated yet")
def test_acceptance_numbers_regenerate_from_a_clean_state(tmp_path):
    committed = json.loads(COMMITTED.read_text())
    cmd = [sys.executable, "-m", "linoverfit.cli", "figures", "--only", ",".join(ACCEPTANCE),
           "--out", str(tmp_path), "--no-progress",
           "--jobs", "1"]  # one process: the test runner's workers already use every core
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    # exit 3 = ran but missed a tolerance: that is itself a failure of the committed claims
    assert proc.returncode == 0, proc.stderr[-4000:]
    fresh = json.loads((tmp_path / "summary.json").read_text())
    assert list(fresh) == list(ACCEPTANCE)
    for number in ACCEPTANCE:
        old, new = dict(_leaves(committed[number])), dict(_leaves(fresh[number]))
        assert old.keys() == new.keys(), (number, sorted(old.keys() ^ new.keys()))
        diff = {p: (old[p], new[p]) for p in old if not _same(old[p], new[p])}
        assert not diff, f"{number}: committed vs regenerated differ at {diff}"
