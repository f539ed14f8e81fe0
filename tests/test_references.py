"""Every paper cited in README.md and docs/*.md has an entry in docs/references.md with its first
author, year and arXiv id (issue 18, acceptance 4).

A citation is "Name et al." followed within a few words by a year ("Name et al. (2025)",
"Name et al. 2014", 'Name et al. ("Title", ICML 2025'), or an author list joined by "&" before a
year ("Arora, Cohen & Hazan 2018", "Barrett & Dherin (2021)"), or a single author and year in
parentheses ("(Fukumizu 1998;"). Its entry in docs/references.md is the bullet whose bold key
starts with the same first author and holds the same year; the entry must give an arXiv id
(arXiv:NNNN.NNNNN), or say "No arXiv" and give another identifier (a DOI or an OpenReview id, or
name the proceedings).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "docs" / "references.md"
SOURCES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "references.md")

NAME = r"[A-Z][a-zà-ÿ'\-]+(?:-[A-Z][a-zà-ÿ]+)?"
YEAR = r"(?:19|20)\d\d"
ET_AL = re.compile(rf"\b({NAME}) et al\.(.{{0,120}}?)\b({YEAR})\b", re.S)
AMPERSAND = re.compile(rf"\b({NAME})(?:, {NAME})* & {NAME},? \(?({YEAR})\b")
SINGLE = re.compile(rf"\(({NAME}) ({YEAR})[;,)]")
ARXIV = re.compile(r"arXiv:\d{4}\.\d{4,5}")


def citations():
    """{(first author, year): [where, ...]} over the README and docs."""
    found = {}
    for path in SOURCES:
        text = path.read_text()
        hits = [(m.group(1), m.group(3), m.start()) for m in ET_AL.finditer(text)]
        hits += [(m.group(1), m.group(2), m.start()) for m in AMPERSAND.finditer(text)]
        hits += [(m.group(1), m.group(2), m.start()) for m in SINGLE.finditer(text)]
        for name, year, at in hits:
            line = text.count("\n", 0, at) + 1
            found.setdefault((name, year), []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def entries():
    """[(bold key, full entry text)] of docs/references.md's bullets."""
    text = REFS.read_text()
    parts = re.split(r"\n- \*\*", "\n" + text)[1:]
    return [(p.split("**", 1)[0], p) for p in parts]


def test_the_scan_finds_the_known_citations():
    """Guard against a scan that silently finds nothing: the citations the docs are known to hold."""
    found = citations()
    for key in [("Springer", "2025"), ("Saxe", "2014"), ("Arora", "2018"), ("Watts", "2026"),
                ("Feng", "2026"), ("Rofin", "2026"), ("Fukumizu", "1998"), ("Braun", "2022")]:
        assert key in found, key


@pytest.mark.parametrize("cited", sorted(citations().items()), ids=lambda c: f"{c[0][0]}-{c[0][1]}")
def test_every_citation_has_a_reference_with_an_identifier(cited):
    (name, year), where = cited
    matches = [(k, e) for k, e in entries() if k.startswith(name) and year in k]
    assert matches, (f"{name} ({year}), cited at {', '.join(where[:3])}, has no entry in docs/references.md "
                     "whose first author and year match")
    key, entry = matches[0]
    if ARXIV.search(entry):
        return
    assert "No arXiv" in entry and re.search(r"doi:|OpenReview|Proceedings", entry), (
        f"docs/references.md entry {key!r} has no arXiv id and does not say why (with another identifier)")


def test_sam_paper_first_author():
    """The SAM forgetting paper is Watts, Li, Goyal, Springer & Raghunathan 2026 (arXiv:2605.02105)."""
    for path in SOURCES + [ROOT / "linoverfit" / "experiments" / "f9_schedule_optimizer.py"]:
        assert "Raghunathan et al." not in path.read_text(), path
    (key, entry), = [(k, e) for k, e in entries() if k.startswith("Watts")]
    assert "arXiv:2605.02105" in entry


def test_references_page_is_in_the_docs():
    index = (ROOT / "docs" / "index.md").read_text()
    assert "references" in index.split("```{toctree}", 1)[1]
    assert "(references.md)" in index
