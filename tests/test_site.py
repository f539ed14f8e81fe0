"""The documentation site: it builds with warnings as errors, its API reference shows every public
function and class with its full signature, and three pages (home, tutorial, one API page) open in
headless Chromium with typeset math, loaded images and no broken internal links, without network.

The site is built once per session (``docs_site`` in conftest.py, which also executes the tutorial).
The browser is Debian's ``chromium`` + ``chromium-driver`` (``.ci/run`` installs them with apt-get);
the browser tests skip, saying so, only where those cannot be found.
"""

import functools
import html as html_lib
import http.server
import importlib
import inspect
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import linoverfit as lo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS_COMMAND = 'pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html'

# the three pages opened in the browser: the home page (figure gallery), the executed tutorial
# (figures drawn at build time) and an API page whose docstrings carry :math: roles
PAGES = ("index.html", "tutorial.html", "api/linoverfit.theory.turning.html")


# ----------------------------------------------------------------------------- build


def test_readme_has_one_command_that_builds_the_site():
    assert DOCS_COMMAND in README, "README must give the one command that builds the site"
    assert not (ROOT / "docs" / "api.md").exists(), "docs/api.md is replaced by the generated reference"


def test_site_builds_with_warnings_as_errors(docs_site):
    assert docs_site.returncode == 0, f"sphinx-build -W failed:\n{docs_site.warnings()}\n{docs_site.log[-3000:]}"
    for page in (*PAGES, "theory.html", "benchmarks.html", "api/index.html"):
        assert (docs_site.html / page).exists(), page
    # the home page shows the whole figure gallery
    home = (docs_site.html / "index.html").read_text()
    missing = [f.name for f in sorted((ROOT / "paper_figs").glob("*.png")) if f'src="_images/{f.name}"' not in home]
    assert not missing, f"figures missing from the home page: {missing}"
    # MathJax is part of the site, not a CDN
    assert (docs_site.html / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    for page in PAGES:
        text = (docs_site.html / page).read_text()
        assert not re.search(r"""<script[^>]+src=["']https?://""", text), f"{page} loads a script from the network"
        assert not re.search(r"""<link[^>]+href=["']https?://[^"']+\.css""", text), f"{page} loads css from the network"


# ----------------------------------------------------------------------------- API reference

# no reference page (the same rule as docs/conf.py API_EXCLUDE): argument checking and the figure
# scripts (reached through `linoverfit figures`, whose functions are on the lo.cli page)
_NO_PAGE = ("linoverfit.validation", "linoverfit.experiments")


# methods that serve a protocol, not the user (JAX's pytree registration)
_PROTOCOL = ("tree_flatten", "tree_unflatten")


def _public_callables():
    """(qualified name, object, candidate ids, bound) of every public callable and every public
    method defined by a public class; ids are where autodoc may have put it, ``bound``: the first
    parameter (self, cls) is not shown."""
    import pkgutil

    mods = ["linoverfit"] + [i.name for i in pkgutil.walk_packages(lo.__path__, prefix="linoverfit.")
                             if not any(p.startswith("_") for p in i.name.split("."))]
    found = {}
    for name in sorted(mods):
        if name.startswith(_NO_PAGE):
            continue
        mod = importlib.import_module(name)
        names = list(getattr(mod, "__all__", [n for n, o in vars(mod).items()
                                              if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
                                              and getattr(o, "__module__", "") == name]))
        for n in names:
            obj = getattr(mod, n, None)
            if obj is None or inspect.ismodule(obj) or not callable(obj):
                continue
            entry = found.setdefault(id(obj), (f"{name}.{n}", obj, set()))
            entry[2].update({f"{name}.{n}", f"{obj.__module__}.{obj.__qualname__}"})
    out = []
    for q, obj, ids in found.values():
        out.append((q, obj, ids, False))
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for m, attr in vars(obj).items():
                fn = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
                if not m.startswith("_") and m not in _PROTOCOL and inspect.isfunction(fn):
                    out.append((f"{q}.{m}", fn, {f"{i}.{m}" for i in ids}, not isinstance(attr, staticmethod)))
    return out


def _reference_entries(html_dir):
    """id -> list of the rendered parameters (``name: type = default``) of every autodoc entry."""
    entries = {}
    for page in (html_dir / "api").glob("*.html"):
        text = page.read_text()
        for ident, body in re.findall(r'<dt class="sig sig-object py[^"]*" id="([^"]+)">(.*?)</dt>', text, re.S):
            params = [html_lib.unescape(re.sub(r"<[^>]+>", "", p)).strip()
                      for p in re.findall(r'<em class="sig-param">(.*?)</em>', body, re.S)]
            entries[ident] = params
    return entries


def _expected_params(obj, bound):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # no introspectable signature: the entry alone is checked
        return None
    params = list(sig.parameters.values())
    return params[1:] if bound else params


def test_reference_lists_every_public_callable_with_full_signature(docs_site):
    assert docs_site.returncode == 0, docs_site.warnings()
    entries = _reference_entries(docs_site.html)
    missing, wrong = [], []
    for q, obj, ids, bound in _public_callables():
        hit = next((i for i in sorted(ids) if i in entries), None)
        if hit is None:
            missing.append(q)
            continue
        params = _expected_params(obj, bound)
        if params is None:
            continue
        shown = [p for p in entries[hit] if p not in ("*", "/")]
        names = [re.split(r"[:=]", p.lstrip("*"), maxsplit=1)[0].strip() for p in shown]
        if names != [p.name for p in params]:
            wrong.append(f"{q}: reference shows ({', '.join(names)}), code has ({', '.join(p.name for p in params)})")
            continue
        for p, text in zip(params, shown):
            if p.default is not inspect.Parameter.empty and "=" not in text:
                wrong.append(f"{q}: default of {p.name} not shown ({text!r})")
    assert not missing, f"public names without an entry in the generated API reference: {missing}"
    assert not wrong, "signatures in the reference differ from the code:\n" + "\n".join(wrong)


# ----------------------------------------------------------------------------- browser


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="module")
def served_site(docs_site):
    """The built site over HTTP on the loopback interface (as a web host would serve it)."""
    assert docs_site.returncode == 0, docs_site.warnings()
    handler = functools.partial(_QuietHandler, directory=str(docs_site.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[docs]'")
    chromium, driver = _chromium(), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is not installed here (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run does this)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--proxy-server=127.0.0.1:9",  # anything not local fails
                "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done('typeset'), e => done('error: ' + e));
  } else if (Date.now() - start > 30000) { done('no MathJax'); } else { setTimeout(poll, 100); }
})();
"""

_WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })))
  .then(() => done(imgs.map(i => [i.getAttribute('src'), i.naturalWidth])));
"""

# visible prose: the page without code blocks, typeset math and MathJax's own assistive copies
_PROSE = """
const body = document.body.cloneNode(true);
body.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
return body.innerText;
"""


@pytest.mark.parametrize("page", PAGES)
def test_page_in_headless_chromium(page, browser, served_site):
    url = served_site + page
    browser.get(url)
    assert browser.title and "404" not in browser.title

    # math is typeset: MathJax ran, produced output, no errors, no raw LaTeX or roles left
    state = browser.execute_async_script(_WAIT_FOR_MATHJAX)
    assert state == "typeset", f"{page}: MathJax did not typeset the page ({state})"
    n_math = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    assert n_math > 0, f"{page}: no typeset math"
    assert browser.execute_script("return document.querySelectorAll('mjx-merror, [data-mjx-error]').length") == 0
    prose = browser.execute_script(_PROSE)
    for raw in (":math:", "$$", "\\(", "\\[", "\\frac", "\\sigma", "\\gamma"):
        assert raw not in prose, f"{page}: untypeset math {raw!r} in the text"

    # every image loads (naturalWidth > 0); the home page has the figure gallery, the tutorial its plots
    images = browser.execute_async_script(_WAIT_FOR_IMAGES)
    broken = [src for src, width in images if not width]
    assert not broken, f"{page}: images that did not load: {broken}"
    if page != PAGES[2]:
        assert len(images) >= 5, f"{page}: expected the figures, found {len(images)} images"

    # nothing was fetched from outside the site (MathJax and its fonts included), nothing failed
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name).concat([location.href])")
    foreign = [u for u in origins if not u.startswith(served_site)]
    assert not foreign, f"{page}: requests outside the site: {foreign}"
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]]  # the browser's own guess
    assert not errors, f"{page}: browser console errors: {errors}"

    # no broken internal links: every same-site href answers 200 and its #anchor exists there
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    internal = sorted({h for h in hrefs if h.startswith(served_site)})
    assert internal, f"{page}: no internal links"
    ids_of = {}
    bad = []
    for href in internal:
        target, _, anchor = href.partition("#")
        if target not in ids_of:
            try:
                with urllib.request.urlopen(target, timeout=30) as resp:
                    body = resp.read().decode("utf-8", "replace")
                    ids_of[target] = set(re.findall(r'\bid="([^"]+)"', body))
            except urllib.error.HTTPError as err:
                bad.append(f"{href} -> HTTP {err.code}")
                ids_of[target] = None
                continue
        if anchor and ids_of[target] is not None and urllib.parse.unquote(anchor) not in ids_of[target]:
            bad.append(f"{href} -> no element with id {anchor!r}")
    assert not bad, f"{page}: broken internal links:\n" + "\n".join(bad)
