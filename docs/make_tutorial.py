"""Generate docs/tutorial.ipynb (outputs stripped) from the cells below.

The notebook is the artefact users open; this script is its source of truth, so edits go here:

    python docs/make_tutorial.py          # rewrite docs/tutorial.ipynb
    python docs/make_tutorial.py --check  # exit 1 if docs/tutorial.ipynb is out of date

``tests/test_tutorial.py`` executes the notebook and checks it matches this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tutorial.ipynb"
THEORY = "theory.md"  # relative link from docs/tutorial.ipynb

CELLS: list[tuple[str, str]] = []


def md(text: str) -> None:
    CELLS.append(("markdown", text.strip("\n")))


def code(text: str) -> None:
    CELLS.append(("code", text.strip("\n")))


# ----------------------------------------------------------------------------- 0. set-up

md(f"""
# Why more pre-training can make a model worse after fine-tuning

*A ten-minute tour of* `linoverfit` *in deep linear networks.*

Springer et al. (2025, [arXiv:2503.19206](https://arxiv.org/abs/2503.19206)) found that language
models pre-trained for longer can end up **worse after fine-tuning**: the parameters become
progressively more sensitive to *any* modification, and past a turning point $T^*$ extra
pre-training hurts. In a deep linear network the whole mechanism can be computed exactly. This
notebook walks through it in five steps, each a few lines of the public API, one plot and the
closed form from [the theory notes]({THEORY}) drawn over the simulation
(**lines = theory, markers = simulation**):

1. a deep linear network learns the teacher's modes one at a time;
2. each learnt mode makes the weights more sensitive to noise (progressive sensitivity);
3. so the loss after a perturbation is U-shaped in pre-training time, with a predicted turning point $T^*$;
4. the same U-curve appears after fine-tuning;
5. regularisation delays the turning point but does not remove it.

Everything runs on a laptop CPU in well under a minute (width 32, depth 2).
""")

code("""
import time
import jax
import numpy as np
import matplotlib.pyplot as plt
import linoverfit as lo
import linoverfit.plotting as lp

lp.use(**{"figure.dpi": 140})   # the house style of the paper figures, a bit larger on screen
start = time.time()
""")

md(f"""
## 1. A deep linear network learns modes one at a time

The task is a teacher matrix $A$ with singular values $\\sigma_i = i^{{-1}}$ (a power law, like the
spectra of natural data) and white inputs; the loss is $\\tfrac12\\lVert P - A\\rVert_F^2$ for the
end-to-end map $P = W_2 W_1$. We pre-train a depth-2 network by full-batch gradient descent and keep
40 log-spaced checkpoints. The *aligned* initialisation starts every teacher mode at
$s_0 = \\text{{scale}}^L$, which makes the closed form exact. A small Gaussian init
(`scheme="gaussian"`, the paper's setting) behaves the same with one effective $s_0$ per mode: pass
`s0=lo.theory.gaussian_init_s0(scale, net)` to the theory functions below instead of `scale ** net.depth`.
Time is measured as $t = \\eta \\cdot \\text{{steps}}$.
""")

code("""
d, scale, lr = 32, 1e-3, 0.05
task = lo.tasks.power_law(d_in=d, d_out=d, alpha=1.0, key=jax.random.key(0))   # sigma_i = 1/i
net = lo.DeepLinear(widths=(d, d, d))                                            # depth L = 2
s0 = scale ** net.depth
W0 = net.init(jax.random.key(1), scale=scale, scheme="aligned", task=task)
run = lo.pretrain(net, W0, task, lr=lr, checkpoints=lo.log_checkpoints(16384, 40))
run.steps.shape, run.loss.shape, [w.shape for w in run.weights]
""")

md(f"""
Each singular value $s_i(t)$ of $P$ follows the logistic $\\dot s = 2s(\\sigma_i - s)$,
$s_i(t) = \\sigma_i / (1 + (\\sigma_i/s_0 - 1)e^{{-2\\sigma_i t}})$: it sleeps near $s_0$ until
$t \\approx \\log(\\sigma_i/s_0)/(2\\sigma_i)$, then jumps to $\\sigma_i$. Large modes are learnt first,
small ones much later: *incremental learning* (Saxe et al. 2014). Theory:
[theory.md, section 1]({THEORY}#1-mode-dynamics-of-balanced-aligned-networks) (the staircase: [1.5]({THEORY}#15-incremental-learning)).
""")

code("""
t_fine = np.geomspace(run.t[0], run.t[-1], 400)
s_sim = np.linalg.svd(np.asarray(run.end_to_end), compute_uv=False)          # (checkpoints, modes)
s_th = lo.theory.mode_trajectory(task.spectrum, t_fine, s0=s0, depth=net.depth)

fig, ax = plt.subplots(figsize=(6, 3.2))
for i in range(8):
    lp.theory(ax, t_fine, s_th[:, i], color=lp.mode_color(i))
    lp.simulation(ax, run.t, s_sim[:, i], color=lp.mode_color(i))
lp.time_axis(ax)
ax.set(ylabel="singular value $s_i$ of $P$", title="modes are learnt largest first (first 8 of 32 shown)")
lp.legend(ax, colors={f"$\\\\sigma_{{{i + 1}}} = 1/{i + 1}$": lp.mode_color(i) for i in range(4)}, loc="upper left")
plt.show()
""")

# ----------------------------------------------------------------------------- 2. sensitivity

md(f"""
## 2. Progressive sensitivity

Perturb every layer with Gaussian noise, $W_l + \\gamma E_l$, $E_l$ iid $\\mathcal N(0, 1)$ entries,
and measure the sensitivity $S(W, \\gamma) = \\mathbb E[L(W + \\gamma E)] - L(W)$ by Monte Carlo.
The expectation is also exact for any weights (`lo.theory.perturbation_sensitivity`). For a depth-2
network with white inputs

$$S = \\tfrac{{\\gamma^2}}{{2}}\\big(d_{{in}}\\lVert W_2\\rVert_F^2 + d_{{out}}\\lVert W_1\\rVert_F^2\\big) + \\tfrac{{\\gamma^4}}{{2}} d_{{in}}\\,h\\,d_{{out}},$$

and each learnt mode adds $\\sigma_i$ to both squared norms. So $S$ climbs in steps, one per learnt
mode: the weights become *progressively* more sensitive the longer we pre-train. Theory:
[theory.md, section 2]({THEORY}#2-the-exact-expected-loss-under-gaussian-weight-noise) (in terms of the learnt spectrum: [2.3]({THEORY}#23-balanced-aligned-weights-sensitivity_from_spectrum)).
""")

code("""
gammas = np.array([0.03, 0.05])
color = {0.03: "tab:blue", 0.05: "tab:red"}   # one colour per gamma in the next two plots
sens = lo.sensitivity.gaussian(net, run, gamma=gammas, samples=256, key=jax.random.key(2))   # Monte Carlo
exact = lo.theory.perturbation_sensitivity(run.weights, gammas)                                  # closed form, (C, G)

fig, ax = plt.subplots(figsize=(6, 3.2))
for g, gamma in enumerate(gammas):
    c = color[gamma]
    lp.theory(ax, run.t, exact[:, g], color=c)
    lp.simulation(ax, run.t, sens.sensitivity[:, g], yerr=sens.stderr[:, g], color=c)
lp.time_axis(ax)
ax.set(yscale="log", ylabel=r"sensitivity $S(W, \\gamma)$", title="sensitivity grows as modes are learnt")
lp.legend(ax, colors={f"$\\\\gamma = {g}$": color[g] for g in gammas}, sim_label="Monte Carlo (256 draws)")
plt.show()
""")

# ----------------------------------------------------------------------------- 3. U-curve

md(f"""
## 3. The U-curve after perturbation, and the predicted turning point

What we care about is the pre-training loss *after* the perturbation,
$f(t) = \\tfrac12\\sum_i (\\sigma_i - s_i(t))^2 + S(s(t); \\gamma)$. Learning mode $i$ lowers the first
term by $\\sigma_i^2/2$ but raises the second by $\\tfrac{{\\gamma^2}}{{2}}(d_{{in}}+d_{{out}})\\,\\sigma_i$, so it pays
off only if $\\sigma_i > \\gamma^2(d_{{in}} + d_{{out}})$. Large modes are learnt first and are worth it;
the late, small ones are not. So $f$ falls, then rises: a **U-curve** whose minimum $T^*$
`lo.theory.turning_point` computes without any simulation. Theory:
[theory.md, section 3]({THEORY}#3-the-perturbation-u-curve-and-its-turning-point) (which modes are worth learning: [3.3]({THEORY}#33-which-modes-are-worth-learning-perturbation_threshold-turningpointworth)).
""")

code("""
fig, ax = plt.subplots(figsize=(6, 3.4))
for g, gamma in enumerate(gammas):
    c = color[gamma]
    curve = lo.theory.perturbed_loss_curve(task, t_fine, gamma, widths=net, s0=s0)     # f(t), closed form
    tp = lo.theory.turning_point(task, gamma=gamma, widths=net, s0=s0)                # predicted T*
    i = int(np.argmin(sens.perturbed_loss[:, g]))                                      # measured minimum
    lp.theory(ax, t_fine, curve, color=c)
    lp.simulation(ax, run.t, sens.perturbed_loss[:, g], color=c)
    lp.mark_turning_point(ax, predicted=tp.t_star, measured=run.t[i], y_measured=sens.perturbed_loss[i, g], color=c)
    print(f"gamma = {gamma}: predicted T* = {tp.t_star:6.1f} (step {tp.t_star / lr:5.0f}), "
          f"measured minimum at t = {run.t[i]:6.1f}; worth learning: {int(tp.worth.sum())} of {d} modes "
          f"(sigma_i > {tp.threshold:.3f})")
lp.theory(ax, run.t, run.loss, color="0.6", linestyle="--")   # without noise the loss keeps falling (to ~0)
lp.time_axis(ax)
ax.set(yscale="log", ylim=(0.08, 1.2), xlim=(1, run.t[-1] * 1.2), ylabel="pre-training loss after noise",
       title="more pre-training, then worse after perturbation")
lp.legend(ax, colors={**{f"$\\\\gamma = {g}$": color[g] for g in gammas}, "no noise": "0.6"},
          turning_point=True, measured_min=True, loc="lower left")
plt.show()
""")

md("""
The measured minimum (star) sits on the predicted $T^*$ (dotted line); a larger $\\gamma$ raises the
threshold, fewer modes are worth learning and the turning point comes *earlier*.
""")

# ----------------------------------------------------------------------------- 4. fine-tuning

md(f"""
## 4. The fine-tuning U-curve

Fine-tuning is a perturbation too, just not a random one. We fine-tune every checkpoint for 500 steps
on a shifted task (the teacher plus a small random matrix) at two learning rates, in one compiled
call, and record the *pre-training* loss afterwards. The theory side integrates the exact
function-space flow of balanced networks, $\\dot P = -\\sum_j (PP^\\top)^{{(L-j)/L}}\\,\\nabla L_{{ft}}(P)\\,(P^\\top P)^{{(j-1)/L}}$
(Arora et al. 2018), from each checkpoint's $P$ (`lo.theory.predict_finetune`), without touching
the parameters. A larger learning rate moves the weights further, which plays the role of a larger
$\\gamma$. Theory: [theory.md, section 4]({THEORY}#4-the-function-space-flow-and-predicted-fine-tuning) (why longer pre-training forgets more: [4.2]({THEORY}#42-why-fine-tuning-forgets-more-after-longer-pre-training)).
""")

code("""
ft_task = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(3))
ft_lrs = (0.01, 0.03)
fr = lo.finetune(net, run, ft_task, lr=ft_lrs, steps=500)                        # simulation, (C, R)
pred = lo.theory.predict_finetune(run, ft_task, lr=ft_lrs, steps=500)            # end-to-end flow, (C, R)

lr_color = {0.01: "tab:purple", 0.03: "tab:orange"}
fig, ax = plt.subplots(figsize=(6, 3.4))
for r, eta in enumerate(ft_lrs):
    c = lr_color[eta]
    after = np.asarray(fr.pretrain_loss_after[:, r])
    lp.theory(ax, run.t, pred.pretrain_loss_after[:, r], color=c)
    lp.simulation(ax, run.t, after, color=c)
    i_pred, i_sim = int(np.argmin(pred.pretrain_loss_after[:, r])), int(np.nanargmin(after))
    lp.mark_turning_point(ax, predicted=run.t[i_pred], measured=run.t[i_sim], y_measured=after[i_sim], color=c)
    print(f"fine-tuning lr = {eta}: best checkpoint predicted at t = {run.t[i_pred]:.1f}, "
          f"measured at t = {run.t[i_sim]:.1f} (of {run.t[-1]:.0f})")
lp.time_axis(ax)
ax.set(yscale="log", ylabel="pre-training loss after fine-tuning",
       title="catastrophic overtraining: fine-tuned models are best from an early checkpoint")
lp.legend(ax, colors={f"fine-tuning lr = {eta}": lr_color[eta] for eta in ft_lrs},
          theory_label="end-to-end flow (theory)", turning_point=True, measured_min=True, loc="lower left")
plt.show()
""")

# ----------------------------------------------------------------------------- 5. regularisation

md(f"""
## 5. Regularisation delays the turning point, it does not remove it

Springer et al. found that regularising fine-tuning delays the turning point. Here the regulariser is
an l2 pull toward the pre-trained weights, $\\tfrac{{\\lambda}}{{2}}\\sum_l\\lVert W_l - W_l^0\\rVert_F^2$
(`l2=` in `lo.finetune`): it keeps the fine-tuned weights close to where they started, so late modes
are disturbed less and the best checkpoint moves later. But the price is paid on the new task, which
is learnt less well, and the U-shape remains. Weight decay during pre-training does the same to the
perturbation turning point (`weight_decay=` in `lo.theory.turning_point`; with weight decay small modes
are not learnt at all, [theory.md, 1.4]({THEORY}#14-fixed-points-mode_asymptote)). The l2 pull is
simulation only: it breaks the function-space flow ([theory.md, 4.3]({THEORY}#43-predicted-fine-tuning-and-its-u-curve-predict_finetune-finetune_curve-turning_pointfinetune)).
""")

code("""
fig, ax = plt.subplots(figsize=(6, 3.2))
l2_color = {0.0: "k", 0.1: "tab:blue", 0.3: "tab:green"}
for l2, c in l2_color.items():
    res = lo.finetune(net, run, ft_task, lr=0.03, steps=500, l2=l2)
    after = np.asarray(res.pretrain_loss_after[:, 0])
    i = int(np.nanargmin(after))
    lp.simulation(ax, run.t, after, color=c, linestyle="-", linewidth=0.6)
    lp.mark_turning_point(ax, measured=run.t[i], y_measured=after[i], color=c)
    print(f"l2 = {l2}: best checkpoint at t = {run.t[i]:5.1f}, the last one is {after[-1] / after[i] - 1:6.1%} worse; "
          f"fine-tuning loss reached from the last checkpoint {float(res.finetune_loss_after[-1, 0]):.3f}")
for lam in (0.0, 0.01, 0.03):
    t_star = lo.theory.turning_point(task, gamma=0.05, widths=net, s0=s0, weight_decay=lam).t_star
    print(f"pre-training weight decay {lam}: predicted T* (gamma = 0.05) = {t_star:.1f}")
lp.time_axis(ax)
ax.set(yscale="log", ylabel="pre-training loss after fine-tuning", title="l2 toward the pre-trained weights (lr = 0.03)")
lp.legend(ax, colors={f"l2 = {l2}": c for l2, c in l2_color.items()}, theory_label=None,
          measured_min=True, loc="lower left")
plt.show()
print(f"notebook ran in {time.time() - start:.0f} s")
""")

md(f"""
## Where next

* [`docs/theory.md`]({THEORY}): the derivations behind every line above.
* [`docs/api.md`](api.md): every public function, one line of math each.
* `lo.explore()` (needs `pip install "linoverfit[widgets]"`): sliders for $\\gamma$, the spectrum
  decay $\\alpha$ and the depth, with the closed-form U-curve and $T^*$ redrawn as you drag and the
  simulation on request (the *simulate* button). `lo.explore("finetune")` does the same for the
  fine-tuning learning rate. Try it below: which depth has no turning point, and why?
* `linoverfit figures` regenerates the paper figures F1-F8.
""")

code("""
try:
    panel = lo.explore(gamma=0.05)   # an ipywidgets panel; panel.update(gamma=0.03) works from code too
except ImportError as err:           # ipywidgets is an optional extra
    panel = err
panel
""")


# ----------------------------------------------------------------------------- build


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(CELLS):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render() -> str:
    return nbformat.writes(build()) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        current = NOTEBOOK.read_text() if NOTEBOOK.exists() else ""
        if current != text:
            print(f"{NOTEBOOK} is out of date: run python docs/make_tutorial.py", file=sys.stderr)
            sys.exit(1)
    else:
        NOTEBOOK.write_text(text)
        print(f"wrote {NOTEBOOK}")
