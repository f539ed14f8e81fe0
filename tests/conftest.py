"""Test configuration: every closed-form and exactness check runs in float64."""

import contextlib
import gc
import os
import shutil
import tempfile

# progress bars of long sweeps stay off in the tests (tests that check them pass progress=True)
os.environ.setdefault("LINOVERFIT_PROGRESS", "0")

# One on-disk JAX compilation cache for the whole test session, fresh each session: the first process
# to import this file (the xdist controller, or the only process) makes it, and the workers and every
# subprocess they start (figure runs, simulated-device sweeps) inherit it through the environment, so
# a program compiled once is loaded, not compiled again, in the other processes (a quick figure run:
# 32 s cold, 22 s warm, the same bytes). Counted as a compilation by ``count_compiles`` below. A cache
# the user set up is used as it is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="linoverfit-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # tests compile small programs
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import jax.monitoring
import pytest

jax.config.update("jax_enable_x64", True)

# a compilation is an XLA backend compile or a program loaded from the on-disk cache instead of one
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, *a, **k: _compiles.append(name) if name == _COMPILE_EVENT else None
)
jax.monitoring.register_event_listener(lambda name, *a, **k: _compiles.append(name) if name == _CACHE_HIT_EVENT else None)


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test file, drop JAX's compiled programs and traces: a worker runs many files, and
    their caches otherwise accumulate (a worker reached 4.3 GB; issue 20 asks the suite for < 3 GB)."""
    yield
    _release_memory()


def _resident_mb() -> float:
    with open("/proc/self/status") as f:  # Linux; elsewhere the bound below is not applied
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _release_memory() -> None:
    """Drop JAX's compiled programs and traces, collect, and hand freed heap pages back to the system."""
    jax.clear_caches()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed pages otherwise


#: A worker above this resident size after a test releases its compiled programs (they reload from the
#: on-disk cache when needed again): the two workers and their subprocesses stay near 3 GB together.
_WORKER_MB = float(os.environ.get("LINOVERFIT_TEST_WORKER_MB", "800"))


@pytest.fixture(autouse=True)
def _bounded_memory():
    yield
    if os.path.exists("/proc/self/status") and _resident_mb() > _WORKER_MB:
        _release_memory()


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
def docs_site(tmp_path_factory):
    """Build docs/ once: the tutorial is executed by this build only, and both the site tests and
    the tutorial tests read its result."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("docs_build")
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the tutorial's figures (Agg would hide them)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                           str(root / "docs"), str(out / "html")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    site = BuiltSite(out, proc.returncode, proc.stdout + proc.stderr)
    site.seconds = time.perf_counter() - start
    return site
