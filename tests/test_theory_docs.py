"""docs/theory.md stays in step with the code: every test it cites exists, every lo.theory name is derived there."""

import ast
import re
from pathlib import Path

import linoverfit as lo

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "theory.md").read_text()


def test_every_cited_test_exists():
    cited = set(re.findall(r"`(tests/test_theory_\w+\.py)::(\w+)`", DOC))
    assert len(cited) >= 15  # the derivations name their checks
    missing = []
    for path, name in cited:
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if name not in names:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/theory.md cites tests that do not exist: {missing}"


def test_every_theory_function_is_derived_in_the_doc():
    undocumented = [n for n in lo.theory.__all__ if f"`{n}" not in DOC and not n[0].isupper()]
    assert not undocumented, f"lo.theory names missing from docs/theory.md: {undocumented}"
