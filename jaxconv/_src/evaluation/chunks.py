"""Evaluation a few images at a time: a loop over chunks of the batch.

Every term of the forward and of ∂L/∂X belongs to one image, and ∂L/∂W is a sum of
per-image terms, so a form can run on `size` images at a time and give the same sums. The
plan chooses the chunk size (`Plan.forward_chunk` and its siblings); None runs the whole batch
at once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import layout as lay


def split_images(arrays: tuple[jax.Array, ...], size: int):
    """(the arrays' first n // size·size images as (n // size, size, ...), the rest or None)."""
    n = arrays[0].shape[0]
    whole = n // size * size
    stacked = tuple(a[:whole].reshape(n // size, size, *a.shape[1:]) for a in arrays)
    rest = tuple(a[whole:] for a in arrays) if whole < n else None
    return stacked, rest


def map_chunks_as_state(fn: Callable, stacked: tuple[jax.Array, ...]) -> jax.Array:
    """`lax.map(lambda chunk: fn(*chunk), stacked)`, with each chunk handed to fn as loop
    state: the loop body slices the next chunk once, into the state."""
    count = stacked[0].shape[0]

    def step(chunk, i):
        following = jnp.minimum(i + 1, count - 1)
        upcoming = tuple(lax.dynamic_index_in_dim(a, following, keepdims=False) for a in stacked)
        return upcoming, fn(*chunk)

    _, out = lax.scan(step, tuple(a[0] for a in stacked), jnp.arange(count))
    return out


def map_over_images(
    fn: Callable, arrays: tuple[jax.Array, ...], size: int | None, chunk_as_state: bool = False
) -> jax.Array:
    """fn(*arrays), where image i of the result depends on image i of each array only,
    evaluated `size` images at a time (None: all at once).

    With `chunk_as_state`, each chunk reaches fn as a buffer of its own (loop state) rather
    than as a slice of the stacked arrays, which XLA fuses into every consumer of the chunk.
    """
    if size is None or size >= arrays[0].shape[0]:
        return fn(*arrays)
    stacked, rest = split_images(arrays, size)
    if chunk_as_state:
        out = map_chunks_as_state(fn, stacked)
    else:
        out = lax.map(lambda chunk: fn(*chunk), stacked)
    out = out.reshape(-1, *out.shape[2:])
    return out if rest is None else jnp.concatenate([out, fn(*rest)])


def sum_over_images(fn: Callable, arrays: tuple[jax.Array, ...], size: int | None) -> jax.Array:
    """fn(*arrays), where fn is a sum of per-image terms, accumulated `size` images at a time
    (None: all at once)."""
    if size is None or size >= arrays[0].shape[0]:
        return fn(*arrays)
    stacked, rest = split_images(arrays, size)
    term = jax.eval_shape(fn, *(a[0] for a in stacked))
    total, _ = lax.scan(
        lambda acc, chunk: (acc + fn(*chunk), None), jnp.zeros(term.shape, term.dtype), stacked
    )
    return total if rest is None else total + fn(*rest)


def map_channels_last(
    fn: Callable,
    a: jax.Array,
    layout: str,
    size: int | None,
    chunk_as_state: bool = False,
    transpose_by_chunk: bool = False,
) -> jax.Array:
    """fn, a form taking (N, H, W, C) images, on the batch `a` of `layout`, `size` images at
    a time (`map_over_images`); the result comes back in `layout`.

    An NCHW `a` is made channels-last in one pass, or with `transpose_by_chunk` one chunk at
    a time inside the loop: no batch-sized copy, but nothing another pass can share.
    """
    if transpose_by_chunk:

        def on_chunk(chunk: jax.Array) -> jax.Array:
            return fn(lay.to_channels_last(chunk, layout))

    else:
        a, on_chunk = lay.to_channels_last(a, layout), fn
    out = map_over_images(on_chunk, (a,), size, chunk_as_state)
    return lay.from_channels_last(out, layout)
