"""Multi-stage protocols: a fine-tuning result with weights starts the next stage (``FinetuneResult.as_run``),
pre-train -> post-train -> fine-tune, against an independent float64 numpy chain; and Feng et al.'s
(2026, arXiv:2605.12705) Lemma C.16 through the chained API: features the last stage's inputs do not
excite (zero input variance) keep the first layer's action on them exactly. float64 (conftest enables x64)."""

import jax
import numpy as np
import pytest

import linoverfit as lo

D, LR, FT_LR, K = 4, 0.05, 0.05, 30
CK = [20, 60, 200]
#: two float64 implementations of the same GD map differ by round-off only (~1e-16 per step on O(1) values,
#: not amplified below the stability edge): 1e-10 leaves orders of margin and still catches a wrong stage
TOL = dict(rtol=1e-10, atol=1e-12)


def _gd(W1, W2, A, cov, lr, k):
    """Plain numpy: k GD steps on 1/2 tr((W2 W1 - A) cov (W2 W1 - A)^T)."""
    for _ in range(k):
        G = (W2 @ W1 - A) @ cov
        W1, W2 = W1 - lr * W2.T @ G, W2 - lr * G @ W1.T
    return W1, W2


def _loss(P, A, cov):
    D_ = P - A
    return 0.5 * np.sum(D_ * (D_ @ cov))


@pytest.fixture(scope="module")
def chain():
    pre = lo.tasks.power_law(D, D, 1.0, key=jax.random.key(0))
    post = lo.tasks.shifted(pre, kind="additive", size=0.4, key=jax.random.key(1), scale="absolute")
    # the third task: a new teacher whose inputs never excite the last input direction (Lemma C.16's setting)
    v = np.eye(D)[:, -1]
    third = lo.tasks.shifted(pre, kind="additive", size=0.6, key=jax.random.key(2), scale="absolute").with_(
        input_cov=np.eye(D) - np.outer(v, v))
    net = lo.DeepLinear((D, D, D))
    run = lo.pretrain(net, net.init(jax.random.key(3), scale=0.1), pre, lr=LR, checkpoints=CK)
    stage2 = lo.finetune(net, run, post, lr=(FT_LR, 2 * FT_LR), steps=K, return_weights=True)
    mid = stage2.as_run(post, lr=2 * FT_LR)
    stage3 = lo.finetune(net, mid, third, lr=FT_LR, steps=K, pretrain_task=post, return_weights=True)
    return pre, post, third, v, run, stage2, mid, stage3


def test_three_stages_equal_an_independent_chain(chain):
    pre, post, third, _, run, stage2, mid, stage3 = chain
    assert isinstance(mid, lo.PretrainResult) and np.array_equal(mid.steps, run.steps)
    np.testing.assert_array_equal(mid.t, run.t)  # the checkpoint axis stays pre-training time
    np.testing.assert_array_equal(mid.loss, np.asarray(stage2.finetune_loss_after)[:, 1])
    A2, A3 = (np.asarray(t.teacher) for t in (post, third))
    c2, c3 = (np.asarray(t.input_cov) for t in (post, third))
    for c in range(len(CK)):
        W1, W2 = (np.asarray(w[c]) for w in run.weights)
        W1, W2 = _gd(W1, W2, A2, c2, 2 * FT_LR, K)
        np.testing.assert_allclose(np.asarray(mid.weights[0][c]), W1, **TOL)
        before = _loss(W2 @ W1, A2, c2)
        W1, W2 = _gd(W1, W2, A3, c3, FT_LR, K)
        np.testing.assert_allclose(float(stage3.pretrain_loss_before[c]), before, **TOL)
        np.testing.assert_allclose(float(stage3.pretrain_loss_after[c, 0]), _loss(W2 @ W1, A2, c2), **TOL)
        np.testing.assert_allclose(float(stage3.finetune_loss_after[c, 0]), _loss(W2 @ W1, A3, c3), **TOL)


def test_unexcited_features_keep_the_first_layer(chain):
    """Lemma C.16 (Feng et al. 2026): dL/dW1 = W2^T (P - B) Sigma, so with Sigma v = 0 the last stage leaves
    W1 v unchanged, exactly (round-off)."""
    *_, v, _, _, mid, stage3 = chain
    before = np.asarray(mid.weights[0]) @ v
    after = np.asarray(stage3.weights[0][:, 0]) @ v
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-13)
    assert np.max(np.abs(np.asarray(stage3.weights[0][:, 0]) - np.asarray(mid.weights[0]))) > 1e-3  # W1 did move


def test_as_run_bad_input(chain):
    pre, post, *_, stage2, _, _ = chain
    with pytest.raises(ValueError, match="pass lr="):
        stage2.as_run(post)
    with pytest.raises(ValueError, match="not one of this result's learning rates"):
        stage2.as_run(post, lr=0.3)
    with pytest.raises(TypeError, match="task must be the Task or Dataset"):
        stage2.as_run("post", lr=FT_LR)
    net = lo.DeepLinear((D, D, D))
    no_weights = lo.finetune(net, lo.pretrain(net, net.init(jax.random.key(3), scale=0.1), pre, lr=LR, checkpoints=CK),
                             post, lr=FT_LR, steps=3)
    with pytest.raises(ValueError, match="return_weights=True"):
        no_weights.as_run(post)
