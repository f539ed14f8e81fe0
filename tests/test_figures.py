"""The paper figures: ``linoverfit figures --quick`` end to end, determinism, the committed numbers.

The quick run (every figure at small sizes, about a minute on 2 CPU cores) runs once per session in a
subprocess (float32, as a user would run it; the float64 switch of conftest.py stays in this
process). Tolerances on predicted vs measured turning points are those of the theory issue:
5% in t from an aligned init, 20% from a small Gaussian init, or the checkpoint spacing where
that is coarser (a minimum read off a grid cannot be located more finely than the grid; the
parabolic refinement usually does much better, and the summaries report the actual errors).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linoverfit import cli
from linoverfit import plotting as lp
from linoverfit.experiments import FIGURES, load

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "paper_figs" / "summary.json"


def _figures(out, *args):
    # one process per run (the test runner's workers already use every core; the process layout itself is
    # tested in test_figure_layout.py and test_cli_files.py)
    jobs = [] if "--jobs" in args else ["--jobs", "1"]
    cmd = [sys.executable, "-m", "linoverfit.cli", "figures", "--out", str(out), "--no-progress", *jobs, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    proc = _figures(out, "--quick")
    return out, json.loads((out / "summary.json").read_text()), proc.stderr


def test_every_figure_written(quick):
    out, summary, log = quick
    assert list(summary) == list(FIGURES)
    for number, module in FIGURES.items():
        name = load(number).NAME
        png, npz = out / f"{number}_{name}.png", out / f"{number}_{name}.npz"
        assert png.stat().st_size > 10_000, png
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with np.load(npz) as data:
            assert len(data.files) > 0, npz
        entry = summary[number]
        assert entry["name"] == name and entry["quick"] is True and entry["seed"] == 0
        assert f"{number} {name}" in log  # per-figure wall time printed
    assert "figure(s) in" in log


def test_summary_is_plain_json(quick):
    """Rounded floats, no NaN (JSON null instead), nothing that json cannot read back."""
    _, summary, _ = quick

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, float):
            assert np.isfinite(x) and float(f"{x:.4g}") == x

    walk(summary)


def test_perturbation_turning_point_agrees(quick):
    """F3: predicted T* (lo.turning_point on lo.theory.gaussian of the flow) vs the minimum of the exact expectation on the GD weights,
    on every U-curve (lo.theory.u_curve, depth 1%); the figure's own checks all pass."""
    _, summary, _ = quick
    f3 = summary["F3"]
    for init in ("aligned", "gaussian"):
        clear = [v for v in f3[init]["per_gamma"].values() if v["is_turning_point"]]
        assert clear, f"no U-curve from the {init} init"
        for v in clear:
            assert v["depth_percent"] == 1 and v["degradation_percent"] >= 1
            assert v["within_tolerance"] and v["predicted_is_turning_point"], (init, v)
            lo_, hi = v["interval_measured"]
            assert lo_ <= v["t_star_measured"] <= hi
    assert f3["checks"] and all(c["ok"] for c in f3["checks"])


def test_finetuning_turning_point_agrees(quick):
    """F4: the flow's predicted T* vs the simulated minimum on every U-curve (u_curve, depth 1%), both
    shift kinds and the depth-1 control; loss after = loss before + forgetting is reported."""
    _, summary, _ = quick
    f4 = summary["F4"]
    panels = [f4["shifts"]["additive"], f4["shifts"]["subspace"], f4["depth1_control"]]
    for panel in panels:
        us = [v for v in panel["per_lr"].values() if v["is_turning_point"]]
        assert us, f"no U-curve in {panel}"
        for v in panel["per_lr"].values():
            assert v["is_turning_point"] == v["predicted_is_turning_point"]
            assert v["is_turning_point"] == (v["t_star_measured"] is not None)
        for v in us:
            assert v["rise_percent"] >= v["depth_percent"] == 1
            assert v["rel_error"] <= f4["tolerance"], v
    # the control's U-curves come from an undertrained start: fine-tuning lowers the pre-training loss there
    assert all(v["forgetting_at_min"] < 0 for v in f4["depth1_control"]["per_lr"].values() if v["is_turning_point"])
    assert f4["checks"] and all(c["ok"] for c in f4["checks"])


def test_regularisation_and_tuning_reported(quick):
    """F5 and F6 keys and acceptance statements on the quick run (details: tests/test_f5_f6.py)."""
    from test_f5_f6 import assert_f5, assert_f6

    _, summary, _ = quick
    assert_f5(summary["F5"])
    assert_f6(summary["F6"])


def test_schedule_noise_exposure_figures_report_turning_points(quick):
    """F9-F10 (issue 13): per setting t_star, degradation_percent (and sharpness_at_t_star in F9); F11 (issue 18):
    Feng et al.'s three stages; each with a verdict and the figure's condition, and their own checks pass."""
    _, summary, _ = quick
    f9, f10, f11 = summary["F9"], summary["F10"], summary["F11"]
    settings = f9["settings"]
    assert {"GD constant", "GD cosine", "GD WSD", "momentum", "Adam", "SAM", "SGD constant", "SGD cosine"} <= set(settings)
    for row in settings.values():
        assert row["t_star"] > 0 and isinstance(row["degradation_percent"], float)
        assert row["sharpness_at_t_star"] > 0
    # momentum follows the GD flow in t / (1 - beta): its T* there is within 10% of GD's
    assert abs(settings["momentum"]["t_star_flow_time"] / settings["GD constant"]["t_star"] - 1) < 0.1
    for row in list(f10["batch_size"].values()) + list(f10["label_noise"].values()) + [f10["anisotropic"]]:
        assert row["t_star"] > 0 and "degradation_percent" in row
    from test_feng import assert_f11

    assert_f11(f11)  # Feng et al.'s three stages (details: tests/test_feng.py)
    for fig in (f9, f10, f11):
        assert isinstance(fig["verdict"], str) and len(fig["verdict"]) > 100 and fig["condition"]
        assert fig["checks"] and all(c["ok"] for c in fig["checks"]), fig["checks"]


def test_springer_figure_reported(quick):
    """F13 (issue 18): Springer's setting in float64, theory on simulation to 1e-10, T* and the fine-tuning
    loss monotone in lambda (details: tests/test_springer.py::assert_f13)."""
    from test_springer import assert_f13

    _, summary, _ = quick
    assert summary["F13"]["quick"] is True
    assert_f13(summary["F13"])


def assert_f12(f12):
    """F12 (issue 19, acceptance 4): per setting a verdict naming the linear theory, per lr T* measured /
    linear theory / linearised (None where that curve has no U), and the figure's own checks pass."""
    assert f12["settings"] and f12["checks"] and all(c["ok"] for c in f12["checks"]), f12["checks"]
    curves = []
    for key, row in f12["settings"].items():
        assert row["activation"] in key and row["teacher"] in key and f"depth-{row['depth']} " in key
        assert row["depth"] in f12["depths"]
        assert isinstance(row["verdict"], str) and "linear theory" in row["verdict"]
        assert row["linearised_small_lr_error_percent"] >= 0
        # past the saddle Monte Carlo resolves S (or the growth is None, with its reason in the entry)
        if row["sensitivity_growth_past_saddle"] is not None:
            assert row["sensitivity_growth_past_saddle"] > 1 and row["sensitivity_past_saddle_stderrs"] > 2
        else:
            assert row["past_saddle_t"] is None or row["sensitivity_past_saddle_stderrs"] <= 2
        assert row["sensitivity_growth"] is None or row["sensitivity_growth"] > 1
        assert row["sharpness_final"] > 0 and row["sharpness_final_linear_theory"] > 0 and row["weight_norm_growth"] > 1
        assert math.isclose(row["sharpness_final_ratio_to_linear_theory"],
                            row["sharpness_final"] / row["sharpness_final_linear_theory"], rel_tol=2e-3)  # 4 digits
        for v in row["per_lr"].values():
            assert v["is_turning_point"] == (v["t_star_measured"] is not None)
            assert ("within" in v["verdict"]) == (v["linear_theory_error_percent"] is not None
                                                  and v["linear_theory_error_percent"] <= f12["tolerance_percent"])
            curves.append(v)
    # the tally the README quotes counts what the settings hold
    tally = f12["tally"]
    assert tally["settings"] == len(f12["settings"]) and tally["u_curves"] == len(curves)
    assert tally["u_curves_measured"] == sum(v["is_turning_point"] for v in curves)
    assert tally["u_curves_linear_theory_within_tolerance"] == sum(
        "within" in v["verdict"] for v in curves if v["is_turning_point"])
    assert tally["sensitivity_resolved_at_start"] == sum(
        r["sensitivity_growth"] is not None for r in f12["settings"].values())


def test_nonlinear_figure_reports_verdicts(quick):
    assert_f12(quick[1]["F12"])


def test_committed_nonlinear_figure_has_every_setting():
    f12 = json.loads(COMMITTED.read_text())["F12"]
    assert_f12(f12)
    # every committed setting leaves the saddle and resolves the sensitivity there (the README's growth)
    assert all(r["sensitivity_growth_past_saddle"] is not None for r in f12["settings"].values())
    assert {(r["depth"], r["activation"], r["teacher"]) for r in f12["settings"].values()} == {
        (d, a, t) for d in (2, 3) for a in ("tanh", "relu") for t in ("linear", "tanh")}


def test_same_seed_same_summary(quick, tmp_path):
    """Determinism: F2 (Monte Carlo noise, seeds) again with the same seed gives the same entry."""
    _, summary, _ = quick
    _figures(tmp_path, "--quick", "--only", "F2")
    again = json.loads((tmp_path / "summary.json").read_text())
    assert list(again) == ["F2"]
    assert again["F2"] == summary["F2"]


def test_only_merges_into_existing_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"F8": {"name": "depth", "kept": 1}}))
    _figures(tmp_path, "--quick", "--only", "F1", "--seed", "2")
    merged = json.loads((tmp_path / "summary.json").read_text())
    assert list(merged) == ["F1", "F8"] and merged["F8"]["kept"] == 1 and merged["F1"]["seed"] == 2


def test_cli_rejects_bad_input(capsys):
    assert cli.main(["figures", "--only", "F99"]) == 2
    assert "unknown figure 'F99'" in capsys.readouterr().err
    assert cli.main(["figures", "--only", "F1", "--seed", "-1", "--out", "unused"]) == 2
    assert "seed" in capsys.readouterr().err
    assert cli.parse_only("f3, 4") == ["F3", "F4"]
    with pytest.raises(ValueError, match="empty"):
        cli.parse_only(" , ")


def test_cli_exits_nonzero_naming_a_missed_tolerance(tmp_path, monkeypatch, capsys):
    """A figure that runs but misses its own check: stderr names the figure and the number, exit status 3."""
    import types

    import linoverfit.experiments as ex
    from linoverfit.experiments import _common as C

    fake = types.SimpleNamespace(NAME="fake", TITLE="fake", run=lambda out, **kw: {"checks": [
        C.check("T* relative error", 0.2344, at_most=0.2), C.check("is a U-curve", True, expected=True)]})
    monkeypatch.setattr(ex, "load", lambda number: fake)
    assert cli.main(["figures", "--only", "F3", "--out", str(tmp_path), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "F3 missed its tolerance: T* relative error = 0.2344, wanted <= 0.2" in err
    assert "U-curve" not in err  # only failed checks are reported
    assert json.loads((tmp_path / "summary.json").read_text())["F3"]["checks"][0]["ok"] is False
    with pytest.raises(ValueError, match="exactly one"):
        C.check("x", 1.0)
    assert not C.check("x", float("nan"), at_most=1.0)["ok"] and not C.check("x", None, at_most=1.0)["ok"]


def test_script_config_overrides():
    from linoverfit.experiments import _common as C

    cfg = C.resolve_config({"a": 1, "b": 2}, {"b": 3}, quick=True, overrides={"a": 5})
    assert cfg == {"a": 5, "b": 3}
    with pytest.raises(KeyError, match="unknown config key"):
        C.resolve_config({"a": 1}, {}, overrides={"z": 1})


def test_measured_minimum_refines_on_log_grid():
    from linoverfit.experiments._common import measured_minimum

    t = np.geomspace(1, 1000, 40)
    y = (np.log(t) - np.log(37.0)) ** 2 + 1  # exact parabola in log t, minimum at t = 37
    m = measured_minimum(t, y)
    assert m["interior"] and abs(m["t"] - 37.0) < 1e-6 * 37
    edge = measured_minimum(t, 1 / t)  # decreasing: minimum at the last checkpoint
    assert not edge["interior"] and edge["index"] == len(t) - 1


def test_plotting_colours_consistent_and_checked():
    assert lp.gamma_color(0.03) == lp.gamma_color(0.03) != lp.gamma_color(0.05)
    assert lp.lr_color(0.01) != lp.lr_color(0.03)
    assert lp.depth_color(1) != lp.depth_color(2)
    with pytest.raises(ValueError, match="> 0"):
        lp.gamma_color(0.0)
    with pytest.raises(ValueError, match="width"):
        lp.subplots(width="poster")
    with lp.style():
        fig, ax = lp.subplots()
        lp.theory(ax, [1, 2], [1, 2])
        lp.simulation(ax, [1, 2, 3], [1, np.nan, 2], yerr=[0.1, 0.1, 0.1])
        lp.time_axis(ax)
        leg = lp.legend(ax, colors={"a": "r"}, turning_point=True, measured_min=True)
    assert [t.get_text() for t in leg.get_texts()] == [
        "a", "theory (closed form)", "simulation (GD)", r"predicted $T^*$", "measured minimum"]
    assert ax.get_xscale() == "log" and "steps" in ax.get_xlabel()


@pytest.mark.skipif(not COMMITTED.exists(), reason="paper_figs/summary.json not generated yet")
def test_committed_figures_meet_acceptance():
    """The committed full-size run: clear U-curves (interior minimum, last checkpoint >= 10% above it) in
    F3 and F4 (additive and subspace), predicted T* within tolerance, >= 4 l2 strengths in F5."""
    summary = json.loads(COMMITTED.read_text())
    assert list(summary) == list(FIGURES)
    assert not any(entry["quick"] for entry in summary.values())
    f3 = summary["F3"]
    for init in ("aligned", "gaussian"):
        for v in f3[init]["per_gamma"].values():
            assert v["is_turning_point"] and v["degradation_percent"] >= 10, (init, v)
            assert v["within_tolerance"], (init, v)
    for number, entry in summary.items():  # every figure's own acceptance checks hold in the committed run
        assert all(c["ok"] for c in entry.get("checks", [])), (number, [c for c in entry["checks"] if not c["ok"]])
    f4 = summary["F4"]
    for kind in ("additive", "subspace"):
        us = [v for v in f4["shifts"][kind]["per_lr"].values() if v["is_turning_point"]]
        assert any(v["degradation_percent"] >= 10 for v in us), kind
        assert all(v["rel_error"] <= f4["tolerance"] for v in us), kind
        # progressive sensitivity: at every full-size depth-2 minimum the forgetting is positive and grows after it
        assert all(0 < v["forgetting_at_min"] < v["forgetting_last"] for v in us), kind
    control = [v for v in f4["depth1_control"]["per_lr"].values() if v["is_turning_point"]]
    assert control and all(v["forgetting_at_min"] < 0 for v in control)
    l2 = summary["F5"]["l2_to_pretrained"]
    assert len([k for k in l2 if float(k) > 0]) >= 4
