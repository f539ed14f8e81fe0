"""lo.explore: builds headless, its update function redraws the closed forms, and they move as theory says."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import linoverfit as lo

widgets = pytest.importorskip("ipywidgets")


def _png(panel):
    value = panel.image.value
    assert value[:8] == b"\x89PNG\r\n\x1a\n" and len(value) > 5_000
    return value


def test_panel_builds_headless_and_larger_gamma_turns_earlier():
    panel = lo.explore(gamma=0.03)
    assert isinstance(panel, widgets.VBox)
    assert set(panel.sliders) == {"gamma", "alpha", "depth"}
    first = panel.curves
    png_first = _png(panel)

    second = panel.update(gamma=0.06)
    assert panel.sliders["gamma"].value == pytest.approx(0.06, rel=0.05)
    assert panel.curves is second
    assert _png(panel) != png_first  # redrawn

    # same pre-training, a costlier perturbation: the turning point comes earlier and fewer modes pay
    np.testing.assert_allclose(second["loss"], first["loss"])
    assert first["interior"] and second["interior"]
    assert second["t_star"] < first["t_star"]
    assert second["worth"] < first["worth"]
    assert np.all(second["curve"] >= first["curve"])
    # the threshold is gamma^2 (d_in + d_out) for depth 2
    assert second["threshold"] == pytest.approx(0.06**2 * 64, rel=0.05)


def test_curves_are_the_theory_closed_forms():
    panel = lo.explore(gamma=0.04, width=16)
    c = panel.curves
    widths = (16, 16, 16)
    sigma = 1.0 / np.arange(1, 17)
    expected = lo.theory.curves.perturbed_loss_curve(sigma, c["t"], 0.04, widths=widths, s0=1e-6)[:, 0]
    np.testing.assert_allclose(c["curve"], expected, rtol=1e-6)
    tp = lo.theory.turning.turning_point(sigma, gamma=0.04, widths=widths, s0=1e-6)
    assert c["t_star"] == pytest.approx(tp.t_star, rel=1e-6)


def test_slider_moves_trigger_redraw_and_other_sliders():
    panel = lo.explore(gamma=0.05, width=16)
    t_star = panel.curves["t_star"]
    panel.sliders["alpha"].value = 2.0  # as if dragged in the browser: observers recompute
    assert panel.curves["settings"]["alpha"] == 2.0
    assert panel.curves["t_star"] != t_star
    panel.update(depth=1, alpha=1.0)  # depth 1: sensitivity does not depend on the weights, no U-curve
    assert not panel.curves["interior"]
    with pytest.raises(TypeError, match="unknown settings"):
        panel.update(beta=1)


def test_simulate_on_request_lands_near_the_prediction():
    panel = lo.explore(gamma=0.05, width=16)
    sim = panel.simulate()
    assert panel.simulated is sim and not sim["truncated"]
    assert sim["value"].shape == sim["t"].shape
    # measured minimum of the perturbed loss within a checkpoint spacing (factor ~1.5) of T*
    assert 0.5 < sim["t_min"] / panel.curves["t_star"] < 2.0
    panel.update(gamma=0.04)
    assert panel.simulated is None  # stale points are dropped when a slider moves


def test_finetune_mode_builds():
    panel = lo.explore("finetune", width=8, depth=2)
    assert set(panel.sliders) == {"lr", "alpha", "depth"}
    c = panel.update(lr=0.01)
    assert c["curve"].shape == c["t"].shape and np.all(np.isfinite(c["curve"]))


def test_library_imports_without_ipywidgets_and_explore_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"  # make `import ipywidgets` fail
        "import linoverfit as lo\n"
        "f = lo.explore\n"
        "try:\n    f()\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout and 'pip install "linoverfit[widgets]"' in proc.stdout


@settings(max_examples=8, deadline=None)
@given(depth=st.integers(3, 4), alpha=st.floats(0.5, 2.0), log_s0=st.floats(-8.0, -2.0))
@example(depth=3, alpha=2.0, log_s0=-2.375)  # s0 above the smallest mode: it decays, another mode is last
@example(depth=4, alpha=1.0, log_s0=-8.0)  # the smallest-mode shortcut
def test_finetune_grid_from_the_smallest_mode_is_the_full_grid(depth, alpha, log_s0):
    """The fine-tuning redraw builds its time grid from the smallest mode alone (depth >= 3): it must be
    exactly the grid of the full spectrum, i.e. that mode really is the last to get within 1%."""
    from linoverfit.explorer import _learnt_spectrum

    sigma = np.arange(1, 17, dtype=np.float64) ** (-alpha)
    full, _ = _learnt_spectrum(sigma, 10.0**log_s0, depth)
    fast, s = _learnt_spectrum(sigma, 10.0**log_s0, depth, grid_only=True)
    assert s is None and np.array_equal(fast, full)
