"""Command line: ``linoverfit figures`` regenerates the paper figures F1-F13.

::

    linoverfit figures [--out DIR] [--only F3,F4] [--quick] [--seed N] [--jobs N]
    linoverfit figures --list

Each figure ``F<n>`` writes ``DIR/F<n>_<name>.png`` and ``DIR/F<n>_<name>.npz`` (the data it
plots); ``DIR/summary.json`` collects the headline numbers of every figure (predicted vs measured
T*, degradation past the turning point, ...), rounded to 4 significant digits so that the same
seed gives the same file. With ``--only``, the entries of the other figures already in
``summary.json`` are kept. Progress: one bar over the figures, one over the stages of the current
figure; the wall time of each figure is printed. Runs headless (matplotlib's Agg backend).

Files: every PNG, ``.npz`` and ``summary.json`` is written atomically
(:func:`linoverfit.files.atomic_write`), so an interrupted or killed run leaves each file either
complete and old or complete and new. ``--jobs N`` (default: one per core, at most 4) shares the
figures out over N processes (see :func:`run_figures`). ``summary.json`` gets each figure's entry as soon as the
figure is done, merged under a lock (:func:`linoverfit.files.locked`), so concurrent runs of
different figures into one folder keep every entry. ``--out`` is checked before anything is
computed (exit 2 when it is a file, under a file, or not writable), and a ``summary.json`` that is
not a JSON object is reported (exit 2), never replaced. Ctrl-C stops the run at once with exit
status 130; the files of the figures already written stay as they are.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import linoverfit

from . import __version__
from .files import remove_stale_temporaries
from .summary import load_summary, merge_summary

__all__ = ["main", "parse_only", "run_figures", "ToleranceError"]


class ToleranceError(RuntimeError):
    """A figure ran but missed one of its own acceptance checks (``summary["checks"]``); the message
    names the figure and the number."""


def _missed_checks(number: str, result: dict) -> list[str]:
    """One line per failed entry of ``result["checks"]`` (see ``experiments._common.check``)."""
    lines = []
    for c in result.get("checks", []):
        if not c.get("ok", True):
            want = f"<= {c['at_most']:.4g}" if "at_most" in c else f"{c.get('expected')!r}"
            value = f"{c['value']:.4g}" if isinstance(c["value"], float) else repr(c["value"])
            lines.append(f"{number} missed its tolerance: {c['what']} = {value}, wanted {want}")
    return lines


def parse_only(text: str | None) -> list[str]:
    """``"F3,f4, 7"`` -> ``["F3", "F4", "F7"]`` (figure order); ``text=None`` -> all figures.

    Raises ``ValueError`` naming an unknown figure, or for an empty list.
    """
    from .experiments import FIGURES

    if text is None:
        return list(FIGURES)
    picked = []
    for item in text.split(","):
        item = item.strip().upper()
        if not item:
            continue
        key = item if item.startswith("F") else f"F{item}"
        if key not in FIGURES:
            raise ValueError(f"unknown figure {item!r} in --only; choose from {', '.join(FIGURES)}")
        picked.append(key)
    if not picked:
        raise ValueError("--only is empty; give figures like F3,F4")
    return [k for k in FIGURES if k in picked]


#: Exit status after Ctrl-C (128 + SIGINT), the shell convention.
EXIT_INTERRUPTED = 130


def check_out(out) -> Path:
    """Create ``out`` if needed and check that figures can be written into it, before computing.

    Raises ``ValueError`` naming ``--out`` when it is a file, lies under a file, cannot be created
    or is not writable.
    """
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under {parent}, which is a file"
            raise ValueError(f"--out {out} {where}; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create the folder ({err.strerror or err})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".linoverfit-write-check."):
            pass
    except OSError as err:
        raise ValueError(f"--out {out} is not writable ({err.strerror or err}); choose another folder") from None
    return out


#: Relative run times of the figures (seconds each took in a two-process run on 2 cores, 2026-12-07: quick,
#: full), to balance them over processes.
_COST = {"F1": (5, 5), "F2": (6, 13), "F3": (4, 15), "F4": (6, 69), "F5": (4, 12), "F6": (4, 10), "F7": (4, 21),
         "F8": (7, 26), "F9": (11, 34), "F10": (5, 19), "F11": (9, 16), "F12": (8, 70), "F13": (8, 12)}

#: Child processes of the running ``run_figures`` (stopped with it on Ctrl-C).
_CHILDREN: list = []

_TIME_LINE = re.compile(r"^(F\d+) \S+\s+([\d.]+) s  -> ", re.M)


def default_jobs() -> int:
    """Processes ``linoverfit figures`` uses by default: one per usable core, at most 4."""
    from .parallel import _cores  # imports JAX: not at module level, so that ``--version`` stays fast

    return max(1, min(4, _cores()))


def _portable(number: str) -> bool:
    """Whether a fresh ``python -m linoverfit`` process can run figure ``number`` (a module of the
    package's own ``experiments`` folder, not one injected into this process)."""
    from . import experiments
    from .experiments import load

    try:
        file = getattr(load(number), "__file__", None)
    except Exception:  # noqa: BLE001 - it then fails in this process, where it is reported
        return False
    return file is not None and Path(file).resolve().parent == Path(experiments.__file__).resolve().parent


def _split(numbers: list[str], jobs: int, quick: bool) -> list[list[str]]:
    """``numbers`` in at most ``jobs`` groups of about equal cost (longest first onto the lightest
    group); each group keeps the figure order."""
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(numbers)))]
    load_ = [0.0] * len(groups)
    for n in sorted(numbers, key=lambda n: -_COST.get(n, (5, 10))[0 if quick else 1]):
        i = load_.index(min(load_))
        groups[i].append(n)
        load_[i] += _COST.get(n, (5, 10))[0 if quick else 1]
    order = {n: k for k, n in enumerate(numbers)}
    return [sorted(g, key=order.get) for g in groups if g]


def _spawn(group: list[str], out: Path, quick: bool, seed: int):
    """``linoverfit figures --only <group>`` in a child process on the same package, its output piped."""
    import subprocess

    env = dict(os.environ, LINOVERFIT_PROGRESS="0")
    root = str(Path(linoverfit.__file__).resolve().parent.parent)  # this very package, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "linoverfit", "figures", "--only", ",".join(group), "--out", str(out),
           "--seed", str(seed), "--jobs", "1", "--no-progress"] + (["--quick"] if quick else [])
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    # drain its output as it comes: a full pipe would block the child until this process reads it
    child.output = []
    child.reader = threading.Thread(target=lambda: child.output.append(child.stderr.read()), daemon=True)
    child.reader.start()
    _CHILDREN.append(child)
    return child


#: Between figures, a process over this resident size releases its compiled programs: the quick set in
#: one process peaked at 1.96 GB without it, 0.89 GB releasing after every figure (at +15% time, the
#: recompilation of programs the figures share), so it releases only past 1 GiB.
_RELEASE_ABOVE_BYTES = 2**30


def _stop_children() -> None:
    """Ctrl-C: pass it on to the child processes (each removes its own temporary files and exits 130)."""
    import signal
    import subprocess

    for child in _CHILDREN:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in _CHILDREN:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def run_figures(out: str | os.PathLike = "paper_figs", only: list[str] | None = None, quick: bool = False, seed: int = 0,
                progress: bool = True, stream: TextIO | None = None, jobs: int = 1) -> dict:
    """Run the figures ``only`` (list of ``"F<n>"``, ``None`` = all) into ``out``; return ``{figure: seconds}``.

    ``quick=True`` shrinks every figure; ``seed`` (an int >= 0) fixes every random key; ``progress``
    shows tqdm bars on ``stream`` (default stderr). ``out/summary.json`` gets the rounded headline
    numbers of the figures run, keeping the entries of the others.

    ``jobs > 1`` runs the figures in up to ``jobs`` processes: this one and ``jobs - 1`` children
    (``linoverfit figures --only ...``), each given figures of about equal cost. Most of a figure's
    time on a CPU is single-threaded XLA compilation and plotting, so processes (not threads, which
    contend for the interpreter lock) divide the wall time. Every figure computes exactly what it
    computes alone; the children write their files and merge ``summary.json`` atomically and under
    the same lock, and their output is printed when they finish. Figures that only this process
    can load (injected, not files of ``linoverfit/experiments``) stay in it.

    Figures that fail are reported (with their traceback) and skipped; ``RuntimeError`` lists them
    at the end, after the others have run and ``summary.json`` has been written. A figure that runs
    but misses one of its acceptance checks (``summary["checks"]``) is reported on ``stream`` and,
    at the end, raises :class:`ToleranceError` naming the figure and the number.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; the figures themselves never need a display
    from tqdm.auto import tqdm

    from . import memory
    from .experiments import FIGURES, load
    from .experiments._common import rounded

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    numbers = list(FIGURES) if only is None else list(only)
    out = check_out(out)
    remove_stale_temporaries(out)  # left by a killed run
    stream = sys.stderr if stream is None else stream
    summary_path = out / "summary.json"
    load_summary(summary_path)  # a corrupt summary is reported before anything is computed
    new: dict = {}
    times: dict = {}
    failed, missed = [], []
    disable = not progress
    if disable:  # the sweeps' own bars (lo.progress) follow --no-progress too
        os.environ["LINOVERFIT_PROGRESS"] = "0"
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    groups = _split([n for n in numbers if _portable(n)], jobs, quick) if jobs > 1 and len(numbers) > 1 else []
    children = [(g, _spawn(g, out, quick, seed)) for g in groups[1:]]  # the first group stays here
    moved = {n for g, _ in children for n in g}
    numbers = [n for n in numbers if n not in moved]
    wall = time.perf_counter()
    with tqdm(numbers, desc="figures", unit="fig", file=stream, position=0, disable=disable) as outer:
        for number in outer:
            outer.set_postfix_str(number)
            start = time.perf_counter()
            with tqdm(total=1, desc=f"  {number}", file=stream, position=1, leave=False, disable=disable) as inner:
                try:
                    module = load(number)
                    result = module.run(out, quick=quick, seed=seed, progress=inner)
                except Exception:  # report, keep going, fail at the end
                    failed.append(number)
                    tqdm.write(f"{number}: FAILED\n{traceback.format_exc()}", file=stream)
                    continue
            times[number] = time.perf_counter() - start
            for line in _missed_checks(number, rounded(result)):
                missed.append(line)
                tqdm.write(line, file=stream)
            new[number] = {"name": module.NAME, "title": module.TITLE, "quick": bool(quick), "seed": seed,
                           **rounded(result)}
            merge_summary(summary_path, {number: new[number]}, FIGURES)  # at once: an interrupted run keeps it
            png = out / f"{number}_{module.NAME}.png"
            tqdm.write(f"{number} {module.NAME:<16s} {times[number]:7.1f} s  -> {png}", file=stream)
            if memory.resident_bytes() > _RELEASE_ABOVE_BYTES:
                memory.release_compiled()
    for group, child in children:
        child.wait()
        child.reader.join()
        err = "".join(child.output)
        stream.write(err)
        for number, seconds in _TIME_LINE.findall(err):
            times[number] = float(seconds)
        missed += [line for line in err.splitlines() if " missed its tolerance: " in line]
        if child.returncode not in (0, 3):
            failed += [n for n in group if n not in times] or [f"{','.join(group)} (exit {child.returncode})"]
        _CHILDREN.remove(child)
    times = {k: times[k] for k in sorted(times, key=list(FIGURES).index)}
    total = sum(times.values())
    procs = f", {1 + len(children)} processes, {time.perf_counter() - wall:.1f} s wall" if children else ""
    print(f"{len(times)} figure(s) in {total:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in times.items())}{procs}) "
          f"-> {out}/", file=stream)
    if failed:
        raise RuntimeError(f"figure(s) failed: {', '.join(failed)} (tracebacks above)" + "".join(f"\n{m}" for m in missed))
    if missed:
        raise ToleranceError("\n".join(missed))
    return times


def _figures_command(args) -> int:
    from .experiments import FIGURES, load

    if args.list:
        for number in FIGURES:
            try:
                m = load(number)
            except ImportError as err:
                print(f"{number}  (not available: {err})")
                continue
            print(f"{number}  {m.NAME:<16s} {m.TITLE}")
        return 0
    try:
        only = parse_only(args.only)
    except ValueError as err:
        print(f"linoverfit figures: error: {err}", file=sys.stderr)
        return 2
    try:
        _interruptible(run_figures, args.out, only=only, quick=args.quick, seed=args.seed,
                       progress=not args.no_progress, jobs=default_jobs() if args.jobs is None else args.jobs)
    except ToleranceError as err:
        print(f"linoverfit figures: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:
        print(f"linoverfit figures: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"linoverfit figures: error: {err}", file=sys.stderr)
        return 2
    return 0


def _interruptible(fn, out, **kw):
    """``fn(out, **kw)`` in a worker thread while the main thread waits, so that Ctrl-C is handled at
    once even while compiled code runs (which does not return to Python for a signal). On Ctrl-C the
    temporary files of this process in ``out`` are removed and the process exits with status 130:
    every output file is complete (old or new), since each is only ever replaced by a rename."""
    box = {}

    def work():
        try:
            box["value"] = fn(out, **kw)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            box["error"] = err

    worker = threading.Thread(target=work, name="linoverfit-figures", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        _stop_children()
        for p in Path(out).glob(f".*.{os.getpid()}.tmp"):
            try:
                p.unlink()
            except OSError:
                pass
        print("\nlinoverfit figures: interrupted; files already written are kept", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)  # without waiting for compiled code still running in the worker
    if "error" in box:
        raise box["error"]
    return box.get("value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linoverfit",
        description="Catastrophic overtraining in deep linear networks: regenerate the paper figures.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fig = sub.add_parser(
        "figures",
        help="regenerate the figures F1-F13 (PNG + the plotted data as .npz + summary.json)",
        description="Regenerate the paper figures: DIR/F<n>_<name>.png, DIR/F<n>_<name>.npz and DIR/summary.json.",
    )
    fig.add_argument("--out", default="paper_figs", metavar="DIR", help="output folder (default: paper_figs)")
    fig.add_argument("--only", metavar="F3,F4", help="comma-separated figures to run (default: all)")
    fig.add_argument("--quick", action="store_true", help="small sizes: every figure in seconds (for tests)")
    fig.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same summary.json")
    fig.add_argument("--no-progress", action="store_true", help="no progress bars (timings are still printed)")
    fig.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="processes to run the figures in (default: one per core, at most 4; 1 = this process only)")
    fig.add_argument("--list", action="store_true", help="list the figures and exit")
    fig.set_defaults(func=_figures_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linoverfit`` console script; ``argv=None`` reads ``sys.argv``.

    Returns the exit status: 0 = success, 1 = a figure failed (the others still ran), 2 = bad arguments
    (including an unusable ``--out`` or a corrupt ``summary.json``), 3 = every figure ran but one
    missed its own tolerance (stderr names the figure and the number); Ctrl-C exits at once with 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
