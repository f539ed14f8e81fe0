"""The step loop of every simulation and exact-GD prediction: ``lax.fori_loop`` with a traced length."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import progress as _progress

__all__ = ["UNROLL", "SPEC_UNROLL", "fori", "fori_ticking"]

#: GD steps per iteration of the compiled step loops. Unrolling copies the step into the program: with
#: XLA's CPU runtime 4 steps per iteration ran no faster (W1 pre-training and fine-tuning, online SGD,
#: same results bit for bit) and compiled 25-30% slower (an online SGD program 1 s more), and compilation
#: dominates the figure runs; so 1.
UNROLL = 1
#: Steps per iteration for the traced optimizer specs (momentum, Adam, SAM): XLA fuses Adam's elementwise
#: update differently when its loop is unrolled, which moves its float32 results by ~1e-3 relative; 4 keeps
#: the published numbers (F9) unchanged.
SPEC_UNROLL = 4


def fori(start, n, body, carry, unroll=UNROLL):
    """``lax.fori_loop(start, start + n, body, carry)`` for a traced ``n``, ``unroll`` steps per iteration."""
    if unroll == 1:
        return jax.lax.fori_loop(start, start + n, body, carry)

    def block(j, c):
        i = start + j * unroll
        for k in range(unroll):
            c = body(i + k, c)
        return c

    n_blocks = n // unroll
    carry = jax.lax.fori_loop(0, n_blocks, block, carry)
    return jax.lax.fori_loop(start + n_blocks * unroll, start + n, body, carry)


def fori_ticking(start, n, body, carry, block, unroll=UNROLL, report=True):
    """:func:`fori` over steps ``[start, start + n)`` that also ticks the open progress bar by ``block``
    steps each time a global step count that is a multiple of ``block`` (a traced int) is reached. The
    ticks are where an interrupted sweep stops (:func:`linoverfit.progress.cancelled`), so ``block``
    bounds the latency of Ctrl-C. With ``report=False`` the ticks advance nothing and only let an
    interrupt in (the sweep reports progress per chunk instead). The steps, their order and their
    unrolling are exactly :func:`fori`'s, so the results are bit for bit those of :func:`fori`."""
    amount = block if report else 0
    if unroll == 1:
        # block-aligned pieces, each a plain loop: one test per piece, not per step
        end = start + n

        def piece(j, c):
            lo = jnp.maximum(start, j * block)
            hi = jnp.minimum(end, (j + 1) * block)
            c = jax.lax.fori_loop(lo, hi, body, c)
            _progress.tick_blocks(lo, hi - lo, block, c, amount)  # one tick when the piece ends on a boundary
            return c

        return jax.lax.fori_loop(start // block, (end + block - 1) // block, piece, carry)

    # unrolled: keep fori's grouping of steps (XLA fuses an unrolled group differently from single
    # steps, which moves Adam's float32 results), and test for a crossed boundary once per group
    def group(j, c):
        i = start + j * unroll
        for k in range(unroll):
            c = body(i + k, c)
        _progress.tick_blocks(i, unroll, block, c, amount)
        return c

    def single(i, c):
        c = body(i, c)
        _progress.tick_blocks(i, 1, block, c, amount)
        return c

    n_groups = n // unroll
    carry = jax.lax.fori_loop(0, n_groups, group, carry)
    return jax.lax.fori_loop(start + n_groups * unroll, start + n, single, carry)
