"""The step loop of every simulation and exact-GD prediction: ``lax.fori_loop`` with a traced length."""

from __future__ import annotations

import jax

__all__ = ["UNROLL", "SPEC_UNROLL", "fori"]

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
