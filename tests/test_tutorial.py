"""docs/tutorial.md: a text notebook (MyST Markdown, read by jupytext and myst-nb) that links the
theory at every step, installs itself in a fresh environment, and runs top to bottom.

It is executed once per test session, by the documentation build (``docs_site`` in conftest.py);
the checks below read the notebook that build executed.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.md"


def _read():
    jupytext = pytest.importorskip("jupytext", reason="the docs extra is not installed: pip install -e '.[docs]'")
    return jupytext.read(NOTEBOOK)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_tutorial_is_a_text_notebook():
    nb = _read()
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert len(_code_cells(nb)) >= 7
    # one source of truth: no generated .ipynb or generator script next to it
    assert not (ROOT / "docs" / "tutorial.ipynb").exists()
    assert not (ROOT / "docs" / "make_tutorial.py").exists()


def test_install_cell_installs_the_repository():
    """The first code cell is the fresh-environment (Colab) install: a plain ``pip install`` of the
    repository, by default the checkout the notebook sits in, skipped when linoverfit imports."""
    cell = _code_cells(_read())[0]
    assert "install" in cell.metadata.get("tags", [])
    src = cell.source
    assert re.search(r'find_spec\("linoverfit"\) is None', src)
    assert re.search(r"%pip install (--quiet )?\{REPO\}", src)
    repo = re.search(r'^REPO = "([^"]+)"', src, re.M).group(1)
    assert (NOTEBOOK.parent / repo / "pyproject.toml").exists(), "REPO must point at the repository root from docs/"


def test_notebook_links_theory_at_every_step():
    nb = _read()
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for step in range(1, 6):
        section = text.split(f"## {step}.", 1)[1].split("\n## ", 1)[0]
        assert "](theory.md" in section, f"step {step} does not link docs/theory.md"


def _github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST's heading anchors) give a markdown heading: lower case,
    punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_theory_links_point_at_existing_sections():
    theory = (ROOT / "docs" / "theory.md").read_text()
    anchors = {_github_slug(h) for h in re.findall(r"^#+ (.+)$", theory, re.M)}
    nb = _read()
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    links = re.findall(r"\]\(theory\.md#([^)]+)\)", text)
    assert links, "the tutorial links no theory.md section"
    missing = sorted(set(links) - anchors)
    assert not missing, f"tutorial links to theory.md sections that do not exist: {missing}"


def test_notebook_runs(docs_site):
    """The notebook as the docs build executed it (a failing cell fails that build)."""
    assert docs_site.notebook.exists(), f"the docs build did not execute the tutorial:\n{docs_site.log[-3000:]}"
    nb = nbformat.read(docs_site.notebook, as_version=4)
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 5, f"expected a plot per step, got {len(images)}"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # linoverfit was importable, so the install cell installed nothing
    assert not _code_cells(nb)[0].outputs

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
