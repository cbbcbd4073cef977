"""Zeros for a loop's state that XLA can make only where the loop begins.

A buffer of constant zeros has no operands, and XLA's scheduler places the copy each loop
takes of it (its state is updated in place) early: a backward loop's buffer would be made in
the forward and held across the step's peak of memory (ResNet-18's training step: 249 MiB;
docs/performance.md, "Memory"). Zeros computed from the loop's own operands cannot be made
before those exist.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def zeros_after(like: jax.Array, shape: tuple[int, ...], dtype, batch_axes: int = 1) -> jax.Array:
    """Zeros of `shape` and `dtype`, exact whatever `like` holds (inf and nan too), computed
    from `like`, whose leading `batch_axes` axes are those of `shape`.

    Each zero comes from the first element of its image of `like`: a batch split over
    devices needs no communication for them (with `batch_axes` 0, one element for all).
    """
    first = like[(*(slice(None),) * batch_axes, *(0,) * (like.ndim - batch_axes))]
    finite = jnp.where(jnp.isfinite(first), first, jnp.zeros((), first.dtype))
    seed = (jnp.abs(finite) * 0).astype(dtype)
    return lax.broadcast_in_dim(seed, shape, tuple(range(batch_axes)))
