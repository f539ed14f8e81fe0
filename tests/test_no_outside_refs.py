"""No file in the repository refers to a file outside it, or to a repository path that does not exist.

Scanned: every tracked text file (docs, README, code and its comments, notebooks, config). Checked:
names of files that live outside the repository (the design notes of the people who wrote it, a
shared folder, absolute paths of a work machine); markdown link targets; and every path that starts
with one of the repository's own top-level folders (``docs/...``, ``linoverfit/...``, ...), which
must exist (a trailing ``*`` or ``<...>`` marks a pattern and is not checked; generated outputs that
git ignores, and the changelog's history of removed files, are allowed).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = {".py", ".md", ".ipynb", ".toml", ".txt", ".cfg", ".yml", ".yaml", ".json", ".rst", ".ini", ""}
#: Files that are not part of this repository; no document may point at them.
OUTSIDE = [r"\bDESIGN\.md\b", r"\.\./shared\b", r"(?<![\w.])/work/", r"\bCOMMON\.md\b", r"/notes/h\d"]


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / f for f in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist): walk it
        files = [p for p in ROOT.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                        p.relative_to(ROOT).parts[:-1])]
    return [p for p in files if p.is_file() and p.suffix in TEXT and p.stat().st_size < 2_000_000
            and p.name != "summary.json"]


def _top_dirs() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                  and p.name not in {"build", "dist"} and not p.name.endswith(".egg-info"))


def _ignored(path: Path) -> bool:
    """A generated output (build folders, the API pages autosummary writes): git ignores it."""
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(rel)], cwd=ROOT, capture_output=True)
    return proc.returncode == 0


def _exists(ref: str, source: Path) -> bool:
    ref = ref.split("#")[0].split("?")[0].rstrip(".,;:)'\"`")
    if not ref:
        return True
    candidates = [ROOT / ref, source.parent / ref]
    if ref.endswith("/"):  # a folder: ignored when what it would hold is
        candidates += [c / "index" for c in candidates]
    return any(c.exists() for c in candidates) or any(_ignored(c) for c in candidates)


def test_no_reference_to_files_outside_the_repository():
    this = Path(__file__).resolve()
    hits = []
    for path in _tracked():
        if path.resolve() == this:
            continue
        text = path.read_text(errors="replace")
        for pattern in OUTSIDE:
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{path.relative_to(ROOT)}:{line}: {m.group()}")
    assert not hits, "references to files outside the repository:\n" + "\n".join(hits)


def test_repository_paths_named_in_files_exist():
    tops = "|".join(re.escape(d) for d in _top_dirs())
    path_re = re.compile(rf"(?<![\w./-])(?:{tops})/[\w./-]*[\w/]")
    link_re = re.compile(r"\]\(([^)\s]+)\)")
    missing = []
    for path in _tracked():
        if path.suffix == ".json" or path.name in {"CHANGELOG.md", ".gitignore"}:
            continue  # history names removed files; ignore patterns name generated ones
        text = path.read_text(errors="replace")
        found = [(m.group(), m.end()) for m in path_re.finditer(text)]
        if path.suffix in {".md", ".ipynb"}:
            found += [(m.group(1), m.end(1)) for m in link_re.finditer(text)
                      if not re.match(r"[a-z][a-z0-9+.-]*:|#|mailto:", m.group(1))]
        for ref, end in found:
            line = text[text.rfind("\n", 0, end) + 1:text.find("\n", end)]
            if text[end:end + 1] in {"*", "<", "{", "\\"} or "<" in ref or ".exists()" in line:
                continue  # a pattern (paper_figs/F<n>_..., tests/test_theory_*.py), or code testing existence
            if not _exists(ref, path):
                missing.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not missing, "paths that do not exist in the repository:\n" + "\n".join(sorted(missing))
