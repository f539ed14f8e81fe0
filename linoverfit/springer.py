r"""Springer et al.'s setting as a preset: depth 2, whitened inputs, tasks that share their singular
vectors and differ only in their singular values, the init :math:`W_1(0) = W_2(0) = e^{-T}I`, and
the idealised balanced rank-:math:`i` checkpoints.

The setting of Springer, Goyal, Wen, Kumar, Yue, Malladi, Neubig & Raghunathan, "Overtrained
Language Models Are Harder to Fine-Tune" (2025, arXiv:2503.19206, Section 4), as restated by
Feng, Ghosal, Springer, Zhong & Raghunathan (2026, arXiv:2605.12705, App. C):

* a depth-2 linear network :math:`\theta = W_2W_1` of width :math:`d`, inputs with
  :math:`\Sigma = I`, no label noise, and the library's loss
  :math:`L(\theta) = \tfrac12\lVert\theta - A\rVert_F^2`;
* a pre-training teacher :math:`A = U\operatorname{diag}(\sigma)V^\top` and fine-tuning teachers
  :math:`B = U\operatorname{diag}(\sigma')V^\top` with the *same* :math:`U, V`: the misalignment
  between the tasks is the gap :math:`\sigma'_i - \sigma_i`, mode by mode;
* the init :math:`W_1(0) = W_2(0) = e^{-T}I`. It is balanced, and aligned with the teachers when
  :math:`U = V` (the default: :math:`U = V = I`, or one Haar-random :math:`U = V` from a ``key``),
  so every mode then follows its own scalar dynamics exactly; with ``independent=True``
  (:math:`U \ne V`) it is not aligned and the modes couple;
* the idealised pre-trained checkpoint of rank :math:`i`: the balanced truncation
  :math:`W_1 = V\operatorname{diag}(a)V^\top`, :math:`W_2 = U\operatorname{diag}(a)V^\top` with
  :math:`a_j = \sqrt{\sigma_j}` for :math:`j \le i` and ``floor`` (default 0) otherwise, so that
  :math:`\theta = U\operatorname{diag}(\sigma_{1..i}, 0, \ldots)V^\top` (the hidden basis :math:`V`
  is the one gradient descent from :math:`e^{-T}I` keeps);
* fine-tuning: ``K`` steps of GD with a bounded learning rate on :math:`L_B(\theta) + \lambda\lVert\theta - \theta_0\rVert_F^2`,
  ``lo.finetune(net, run, task, l2=lam, l2_on="map")`` (predicted exactly by
  ``lo.theory.mirror.finetune(..., l2_on="map")``, per mode with ``method="modes"``).

Under gradient flow from :math:`e^{-T}I` mode :math:`i` is
:math:`s_i(t) = \sigma_i/\big(1 + (\sigma_ie^{2T} - 1)e^{-2\sigma_it}\big)`, half learnt at
:math:`t_i = \ln(\sigma_ie^{2T} - 1)/(2\sigma_i)` (:meth:`Setting.learn_times`): the rank-:math:`i`
checkpoint stands for pre-training times between :math:`t_i` and :math:`t_{i+1}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from . import validation as _v
from .networks import DeepLinear
from .result_types import PretrainResult
from .tasks import Task

__all__ = ["Setting", "setting"]


@dataclass(frozen=True, eq=False)
class Setting:
    r"""Springer et al.'s setting (module docstring): ``net`` (depth 2, width ``d``), the
    pre-training task :math:`A = U\operatorname{diag}(\sigma)V^\top`, the fine-tuning tasks
    :math:`B_k = U\operatorname{diag}(\sigma'_k)V^\top` (``finetune_tasks``, ``K`` of them; the first is
    ``finetune_task``), the init ``W0`` :math:`= (e^{-T}I, e^{-T}I)`, ``T``, and ``U``, ``V`` ``(d, d)``.
    """

    net: DeepLinear
    pretrain_task: Task
    finetune_tasks: tuple
    W0: tuple
    T: float
    U: np.ndarray
    V: np.ndarray

    @property
    def finetune_task(self) -> Task:
        r"""The first fine-tuning task :math:`B_1 = U\operatorname{diag}(\sigma'_1)V^\top`."""
        return self.finetune_tasks[0]

    @property
    def sigma(self) -> np.ndarray:
        r"""The pre-training singular values :math:`\sigma` ``(d,)`` in the order of ``U``'s columns."""
        return np.diagonal(self.U.T @ np.asarray(self.pretrain_task.teacher, np.float64) @ self.V).copy()

    def learn_times(self) -> np.ndarray:
        r"""Gradient-flow time at which each mode is half learnt from :math:`e^{-T}I`,
        :math:`t_i = \ln(\sigma_ie^{2T} - 1)/(2\sigma_i)`, shape ``(d,)`` (``inf`` for
        :math:`\sigma_i \le e^{-2T}`: that mode is never learnt)."""
        s = self.sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > np.exp(-2 * self.T), np.log(s * np.exp(2 * self.T) - 1) / (2 * s), np.inf)

    def checkpoint(self, rank: int, floor: float = 0.0) -> tuple:
        r"""The idealised balanced rank-``rank`` checkpoint: :math:`W_1 = V\operatorname{diag}(a)V^\top`,
        :math:`W_2 = U\operatorname{diag}(a)V^\top`, :math:`a_j = \sqrt{\sigma_j}` for the first
        ``rank`` modes and ``floor`` (a per-layer value, e.g. :math:`e^{-T}`) for the others. Two
        ``(d, d)`` arrays of the tasks' dtype."""
        d = self.U.shape[0]
        rank = _v.positive_int(rank, "rank") if rank != 0 else 0
        if rank > d:
            raise ValueError(f"rank must be at most d = {d}, got {rank}")
        floor = _v.positive_scalar(floor, "floor", allow_zero=True)
        a = np.where(np.arange(d) < rank, np.sqrt(self.sigma), floor)
        dtype = self.pretrain_task.teacher.dtype
        return (jnp.asarray((self.V * a) @ self.V.T, dtype), jnp.asarray((self.U * a) @ self.V.T, dtype))

    def idealised_run(self, ranks: ArrayLike | None = None, floor: float = 0.0) -> PretrainResult:
        r"""The idealised checkpoints of ``ranks`` (default ``1..d``) as a :class:`~linoverfit.PretrainResult`
        that ``lo.finetune`` / ``lo.theory.mirror.finetune`` accept: ``weights`` ``(C, d, d)``,
        ``steps`` the ranks, ``t`` (``times``) the half-learning time :math:`t_i` of the last learnt
        mode (:meth:`learn_times`; 0 for rank 0), ``loss`` the pre-training loss
        :math:`\tfrac12\sum_{j>i}(\sigma_j - \text{floor}^2)^2`."""
        d = self.U.shape[0]
        ranks = np.arange(1, d + 1) if ranks is None else _v.step_grid(ranks, "ranks")
        if ranks[-1] > d:
            raise ValueError(f"ranks must be at most d = {d}, got {ranks[-1]}")
        layers = [self.checkpoint(int(i), floor) for i in ranks]
        weights = tuple(jnp.stack([w[l] for w in layers]) for l in range(2))
        P = weights[1] @ weights[0]
        t = np.concatenate([[0.0], self.learn_times()])[ranks]
        return PretrainResult(steps=ranks, loss=self.pretrain_task.loss(P), weights=weights, task=self.pretrain_task,
                              lr=1.0, times=t, prediction="springer.idealised", exact=False)


def _orthogonal(key, d):
    """A Haar-random ``(d, d)`` orthogonal matrix, orthogonal to float64 round-off whatever JAX's precision:
    the QR of a Gaussian draw, computed in float64, columns signed by R's diagonal."""
    Q, R = np.linalg.qr(np.asarray(jax.random.normal(key, (d, d)), np.float64))
    return Q * np.sign(np.diagonal(R))


def setting(sigma_pre: ArrayLike, sigma_ft: ArrayLike, *, T: float = 8.0, key: jax.Array | int | None = None,
            independent: bool = False, dtype: DTypeLike | None = None) -> Setting:
    r"""Springer et al.'s (2025, arXiv:2503.19206) setting: tasks sharing :math:`U, V`, differing in
    singular values only, the init :math:`e^{-T}I` (module docstring).

    Args:
      sigma_pre: the pre-training singular values :math:`\sigma` ``(d,)``, all > 0.
      sigma_ft: the fine-tuning singular values :math:`\sigma'` ``(d,)``, or ``(K, d)`` for ``K``
        fine-tuning tasks (e.g. several gaps :math:`\sigma' - \sigma` on the late modes), all >= 0.
      T: the init scale :math:`W_1(0) = W_2(0) = e^{-T}I` (> 0; Springer's :math:`T`).
      key: ``None``: :math:`U = V = I` (diagonal teachers); a key or seed: one Haar-random
        orthogonal :math:`U = V`.
      independent: with a ``key``, draw :math:`V` independently of :math:`U` (the init is then not
        aligned with the teachers and the modes couple).
      dtype: of the tasks and the init (default: JAX's default float).

    Examples:
      >>> import linoverfit as lo
      >>> s = lo.springer.setting([3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 2.0], T=6.0)
      >>> s.net.widths, s.W0[0].shape
      ((4, 4, 4), (4, 4))
      >>> [round(float(x), 3) for x in s.learn_times()]
      [2.183, 3.173, 6.0, 11.307]
    """
    sig = np.asarray(sigma_pre, np.float64)
    if sig.ndim != 1 or sig.size == 0 or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"sigma_pre must be a non-empty 1-D array of positive singular values, got {sigma_pre!r}")
    ft = np.asarray(sigma_ft, np.float64)
    ft = ft[None] if ft.ndim == 1 else ft
    if ft.ndim != 2 or ft.shape[1] != sig.size or not np.all(np.isfinite(ft)) or np.any(ft < 0):
        raise ValueError(f"sigma_ft must be (d,) or (K, d) with d = {sig.size} non-negative singular values, "
                         f"got shape {np.shape(sigma_ft)}")
    T = _v.positive_scalar(T, "T")
    d = sig.size
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    if key is None:
        if independent:
            raise ValueError("independent=True needs a key (U = V = I without one)")
        U = V = np.eye(d)
    else:
        kU, kV = jax.random.split(_v.prng_key(key, "key"))
        U = _orthogonal(kU, d)
        V = _orthogonal(kV, d) if independent else U
    tasks = tuple(Task(teacher=jnp.asarray((U * s) @ V.T, dtype)) for s in (sig, *ft))
    w0 = jnp.asarray(np.exp(-T) * np.eye(d), dtype)
    return Setting(net=DeepLinear((d, d, d)), pretrain_task=tasks[0], finetune_tasks=tasks[1:], W0=(w0, w0),
                   T=T, U=U, V=V)
