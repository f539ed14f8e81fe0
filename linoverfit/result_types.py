r"""The results of the sweeps, simulated or predicted alike: frozen dataclasses of arrays with a
leading checkpoint axis, pytrees, with ``to_dict``, ``to_xarray``, atomic ``save`` and ``load``.

* :class:`PretrainResult`: checkpoints of one pre-training run (:func:`linoverfit.pretrain`,
  :func:`linoverfit.theory.pretrain`);
* :class:`FinetuneResult`: every checkpoint fine-tuned at every learning rate
  (:func:`linoverfit.finetune`, :func:`linoverfit.theory.finetune`);
* :class:`SensitivityResult`: the loss under Gaussian weight noise per checkpoint and noise scale
  (:func:`linoverfit.sensitivity.gaussian`, :func:`linoverfit.theory.gaussian`).

Every result carries the checkpoints' step counts ``steps`` and their gradient-flow time ``t``,
the cumulative pre-training learning rate :math:`t_k = \sum_{j<k}\eta_j` (``lr * steps`` at a
constant rate); a result derived from a run carries the run's ``t``, schedule included.
And the warnings and errors the sweeps raise: :class:`DivergenceError`, :class:`DivergenceWarning`,
:class:`NonFiniteWarning`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .networks import end_to_end
from .results import Result, expect_shape, expect_weights, result, static
from .tasks import Dataset, Task
from .tuned import TunedFinetune, at_lr

__all__ = ["PretrainResult", "FinetuneResult", "SensitivityResult", "DivergenceError", "DivergenceWarning",
           "NonFiniteWarning"]


def _flow_time(t, lr, steps) -> np.ndarray:
    """The checkpoints' gradient-flow time: the stored cumulative learning rate ``t``, else ``lr * steps``."""
    if t is not None:
        return np.asarray(t, dtype=np.float64)
    return float(lr) * np.asarray(steps, dtype=np.float64)


def checkpoint_axis(run) -> dict:
    r"""The checkpoint axis every result computed from pre-training run ``run`` shares with it, as
    keyword arguments: ``steps`` ``(C,)``, ``pretrain_lr`` (the run's peak rate) and ``pretrain_t``
    ``(C,)``, the run's own time :math:`t_k = \sum_{j<k}\eta_j` when it had a schedule (``None`` for a
    constant rate, where :math:`t = \eta\cdot\text{steps}`). The one place results copy it from a run, so
    every result's ``t`` equals ``run.t``."""
    return dict(steps=np.asarray(run.steps), pretrain_lr=float(run.lr),
                pretrain_t=None if run.times is None else np.asarray(run.t))


def checked_run(run, needs: str | None = None):
    """``run`` checked to be a :class:`PretrainResult` that kept its weights (what every call starting
    from its checkpoints needs); a ``TypeError`` / ``ValueError`` naming ``run`` and the fix, ``needs``
    (e.g. ``"fine-tuning"``) saying what needs the weights."""
    if not isinstance(run, PretrainResult):
        raise TypeError(f"run must be a PretrainResult from lo.pretrain or lo.theory.pretrain, got {type(run).__name__}")
    if run.weights is None:
        raise ValueError("run has no weights (it was pre-trained with lo.pretrain(..., keep_weights=False))"
                         + (f"; {needs} needs them" if needs else ""))
    return run


class DivergenceError(FloatingPointError):
    """Pre-training produced a non-finite or exploding loss; ``.step`` and ``.seed`` say where."""

    def __init__(self, message: str, step: int | None = None, seed: int | None = None,
                 checkpoint: int | None = None) -> None:
        super().__init__(message)
        self.step, self.seed, self.checkpoint = step, seed, checkpoint


class DivergenceWarning(RuntimeWarning):
    """Some fine-tuning runs diverged; they are marked in ``FinetuneResult.diverged``."""


@result
class PretrainResult(Result):
    r"""Checkpoints of one pre-training sweep.

    Shapes (``C`` checkpoints, optional ``S`` seeds when the initialisation was batched):

    * ``steps`` ``(C,)`` step counts; ``t`` the gradient-flow time, the cumulative learning rate
      :math:`t_k = \sum_{j<k}\eta_j` (``lr * steps`` at a constant rate; stored in ``times`` under a schedule).
    * ``loss`` ``(C[, S])`` training-objective loss at each checkpoint.
    * ``weights``: tuple of ``L`` arrays ``(C[, S], n_l, n_{l-1})``, or ``None`` if
      ``keep_weights=False``.
    * ``task``: the pre-training objective (Task or Dataset); ``lr`` (the constant rate, or the
      largest value of a schedule), ``weight_decay``.
    * ``times`` ``(C,)``: cumulative learning rate at the checkpoints when ``lr`` was a schedule, else ``None``.
    * ``batch_size``: minibatch size (``None`` for full-batch); ``online``: fresh samples every step.
    """

    steps: np.ndarray
    loss: jax.Array
    weights: tuple | None
    task: Task | Dataset
    lr: float
    weight_decay: float = 0.0
    times: np.ndarray | None = None
    batch_size: int | None = static(None)
    online: bool = static(False)
    prediction: str | None = static(None)  # lo.theory.pretrain: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.pretrain: exact for GD at this lr (round-off)

    _dims = {"loss": ("checkpoint", "seed"), "weights": ("checkpoint", "seed")}

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t)}

    def _seeds(self) -> int | None:
        return self.loss.shape[1] if self.batched else None

    @property
    def t(self) -> np.ndarray:
        """Gradient-flow time of each checkpoint: the cumulative learning rate :math:`\\sum_{j<k}\\eta_j`."""
        return _flow_time(self.times, self.lr, self.steps)

    @property
    def samples_seen(self) -> np.ndarray:
        """Samples drawn up to each checkpoint, ``batch_size * steps`` (online SGD and minibatches)."""
        if self.batch_size is None:
            raise ValueError("full-batch training draws no samples; pass batch_size= (and online=True for a Task)")
        return self.batch_size * np.asarray(self.steps, dtype=np.int64)

    @property
    def batched(self) -> bool:
        """True when the run carries a seed axis (``loss`` is ``(C, S)``)."""
        return np.ndim(self.loss) == 2

    def _check_consistent(self):
        C = np.size(self.steps)
        expect_shape("steps", self.steps, (C,))
        if np.ndim(self.loss) not in (1, 2) or np.shape(self.loss)[0] != C:
            raise ValueError(f"loss has shape {np.shape(self.loss)}, expected ({C},) or ({C}, seeds) for {C} checkpoints")
        expect_weights("weights", self.weights, np.shape(self.loss))

    @property
    def end_to_end(self):
        """End-to-end maps ``(C[, S], d_out, d_in)``."""
        if self.weights is None:
            raise ValueError("this run kept no weights (lo.pretrain(..., keep_weights=False)); pre-train with keep_weights=True")
        return end_to_end(self.weights)


@result
class FinetuneResult(Result):
    r"""Fine-tuning from every checkpoint at every learning rate.

    Shapes (``C`` checkpoints, ``R`` learning rates, optional ``S`` seeds, ``K`` records):

    * ``steps`` ``(C,)`` pre-training steps of the checkpoints; ``lr`` ``(R,)``.
    * ``pretrain_loss_before`` / ``finetune_loss_before`` ``(C[, S])`` at the checkpoint.
    * ``pretrain_loss_after`` / ``finetune_loss_after`` ``(C, R[, S])`` after ``ft_steps`` steps;
      NaN where the run diverged.
    * ``diverged`` ``(C, R[, S])`` bool and ``diverged_step`` (``-1`` if not).
    * ``record_steps`` ``(K,)`` and ``pretrain_loss_trajectory`` / ``finetune_loss_trajectory``
      ``(C, R[, S], K)`` when ``record_every`` was given, else ``None``.
    * ``weights``: tuple of ``(C, R[, S], n_l, n_{l-1})`` when ``return_weights=True``.
    * ``l2`` and ``l2_on``: the penalty toward the checkpoint (``"layers"`` or ``"map"``, see
      :func:`linoverfit.finetune`); the recorded fine-tuning losses exclude it.
    """

    steps: np.ndarray
    lr: np.ndarray
    ft_steps: int = static()
    l2: float
    pretrain_lr: float
    pretrain_loss_before: jax.Array
    finetune_loss_before: jax.Array
    pretrain_loss_after: jax.Array
    finetune_loss_after: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array
    record_steps: np.ndarray | None = None
    pretrain_loss_trajectory: jax.Array | None = None
    finetune_loss_trajectory: jax.Array | None = None
    weights: tuple | None = None
    pretrain_t: np.ndarray | None = None
    past_edge: jax.Array | None = None  # lo.theory.finetune: lr at or past the stability edge, (C, R[, S])
    prediction: str | None = static(None)  # lo.theory.finetune: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.finetune: exact for GD at these lrs (round-off)
    l2_on: str = static("layers")  # the penalty l2 weighs: "layers" (layer pull) or "map" (end-to-end map)

    _dims = {
        **{k: ("checkpoint", "seed") for k in ("pretrain_loss_before", "finetune_loss_before")},
        **{k: ("checkpoint", "lr", "seed") for k in ("pretrain_loss_after", "finetune_loss_after", "diverged",
                                                     "diverged_step", "weights", "past_edge")},
        **{k: ("checkpoint", "lr", "seed", "record") for k in ("pretrain_loss_trajectory", "finetune_loss_trajectory")},
    }

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t), "lr": ("lr", self.lr),
                "record_steps": ("record", self.record_steps)}

    def _seeds(self) -> int | None:
        return self.pretrain_loss_before.shape[1] if np.ndim(self.pretrain_loss_before) == 2 else None

    @property
    def t(self) -> np.ndarray:
        """Pre-training gradient-flow time of each checkpoint (the run's cumulative learning rate)."""
        return _flow_time(self.pretrain_t, self.pretrain_lr, self.steps)

    def _check_consistent(self):
        C, R = np.size(self.steps), np.size(self.lr)
        expect_shape("steps", self.steps, (C,))
        expect_shape("lr", self.lr, (R,))
        lead = np.shape(self.pretrain_loss_before)
        if len(lead) not in (1, 2) or lead[0] != C:
            raise ValueError(f"pretrain_loss_before has shape {lead}, expected ({C},) or ({C}, seeds)")
        expect_shape("finetune_loss_before", self.finetune_loss_before, lead)
        after = (C, R) + lead[1:]
        for name in ("pretrain_loss_after", "finetune_loss_after", "diverged", "diverged_step"):
            expect_shape(name, getattr(self, name), after)
        if self.record_steps is not None:
            K = np.size(self.record_steps)
            for name in ("pretrain_loss_trajectory", "finetune_loss_trajectory"):
                expect_shape(name, getattr(self, name), after + (K,))
        expect_weights("weights", self.weights, after)

    @property
    def forgetting(self):
        """Pre-training loss after fine-tuning minus before, ``(C, R[, S])``."""
        return self.pretrain_loss_after - jnp.expand_dims(self.pretrain_loss_before, 1)

    @property
    def plasticity(self):
        """Fine-tuning loss before minus after (how much the new task was learnt), ``(C, R[, S])``."""
        return jnp.expand_dims(self.finetune_loss_before, 1) - self.finetune_loss_after

    def at_lr(self, lr, *, interpolation: str = "linear", steps: int | None = None,
              missing: str = "raise") -> TunedFinetune:
        r"""The result read at one learning rate per checkpoint :math:`\lambda_c`, ``lr`` ``(C,)`` or ``(C, K)``:
        a :class:`~linoverfit.tuned.TunedFinetune` with losses after ``(C, K[, S])``, interpolated in
        :math:`(\log\eta, \log y)` between the grid rates (:func:`linoverfit.tuned.at_lr`, which
        documents the arguments), so ``lo.turning_point`` judges the tuned curves like the grid's."""
        return at_lr(self, lr, interpolation=interpolation, steps=steps, missing=missing)

    def as_run(self, task: Task | Dataset, lr: float | None = None) -> PretrainResult:
        r"""The fine-tuned weights at one learning rate as a :class:`PretrainResult`, so that the next
        stage starts from them (``lo.finetune``, ``lo.sensitivity.gaussian`` and their ``lo.theory``
        mirrors take it as ``run``): pre-train :math:`\to` post-train :math:`\to` fine-tune, no hand-chaining.

        The checkpoint axis stays the pre-training one (``steps``, ``t`` ``(C,)``), so the next stage's
        U-curves are still over pre-training time. ``weights`` ``(C[, S], n_l, n_{l-1})`` are this
        result's at learning rate ``lr``; ``loss`` ``(C[, S])`` is ``finetune_loss_after`` there (the
        objective this stage minimised); ``task`` is the task this stage fine-tuned on (pass that
        same task: the result does not store it). Runs that diverged at that rate carry their
        non-finite weights on, and the next stage marks them diverged.

        Args:
          task: the fine-tuning task of this stage (Task or Dataset).
          lr: one of ``self.lr``; may be omitted when there is only one.
        """
        if self.weights is None:
            raise ValueError("this fine-tuning result kept no weights: fine-tune with lo.finetune(..., return_weights=True) to start "
                             "another stage from it")
        if not isinstance(task, (Task, Dataset)):
            raise TypeError(f"task must be the Task or Dataset this stage fine-tuned on, got {type(task).__name__}")
        lrs = np.asarray(self.lr, np.float64)
        if lr is None:
            if lrs.size != 1:
                raise ValueError(f"this result has {lrs.size} learning rates {lrs.tolist()}: pass lr= (one of them)")
            r = 0
        else:
            hit = np.flatnonzero(np.isclose(lrs, float(lr), rtol=1e-12, atol=0.0))
            if hit.size != 1:
                raise ValueError(f"lr={lr!r} is not one of this result's learning rates {lrs.tolist()}")
            r = int(hit[0])
        return PretrainResult(
            steps=np.asarray(self.steps), loss=self.finetune_loss_after[:, r], weights=tuple(w[:, r] for w in self.weights),
            task=task, lr=self.pretrain_lr, times=np.asarray(self.t, np.float64), prediction=self.prediction,
            exact=self.exact)


class NonFiniteWarning(RuntimeWarning):
    """Some Monte Carlo estimates overflowed (non-finite); they are named in the message."""


@result
class SensitivityResult(Result):
    r"""Monte Carlo sensitivity per checkpoint and noise scale.

    Shapes (``C`` checkpoints, ``G`` noise scales, optional ``S`` seeds):
    ``steps`` ``(C,)``, ``gamma`` ``(G,)``, ``loss`` ``(C[, S])`` unperturbed loss,
    ``perturbed_loss`` ``(C, G[, S])`` the estimate of :math:`\mathbb E[L(W+\gamma E)]`,
    ``sensitivity`` ``(C, G[, S])`` the estimate of :math:`S(W,\gamma)` and ``stderr`` its
    Monte Carlo standard error (sample std of :math:`L(W+\gamma E)-L(W)` over ``sqrt(samples)``);
    ``pretrain_t`` ``(C,)`` the run's cumulative learning rate at the checkpoints when it was a
    schedule (else ``None``: ``t = pretrain_lr * steps``).
    """

    steps: np.ndarray
    gamma: np.ndarray
    samples: int = static()
    pretrain_lr: float
    loss: jax.Array
    perturbed_loss: jax.Array
    sensitivity: jax.Array
    stderr: jax.Array
    pretrain_t: np.ndarray | None = None
    prediction: str | None = static(None)  # lo.theory.gaussian: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.gaussian: True (a closed-form expectation)

    _dims = {"loss": ("checkpoint", "seed"),
             **{k: ("checkpoint", "gamma", "seed") for k in ("perturbed_loss", "sensitivity", "stderr")}}

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t), "gamma": ("gamma", self.gamma)}

    def _seeds(self) -> int | None:
        return self.loss.shape[1] if np.ndim(self.loss) == 2 else None

    @property
    def t(self) -> np.ndarray:
        """Pre-training gradient-flow time of each checkpoint (the run's cumulative learning rate)."""
        return _flow_time(self.pretrain_t, self.pretrain_lr, self.steps)

    def _check_consistent(self):
        C, G = np.size(self.steps), np.size(self.gamma)
        expect_shape("steps", self.steps, (C,))
        expect_shape("gamma", self.gamma, (G,))
        lead = np.shape(self.loss)
        if len(lead) not in (1, 2) or lead[0] != C:
            raise ValueError(f"loss has shape {lead}, expected ({C},) or ({C}, seeds)")
        for name in ("perturbed_loss", "sensitivity", "stderr"):
            expect_shape(name, getattr(self, name), (C, G) + lead[1:])
