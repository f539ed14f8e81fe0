"""Test configuration: every closed-form and exactness check runs in float64."""

import contextlib
import gc
import os
import shutil
import tempfile

# progress bars of long sweeps stay off in the tests (tests that check them pass progress=True)
os.environ.setdefault("LINOVERFIT_PROGRESS", "0")

# One folder per test session, made by the first process to import this file (the xdist controller, or
# the only process) and inherited through the environment by the workers and every subprocess they
# start; removed at the end. It holds:
# - an on-disk JAX compilation cache, fresh each session: a program compiled once is loaded, not
#   compiled again, in the other processes (a quick figure run: 32 s cold, 22 s warm, the same bytes);
#   ``count_compiles`` below counts a load as a compilation. A cache the user set up is used as it is.
# - the documentation site, built once for all workers (``docs_site``).
_SESSION_ENV = "LINOVERFIT_TEST_SESSION_DIR"
_OWN_SESSION = None
if _SESSION_ENV not in os.environ:
    _OWN_SESSION = tempfile.mkdtemp(prefix="linoverfit-tests-")
    os.environ[_SESSION_ENV] = _OWN_SESSION
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_OWN_SESSION, "jax-cache")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # tests compile small programs
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import jax.monitoring
import pytest

from linoverfit import memory

jax.config.update("jax_enable_x64", True)

# a compilation is an XLA backend compile or a program loaded from the on-disk cache instead of one
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, *a, **k: _compiles.append(name) if name == _COMPILE_EVENT else None
)
jax.monitoring.register_event_listener(lambda name, *a, **k: _compiles.append(name) if name == _CACHE_HIT_EVENT else None)


#: The longest test files (``--durations`` on 2 idle cores: 40-160 s each, most of it subprocesses and
#: compilation), handed to the workers first so that the two finish together: a long file drawn last
#: would run alone on one core at the end. The rest follow, most tests first (xdist's own default).
#: Only the order changes, so a stale entry costs time, never a result.
_LONG_FILES = ("test_figures.py", "test_performance.py", "test_theory_flow.py", "test_acceptance_numbers.py",
               "test_nonlinear.py", "test_training.py", "test_cli_files.py", "test_theory_sharpness.py",
               "test_pretrain_variants.py", "test_figure_layout.py", "test_theory_mirror.py", "test_site.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FILES)}
    count: dict = {}
    for item in items:
        count[item.path] = count.get(item.path, 0) + 1
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -count[item.path], str(item.path)))


def pytest_unconfigure(config):
    if _OWN_SESSION is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_SESSION, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test file, drop JAX's compiled programs and traces: a worker runs many files, and
    their caches otherwise accumulate (a worker reached 4.3 GB; issue 20 asks the suite for < 3 GB)."""
    yield
    memory.release_compiled()


#: A worker above this resident size after a test releases its compiled programs (they reload from the
#: on-disk cache when needed again; releasing after every test costs ~10% of the run in retracing).
_WORKER_BYTES = 800 * 2**20
#: Files whose tests start figure runs or multi-process sweeps (0.4-1.1 GB each): the worker releases
#: what it holds before each of their tests, so that it idles small while they run and the whole run
#: (two workers and what they start) stays under 3 GB.
_SPAWNING = {"test_figures.py", "test_performance.py", "test_acceptance_numbers.py", "test_figure_layout.py",
             "test_cli_files.py", "test_nonlinear.py", "test_sweep.py", "test_site.py", "test_tutorial.py",
             "test_readme.py", "test_reproducible.py", "test_bad_input.py", "test_docs.py", "test_explore.py",
             "test_packaging.py", "test_progress.py", "test_imports.py"}
_SPAWNING_BYTES = 400 * 2**20


@pytest.fixture(autouse=True)
def _bounded_memory(request):
    if request.path.name in _SPAWNING and memory.resident_bytes() > _SPAWNING_BYTES:
        memory.release_compiled()
    yield
    if memory.resident_bytes() > _WORKER_BYTES:
        memory.release_compiled()


@contextlib.contextmanager
def _counter():
    start = len(_compiles)
    box = {}
    try:
        yield box
    finally:
        box["n"] = len(_compiles) - start


@pytest.fixture
def count_compiles():
    """``with count_compiles() as c: ...`` then ``c["n"]`` = XLA backend compilations inside the block."""
    return _counter


# ----------------------------------------------------------------------------- documentation site

class BuiltSite:
    """The documentation site built once per test session (``sphinx-build -W --keep-going``, the
    README's command into a temporary folder): ``html`` (the pages), ``returncode``, ``log``,
    ``notebook`` (the tutorial as myst-nb executed it)."""

    def __init__(self, out, returncode, log):
        self.out, self.returncode, self.log = out, returncode, log
        self.html = out / "html"
        self.notebook = out / "jupyter_execute" / "tutorial.ipynb"

    def warnings(self):
        return "\n".join(line for line in self.log.splitlines() if "WARNING" in line or "ERROR" in line)


@pytest.fixture(scope="session")
def docs_site():
    """Build docs/ once per test session: the tutorial is executed by this build only, and both the
    site tests and the tutorial tests read its result. The first worker to ask builds it into the
    session folder under a file lock; another worker waits for that build and reads it."""
    import fcntl
    import json
    from pathlib import Path

    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")
    root = Path(__file__).resolve().parents[1]
    out = Path(os.environ[_SESSION_ENV]) / "docs_build"
    with open(str(out) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = out / "build.json"
        if not done.exists():
            out.mkdir(exist_ok=True)
            done.write_text(json.dumps(_build_docs(root, out)))
        record = json.loads(done.read_text())
    site = BuiltSite(out, record["returncode"], record["log"])
    site.seconds = record["seconds"]
    return site


def _build_docs(root, out) -> dict:
    """``sphinx-build -W --keep-going`` of ``docs/`` into ``out / "html"``: return code, log, seconds."""
    import subprocess
    import sys
    import time

    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the tutorial's figures (Agg would hide them)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                           str(root / "docs"), str(out / "html")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    return {"returncode": proc.returncode, "log": proc.stdout + proc.stderr, "seconds": time.perf_counter() - start}
