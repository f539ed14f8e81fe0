"""docs/tutorial.ipynb: stored without outputs, in sync with its generator, and runs top to bottom."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(_code_cells(nb)) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs: strip them (python docs/make_tutorial.py)"
    # the committed version too, when this is a git checkout
    proc = subprocess.run(["git", "show", "HEAD:docs/tutorial.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        committed = nbformat.reads(proc.stdout, as_version=4)
        assert not any(c.outputs for c in _code_cells(committed)), "the committed notebook has outputs"


def test_notebook_matches_generator():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_tutorial.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_notebook_links_theory_at_every_step():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for step in range(1, 6):
        section = text.split(f"## {step}.", 1)[1].split("\n## ", 1)[0]
        assert "](theory.md" in section, f"step {step} does not link docs/theory.md"


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_theory_links_point_at_existing_sections():
    theory = (ROOT / "docs" / "theory.md").read_text()
    anchors = {_github_slug(h) for h in re.findall(r"^#+ (.+)$", theory, re.M)}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    links = re.findall(r"\]\(theory\.md#([^)]+)\)", text)
    assert links, "the tutorial links no theory.md section"
    missing = sorted(set(links) - anchors)
    assert not missing, f"tutorial links to theory.md sections that do not exist: {missing}"


def test_notebook_runs(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    # let the kernel use its inline backend (CI exports MPLBACKEND=Agg, which would hide the figures)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 5, f"expected a plot per step, got {len(images)}"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")

    # the perturbation U-curve: predicted T* and the measured minimum agree, larger gamma -> earlier
    found = re.findall(r"gamma = ([\d.]+): predicted T\* = +([\d.]+) .*?measured minimum at t = +([\d.]+)", text)
    assert len(found) == 2, text
    (g1, p1, m1), (g2, p2, m2) = [(float(a), float(b), float(c)) for a, b, c in found]
    assert g1 < g2 and p2 < p1
    for pred, meas in ((p1, m1), (p2, m2)):
        assert 0.7 < meas / pred < 1.4, (pred, meas)

    # the fine-tuning U-curve: the best checkpoint is well before the last one
    best = [float(x) for x in re.findall(r"best checkpoint predicted at t = ([\d.]+)", text)]
    last = float(re.search(r"\(of (\d+)\)", text).group(1))
    assert best and all(b < last / 4 for b in best), text

    runtime = float(re.search(r"notebook ran in (\d+) s", text).group(1))
    assert runtime < 180, f"the tutorial took {runtime} s (budget 3 minutes)"
