"""F5 (the regularisation trade-off) and F6 (criteria for tuning the fine-tuning lr): the selection
rules, and the summary keys and acceptance statements on the quick run (through
``tests/test_figures.py``, which runs every figure once) and on the committed ``paper_figs/summary.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linoverfit.experiments.f6_tuned_lr import at_matched_loss, best_lr, tune_to_target

COMMITTED = Path(__file__).resolve().parents[1] / "paper_figs" / "summary.json"
CRITERIA = ("target_loss", "best_finetune_loss", "best_sum", "matched_finetune_loss")


# ----------------------------------------------------------------------------- selection rules


@settings(max_examples=25, deadline=None)
@given(st.floats(-2.6, -0.4), st.floats(0.2, 3.0))
def test_best_lr_interpolates_off_the_grid(m, a):
    """Criterion and value exactly quadratic in log lr around an optimum between grid points: the
    parabolic vertex and the interpolated value are exact (round-off), while the grid point is not."""
    lrs = 10.0 ** (np.arange(-24, 1) / 8)  # 8 per decade, as F6
    x = np.log(lrs)
    m = m * np.log(10)
    crit = np.exp((x - m) ** 2)[None]          # log crit = (x - m)^2: vertex at m
    value = np.exp(1.0 + a * (x - m) ** 2)[None]  # log value quadratic: exactly e at the vertex
    lr, v = best_lr(lrs, crit, value)
    assert abs(np.log(lr[0]) - m) < 1e-8
    assert abs(v[0] / np.e - 1) < 1e-8


def test_reading_the_grid_fakes_a_degradation_interpolation_removes_it():
    """Issue 9, point 2: the optimum drifts through the grid over checkpoints while the value at the
    optimum stays the same. Read off the grid the curve wiggles by a few %; interpolated it is flat."""
    lrs = 10.0 ** (np.arange(-24, 1) / 8)
    x = np.log(lrs)
    m = np.linspace(-2.0, -1.0, 40)[:, None] * np.log(10)   # optimum per checkpoint
    crit = np.exp((x[None] - m) ** 2)
    value = np.exp(1.0 + 2.0 * (x[None] - m) ** 2)
    grid = value[np.arange(len(m)), np.argmin(crit, axis=1)]
    _, interp = best_lr(lrs, crit, value)
    assert grid.max() / grid.min() - 1 > 0.01        # the fake rise
    assert interp.max() / interp.min() - 1 < 1e-8   # gone


def test_best_lr_skips_diverged_neighbours_and_empty_rows():
    lrs = np.array([0.1, 0.2, 0.4, 0.8])
    crit = np.array([[3.0, 2.0, 1.0, np.nan], [np.nan] * 4])
    lr, v = best_lr(lrs, crit, crit)
    assert lr[0] == 0.4 and v[0] == 1.0      # grid point: its right neighbour diverged
    assert np.isnan(lr[1]) and np.isnan(v[1])


def test_tune_to_target_interpolates_the_crossing():
    """Fine-tuning loss exp(-lr) (log-linear in lr only on the grid's log scale is approximate, so
    use a loss that is exactly linear in log lr in log space): the crossing is exact."""
    lrs = np.geomspace(0.01, 1.0, 9)
    f = (lrs / 0.01) ** -1.0 * 0.5             # log f linear in log lr
    p = lrs ** 0.5                             # pre-training loss grows with lr (more forgetting)
    lr, pre = tune_to_target(lrs, f[None], p[None], target=0.05)
    assert abs(lr[0] / 0.1 - 1) < 1e-12 and abs(pre[0] / 0.1**0.5 - 1) < 1e-12
    lr, pre = tune_to_target(lrs, f[None], p[None], target=1e-6)
    assert np.isnan(lr[0]) and np.isnan(pre[0])


def test_at_matched_loss_interpolates_between_records():
    steps = np.array([0, 10, 20, 30])
    f = 0.5 * np.exp(-0.1 * steps)             # log f linear in steps
    p = np.exp(0.01 * steps)
    s, pre = at_matched_loss(steps, f[None], p[None], target=0.5 * np.exp(-1.5))
    assert abs(s[0] - 15) < 1e-12 and abs(pre[0] / np.exp(0.15) - 1) < 1e-12
    s, _ = at_matched_loss(steps, f[None], p[None], target=1e-9)
    assert np.isnan(s[0])


# ----------------------------------------------------------------------------- summaries


def assert_f6(f6: dict) -> None:
    """Keys and acceptance of F6 (issue 9, point 2) on any run size."""
    crit = f6["criteria"]
    assert tuple(crit) == CRITERIA
    for name, c in crit.items():
        assert isinstance(c["survives"], bool), name
        assert c["depth_percent"] == f6["depth_percent"] == 1.0
        assert c["settings"], name
        for sub, r in c["settings"].items():
            assert isinstance(r["survives"], bool) and r["survives"] == r["is_turning_point"], (name, sub)
            if r["survives"]:  # a surviving degradation is an interior minimum and a rise of at least the depth
                assert r["rise_percent"] >= r["depth_percent"] and r["t_star"] is not None, (name, sub)
            assert r["degradation_percent"] is not None and r["degradation_percent"] >= 0, (name, sub)
        # the headline is the worst setting
        assert c["survives"] == any(r["survives"] for r in c["settings"].values()), name
    budgets = {int(k.split("=")[1]): r for k, r in crit["best_finetune_loss"]["settings"].items()}
    assert len(budgets) >= 2 and min(budgets) <= 30
    # acceptance 2: pinning the lr at the stability edge leaves the degradation at a budget <= 30 steps
    assert any(r["survives"] and r["rise_percent"] > 1.0 for b, r in budgets.items() if b <= 30), budgets
    # setting the stopping point by a fine-tuning target removes it
    assert not crit["target_loss"]["survives"], crit["target_loss"]
    assert all(c["ok"] for c in f6["checks"]), f6["checks"]
    if not f6["quick"]:
        # the prediction of GD (lo.theory.curves.finetune_curve) agrees with the simulated selection within 2%
        # where both selected lrs lie below the stability edge (past it GD is chaotic)
        for name in ("target_loss", "best_finetune_loss", "best_sum"):
            for sub, r in crit[name]["settings"].items():
                if r["checkpoints_below_edge"]:
                    assert r["max_rel_diff_theory_vs_sim_below_edge"] <= 0.02, (name, sub, r)


def assert_f5(f5: dict) -> None:
    """Keys and acceptance of F5 (issue 9, point 3) on any run size."""
    for key in ("l2_to_pretrained", "pretrain_weight_decay"):
        rows = f5[key]
        strengths = [float(k) for k in rows]
        assert strengths[0] == 0 and strengths == sorted(strengths) and len(strengths) >= 3
        for k, r in rows.items():
            for field in ("t_star_measured", "degradation_last_vs_min_percent", "finetune_loss_after",
                          "is_turning_point", "depth_percent"):
                assert field in r, (key, k, field)
            if r["is_turning_point"]:
                assert r["t_star_measured"] is not None and r["rise_percent"] >= r["depth_percent"]
        vals = list(rows.values())
        # the trade-off: the regulariser reaches a degradation below 1% ...
        assert any(r["degradation_last_vs_min_percent"] < 1.0 for r in vals), key
        assert f5["scaling"][key]["first_below_1_percent"] is not None
        # ... and pays for it with the fine-tuning loss, which grows with the strength
        cost = [r["finetune_loss_after"] for r in vals]
        assert np.all(np.diff(cost) > 0), (key, cost)
    l2 = list(f5["l2_to_pretrained"].values())
    deg = [r["degradation_last_vs_min_percent"] for r in l2]
    assert np.all(np.diff(deg) <= 0), deg  # the l2 pull only shrinks the degradation
    t_star = [r["t_star_measured"] for r in l2 if r["is_turning_point"]]
    assert np.all(np.diff(t_star) > 0), t_star  # ... and delays T* while a turning point remains
    assert all(c["ok"] for c in f5["checks"]), f5["checks"]


@pytest.mark.skipif(not COMMITTED.exists(), reason="paper_figs/summary.json not generated yet")
def test_committed_f5_f6():
    """The committed full-size numbers: the same statements, and the measured power law of the
    l2 degradation (docs/theory.md, 4.5: about 1/lambda^2 once the pull dominates)."""
    summary = json.loads(COMMITTED.read_text())
    assert_f5(summary["F5"])
    assert_f6(summary["F6"])
    assert not summary["F5"]["quick"] and not summary["F6"]["quick"]
    # float64 (issue 18: in float32 the strongest pulls' degradations, ~1e-5 relative, were round-off
    # and the fit gave -2.29); the pull-dominated law of docs/theory.md 4.5 is lambda^-2
    assert summary["F5"]["dtype"] == "float64"
    p = summary["F5"]["scaling"]["l2_to_pretrained"]["exponent"]
    assert -2.2 < p < -1.8, p  # float64: -2.02 (an independent float64 simulation of the same draw: -2.020)
