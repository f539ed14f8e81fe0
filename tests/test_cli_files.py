"""Issue 11: figure runs that are killed, interrupted or concurrent lose nothing; --out and a corrupt
summary.json are checked before computing; results files are validated on load.

A tiny injected figure (two of them, F90 and F91: a JAX loop, a PNG and a 4 MB ``.npz`` each)
keeps these tests fast while exercising the same write path (``plotting.save``,
``experiments._common.save_data``, the locked ``summary.json`` merge) as the real figures.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import linoverfit as lo
from linoverfit import cli, files

TINY = '''
import os, sys, time
import numpy as np

TITLE = "tiny injected test figure"

def run(out_dir, quick=False, seed=0, config=None, progress=None):
    import jax, jax.numpy as jnp
    from matplotlib.figure import Figure
    from linoverfit import plotting as lp
    from linoverfit.experiments import _common as C
    print(f"{NUMBER} start", file=sys.stderr, flush=True)
    # compiled work that does not return to Python for a while (Ctrl-C must still stop at once)
    n = int(os.environ.get("TINY_SPIN", "2000000"))
    inner, outer = min(n, 1_000_000_000), max(1, n // 1_000_000_000)  # int32 loop bounds; n may exceed them
    body = lambda i, v: jax.lax.fori_loop(0, inner, lambda j, w: w * 0.999999 + 1e-6, v)
    spin = jax.jit(lambda x: jax.lax.fori_loop(0, outer, body, x))
    jax.block_until_ready(spin(jnp.ones(4)))
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(500_000)  # 4 MB: a wide write window
    png, npz = C.figure_paths(out_dir, NUMBER, NAME)
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.plot(data[:20000], lw=0.3)
    ax.set_xlabel("index"); ax.set_ylabel("value")
    lp.save(fig, png, dpi=150)
    C.save_data(npz, data=data)
    return {"first": float(data[0]), "seed": seed}
'''

RUNNER = '''
import sys, types
sys.argv = sys.argv
import linoverfit.experiments as E
code = open(sys.argv[1]).read()
for number, name in (("F90", "tiny_a"), ("F91", "tiny_b")):
    mod = types.ModuleType(f"linoverfit.experiments.{name}")
    mod.NUMBER, mod.NAME = number, name
    exec(code, mod.__dict__)
    sys.modules[mod.__name__] = mod
    E.FIGURES[number] = name
from linoverfit.cli import main
sys.exit(main(["figures", "--no-progress", *sys.argv[2:]]))
'''

OUTPUTS = ["F90_tiny_a.png", "F90_tiny_a.npz", "F91_tiny_b.png", "F91_tiny_b.npz", "summary.json"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.py").write_text(TINY)
    (d / "runner.py").write_text(RUNNER)
    return d


def _ctrl_c_reaches_python():
    """In the child before exec: SIGINT to its default, as in a terminal. A test runner started in the
    background of a non-interactive shell ignores SIGINT, its children inherit that, and Python then
    installs no KeyboardInterrupt handler, so a Ctrl-C test would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tiny, out, *args, spin=None):
    env = dict(os.environ, TINY_SPIN=str(spin or 2_000_000))
    return subprocess.Popen([sys.executable, str(tiny / "runner.py"), str(tiny / "tiny.py"), "--out", str(out), *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_ctrl_c_reaches_python)


def _wait_started(p):
    """Block until the first figure has started (interpreter and imports done); return the time."""
    line = ""
    while "F90 start" not in line:
        line = p.stderr.readline()
        assert line or p.poll() is None, "the run ended before F90 started"
    return time.monotonic()


def _snapshot(folder):
    return {name: (Path(folder) / name).read_bytes() for name in OUTPUTS if (Path(folder) / name).exists()}


@pytest.fixture(scope="module")
def references(tiny, tmp_path_factory):
    """The complete outputs of a seed-0 run (the 'old' files) and a seed-1 run (the 'new' files)."""
    refs = {}
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"ref{seed}")
        p = _start(tiny, out, "--only", "F90,F91", "--seed", str(seed))
        t0 = _wait_started(p)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        refs[seed] = (_snapshot(out), time.monotonic() - t0)
    assert all(refs[0][0][k] != refs[1][0][k] for k in OUTPUTS[:4])  # old and new differ
    return refs


def _check_old_or_new(out, refs):
    old, new = refs[0][0], refs[1][0]
    for name in OUTPUTS[:4]:
        data = (out / name).read_bytes()
        assert data in (old[name], new[name]), f"{name} is neither the old nor the new file ({len(data)} bytes)"
    summary = json.loads((out / "summary.json").read_text())  # always complete JSON
    old_s, new_s = json.loads(old["summary.json"]), json.loads(new["summary.json"])
    for k in ("F90", "F91"):
        assert summary[k] in (old_s[k], new_s[k])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_runs_leave_old_or_new_files(tiny, references, tmp_path, sig):
    # kill at several moments of a run after its start-up (compute, PNG/npz writes, summary merges)
    duration = references[1][1]
    for frac in (0.15, 0.4, 0.65, 0.9):
        out = tmp_path / f"out{frac}"
        out.mkdir()
        for name, data in references[0][0].items():
            (out / name).write_bytes(data)
        p = _start(tiny, out, "--only", "F90,F91", "--seed", "1")
        _wait_started(p)
        time.sleep(frac * duration)
        sent = time.monotonic()
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        waited = time.monotonic() - sent
        finished = "figure(s) in" in err  # the signal came after the run's last write
        if sig == signal.SIGINT and not finished:
            assert p.returncode == cli.EXIT_INTERRUPTED, err
            assert waited < 10, f"Ctrl-C took {waited:.1f} s"
            assert not list(out.glob(".*.tmp")), "an interrupted run left temporary files"
        _check_old_or_new(out, references)
        files.remove_stale_temporaries(out)  # what the next run does first
        assert not list(out.glob(".*.tmp"))


def test_ctrl_c_during_compiled_work_is_prompt(tiny, tmp_path):
    # ~40e9 iterations: a minute or more of compiled work on any machine (0.4e9 took under a second, so a
    # loaded test process could send its Ctrl-C after the figure had already finished)
    p = _start(tiny, tmp_path, "--only", "F90", spin=40_000_000_000)
    _wait_started(p)
    time.sleep(1.0)  # inside the compiled loop now
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == cli.EXIT_INTERRUPTED and time.monotonic() - sent < 10


def test_concurrent_runs_of_different_figures_keep_both(tiny, tmp_path):
    a = _start(tiny, tmp_path, "--only", "F90")
    b = _start(tiny, tmp_path, "--only", "F91")
    for p in (a, b):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"F90", "F91"} <= set(summary)
    assert sorted(os.listdir(tmp_path)) == sorted(OUTPUTS)  # no lock or temporary file left behind


# ----------------------------------------------------------------------------- --out and summary.json


@pytest.fixture
def injected(monkeypatch):
    """F90 registered in-process; ``calls`` counts how often it was computed."""
    import types

    import linoverfit.experiments as E

    calls = []
    mod = types.ModuleType("linoverfit.experiments.tiny_inproc")
    mod.NUMBER, mod.NAME, mod.TITLE = "F90", "tiny", "tiny"
    mod.run = lambda out, **kw: calls.append(out) or {"x": 1.0}
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(E.FIGURES, "F90", "tiny_inproc")
    return calls


def _main(out, capsys):
    rc = cli.main(["figures", "--only", "F90", "--no-progress", "--out", str(out)])
    return rc, capsys.readouterr().err


def test_bad_out_is_refused_before_computing(injected, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root ignores permissions: a read-only file system instead
        read_only = Path("/sys/kernel")
    for out, words in ((a_file, "is a file"), (a_file / "sub", "which is a file"), (read_only, "not writable")):
        rc, err = _main(out, capsys)
        assert rc == 2 and "--out" in err and words in err, err
    assert injected == []  # nothing was computed
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"F1": 3}'])
def test_corrupt_summary_is_reported_not_replaced(injected, tmp_path, capsys, content):
    (tmp_path / "summary.json").write_text(content)
    rc, err = _main(tmp_path, capsys)
    assert rc == 2 and "summary.json" in err and "not changed" in err, err
    assert injected == [] and (tmp_path / "summary.json").read_text() == content


def test_summary_merge_keeps_other_figures(injected, tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"F1": {"a": 1}, "F99": {"b": 2}}))
    rc, _ = _main(tmp_path, capsys)
    assert rc == 0
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "F1": {"a": 1}, "F90": {"name": "tiny", "title": "tiny", "quick": False, "seed": 0, "x": 1.0}, "F99": {"b": 2}}


# ----------------------------------------------------------------------------- result files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    task = lo.tasks.power_law(4, 4, 1.0, key=jax.random.key(0))
    net = lo.DeepLinear((4, 4, 4))
    run = lo.pretrain(net, net.init(jax.random.key(2), 0.3), task, lr=0.1, checkpoints=[5, 50, 80])
    return d, run, run.save(d / "good.npz")


def _variants(good: Path):
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    arrays = dict(np.load(good))
    inconsistent = dict(arrays, **{"loss.array": np.ones(7)})  # 7 losses for 3 checkpoints
    missing = {k: v for k, v in arrays.items() if not k.startswith("lr.")}
    bad_weights = dict(arrays, **{"weights.tuple.1": np.ones((3, 4, 5))})  # does not chain
    other = dict(arrays, **{"__class__.py": np.asarray("FinetuneResult")})
    return {
        "empty": (b"", "not a readable"), "truncated": (raw[: len(raw) // 2], "not a readable"),
        "flipped": (bytes(flipped), "not a readable"), "text": (b"hello\n", "not a readable"),
        "foreign": ({"a": np.ones(3)}, "not a linoverfit result"),
        "inconsistent": (inconsistent, "loss has shape"), "missing": (missing, "field 'lr' is missing"),
        "bad_weights": (bad_weights, "weights"), "other_class": (other, "holds a FinetuneResult"),
    }


def test_load_rejects_every_broken_file_naming_it(saved):
    d, run, good = saved
    for name, (content, words) in _variants(good).items():
        path = d / f"{name}.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.savez(path, **content)
        with pytest.raises(lo.errors.ResultFileError, match=words) as err:
            lo.PretrainResult.load(path)
        assert str(path) in str(err.value) and err.value.path == path, name
    with pytest.raises(lo.errors.ResultFileError, match="no such file"):
        lo.PretrainResult.load(d / "nope.npz")
    with pytest.raises(lo.errors.ResultFileError, match="not a file"):
        lo.PretrainResult.load(d)


def test_save_refuses_folders_and_honours_umask(saved):
    d, run, _ = saved
    (d / "folder").mkdir()
    with pytest.raises(ValueError, match="it is a folder"):
        run.save(d / "folder")
    (d / "plain").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run.save(d / "plain" / "run.npz")
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            path = run.save(d / f"mode{mask:o}.npz")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode
    assert not list(d.glob(".*.tmp"))


def _processes_naming(text):
    """PIDs of live processes whose command line contains ``text``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_jobs_split_balanced_and_ctrl_c_stops_the_child_processes(tmp_path):
    """--jobs 2: the figures are shared out by cost (every figure in exactly one group, order kept); Ctrl-C
    on the parent stops the children too (exit 130, no temporary files, no process left running)."""
    groups = cli._split(["F1", "F3", "F4", "F9", "F11"], 2, quick=True)
    assert sorted(sum(groups, [])) == sorted(["F1", "F3", "F4", "F9", "F11"]) and len(groups) == 2
    assert all(g == sorted(g, key=["F1", "F3", "F4", "F9", "F11"].index) for g in groups)
    cost = [sum(cli._COST[n][0] for n in g) for g in groups]
    assert max(cost) - min(cost) <= max(cli._COST[n][0] for n in ["F1", "F3", "F4", "F9", "F11"])
    assert cli.main(["figures", "--only", "F3", "--jobs", "0", "--out", str(tmp_path)]) == 2

    out = tmp_path / "jobs-out"
    p = subprocess.Popen([sys.executable, "-m", "linoverfit", "figures", "--quick", "--only", "F9,F8,F4", "--jobs", "2",
                          "--no-progress", "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=_ctrl_c_reaches_python)
    deadline = time.monotonic() + 120
    while len(_processes_naming(str(out))) < 2:  # the parent and its child
        assert p.poll() is None and time.monotonic() < deadline, "no child process was started"
        time.sleep(0.2)
    time.sleep(4.0)  # both inside their figures
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == cli.EXIT_INTERRUPTED, err
    assert time.monotonic() - sent < 20, "Ctrl-C took too long"
    assert not _processes_naming(str(out)), "a child process outlived Ctrl-C"
    assert not list(out.glob(".*.tmp"))


def test_a_child_with_much_output_does_not_block(tmp_path):
    """The children's output is drained while this process runs its own figures: a child that writes far
    more than a pipe holds (1 MB here) must not stall the run (stand-in child: a shell script)."""
    import linoverfit.cli as cli
    from linoverfit.experiments import load

    script, stamps = tmp_path / "child.sh", tmp_path / "stamps"
    # the child reports the figure the cost table sends it (the lighter one goes to the child)
    here, there = cli._split(["F3", "F11"], 2, True)
    child = f"{there[0]} {load(there[0]).NAME}"
    script.write_text(f"#!/bin/sh\ndate +%s.%N > {stamps}\nhead -c 1000000 /dev/zero | tr '\\000' 'x' >&2\n"
                      f"echo >&2\ndate +%s.%N >> {stamps}\necho '{child}   1.0 s  -> x' >&2\n")
    script.chmod(0o755)
    code = (f"import sys; import linoverfit.cli as cli; sys.executable = {str(script)!r}; "
            f"t = cli.run_figures({str(tmp_path / 'out')!r}, only=['F3', 'F11'], quick=True, progress=False, jobs=2); "
            "print(sorted(t))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['F11', 'F3']" and proc.stderr.count("x" * 1000) >= 999
    began, ended = (float(x) for x in stamps.read_text().split())
    # drained as written, the child is done in well under a second; blocked on a full pipe, it would wait
    # for this process's own figure (several seconds)
    assert ended - began < 2.0


def test_release_compiled_drops_jax_programs_and_keeps_results():
    """``memory.release_compiled`` (used between figures past 1 GiB, and between test files) empties JAX's
    compilation caches: a jitted function compiles again afterwards, and gives the same bits."""
    import jax
    import jax.numpy as jnp

    from linoverfit import memory

    f = jax.jit(lambda x: jnp.sin(x) @ x.T)
    x = jnp.arange(12.0).reshape(3, 4)
    before = f(x)
    assert f._cache_size() == 1 and memory.resident_bytes() > 0  # Linux: /proc/self/status
    memory.release_compiled()
    assert f._cache_size() == 0
    assert np.array_equal(np.asarray(f(x)), np.asarray(before)) and f._cache_size() == 1
