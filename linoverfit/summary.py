"""``summary.json``: the headline numbers of every figure, one JSON object of figure entries.

Figures write their entries as soon as they finish, possibly from several processes into one
folder, so :func:`merge_summary` merges under a folder lock (:func:`linoverfit.files.locked`) and
writes atomically (:func:`linoverfit.files.atomic_write`); a file that is not such an object is
reported and left untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write, locked

__all__ = ["load_summary", "merge_summary", "write_json"]


def load_summary(path: Path) -> dict:
    """The figures' entries in ``path`` (``{}`` if missing); ``ValueError`` naming the file when it is
    not a JSON object of objects (it is then left untouched, for the user to inspect)."""
    if not path.exists():
        return {}
    keep = "move it away or delete it (it was not changed)"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path} ({err}); {keep}") from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {keep}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object of figure entries "
                         f"{{\"F1\": {{...}}, ...}}; {keep}")
    return data


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically; NaN or infinity is refused (``ValueError``)."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as fh:
        fh.write(text.encode())


def merge_summary(path, entries: dict, order) -> dict:
    """Merge ``entries`` (``{figure: entry}``) into the JSON file ``path`` under a lock, atomically;
    figures not in ``entries`` keep their entries. Keys follow ``order``. Returns the merged dict."""
    path = Path(path)
    with locked(path.parent):  # the folder itself: no lock file in the output
        old = load_summary(path)
        merged = {k: (entries[k] if k in entries else old[k]) for k in order if k in entries or k in old}
        merged.update({k: v for k, v in old.items() if k not in merged})  # unknown keys are kept, at the end
        write_json(path, merged)
    return merged
