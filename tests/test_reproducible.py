"""The committed paper_figs/summary.json is what `linoverfit figures` regenerates, and the prose quotes it.

* The acceptance figures (F3, F4: turning points under perturbation and fine-tuning; F5, F6: the
  regularisation trade-off and the tuning criteria) are regenerated from a clean output folder by
  the command a user runs, in a subprocess (float32, as shipped), and every number is compared with
  the committed file. On 2 CPU cores this takes a few minutes (measured ~4-6 min on a loaded
  machine); it is the only way to know that the committed numbers are the code's.
* Every number in the README's figure paragraphs appears in ``summary.json`` under that figure (as a
  value or as a numeric key such as ``per_gamma["0.03"]``), with no more decimals than stored.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "paper_figs" / "summary.json"
ACCEPTANCE = ("F3", "F4", "F5", "F6")


def _leaves(x, path=""):
    """(path, value) for every leaf of a JSON tree."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def _same(a, b) -> bool:
    """Equal, or floats one unit apart in the 4th significant digit.

    summary.json stores floats rounded to 4 significant digits. On the same platform a run is
    bit-reproducible and the files are identical; a different BLAS summation order changes the
    float32 results by round-off (~1e-7 relative), which can move a value across a rounding boundary
    of the 4th digit and so change the stored value by one unit there, never more.
    """
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return type(a) is type(b) and a == b
    if a == b:
        return True
    scale = max(abs(a), abs(b))
    return abs(a - b) <= 1.0001 * 10 ** (math.floor(math.log10(scale)) - 3)


def test_same_tolerance_is_one_unit_in_the_fourth_digit():
    assert _same(1.234, 1.235) and _same(0.0009991, 0.0009992) and _same(99.99, 100.0)
    assert not _same(1.234, 1.236) and not _same(True, 1) and not _same(None, 0.0) and _same(None, None)


# ----------------------------------------------------------------------------- README numbers

_NUMBER = re.compile(r"(?<![\w.\-/*^])\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w/])", re.IGNORECASE)


def _figure_paragraphs(text: str) -> dict[str, str]:
    """``{"F3": paragraph text}``: from each ``**F<n> — ...**`` to the next one, a heading, an HTML
    comment or a blank line."""
    out = {}
    starts = list(re.finditer(r"^\*\*(F\d+) —", text, re.MULTILINE))
    for m in starts:
        rest = text[m.start():]
        end = re.search(r"\n\s*\n|\n(?=\*\*F\d+ —)|\n(?=#)|\n(?=<!--)", rest)
        out[m.group(1)] = rest[: end.start()] if end else rest
    return out


def _quoted_numbers(paragraph: str) -> list[str]:
    """Numbers stated in prose: outside code spans, links and images; not part of a name (F3, W1, x64)."""
    prose = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", paragraph)       # images
    prose = re.sub(r"\]\([^)]*\)", "] ", prose)                   # link targets
    prose = re.sub(r"`[^`]*`", " ", prose)                        # code spans
    prose = re.sub(r"\*\*F\d+ —", " ", prose)                     # the figure's own label
    prose = re.sub(r"(\d)-(?=\d)", r"\1 ", prose)                # a range "12-28%" is two numbers
    return [m.group() for m in _NUMBER.finditer(prose)]


def _matches(quoted: str, values) -> bool:
    """``quoted`` is some stored value (sign ignored) rounded to the quoted number of decimals, and
    quotes no more decimals than the stored value has (summary floats keep 4 significant digits)."""
    q = float(quoted)
    decimals = len(quoted.split(".")[1]) if "." in quoted and "e" not in quoted.lower() else 0
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if "e" in quoted.lower():
            if math.isclose(abs(v), q, rel_tol=1e-9):
                return True
            continue
        stored = repr(float(v)).split(".")[1] if "e" not in repr(float(v)) else ""
        stored_decimals = 0 if stored == "0" else len(stored)
        if decimals <= max(stored_decimals, 0) and round(abs(v), decimals) == q:
            return True
    return False


def _numeric_keys(x) -> list[float]:
    """Dict keys that are numbers (per-setting entries such as ``per_gamma["0.03"]`` or ``batch_size["32"]``)."""
    out = []
    if isinstance(x, dict):
        for k, v in x.items():
            try:
                out.append(float(k))
            except ValueError:
                pass
            out += _numeric_keys(v)
    elif isinstance(x, list):
        for v in x:
            out += _numeric_keys(v)
    return out


def test_readme_figure_numbers_come_from_summary():
    text = (ROOT / "README.md").read_text()
    summary = json.loads(COMMITTED.read_text())
    paragraphs = _figure_paragraphs(text)
    assert set(paragraphs) >= {f"F{i}" for i in range(1, 9)}, sorted(paragraphs)
    missing = {}
    for number, para in paragraphs.items():
        values = [v for _, v in _leaves(summary.get(number, {}))] + _numeric_keys(summary.get(number, {}))
        bad = [q for q in _quoted_numbers(para) if not _matches(q, values)]
        if bad:
            missing[number] = bad
    assert not missing, f"README figure paragraphs quote numbers not in summary.json under that figure: {missing}"


def test_readme_number_parser():
    paras = _figure_paragraphs("**F1 — a.** 1\n![F1](x.png)\n**F2 — b.** 2\n\n**F3 — c.** 3\n<!-- end -->")
    assert paras == {"F1": "**F1 — a.** 1\n![F1](x.png)", "F2": "**F2 — b.** 2", "F3": "**F3 — c.** 3"}
    para = "**F3 — x.** agree within 1.4% (aligned) and `T*` 3.7%, depths 2-4, W1, F5, 1e-3, ![F3](a/F3_x.png)"
    assert _quoted_numbers(para) == ["1.4", "3.7", "2", "4", "1e-3"]
    assert _matches("1.4", [1.391]) and not _matches("1.39", [1.4]) and not _matches("1.4", [1.46])
    assert not _matches("1.40", [1.4]) and _matches("268", [-267.9]) and not _matches("2.0", [2])
    assert _matches("64", [63.52]) and _matches("28", [28.13]) and not _matches("29", [28.13])
