"""Evaluation a few images at a time: a loop over chunks of the batch.

Every term of the forward and of ∂L/∂X belongs to one image, and ∂L/∂W is a sum of
per-image terms, so a form can run on `size` images at a time and give the same sums. The
plan chooses the chunk size (`Plan.forward_chunk` and its siblings); None runs the whole batch
at once.

A batch that XLA may split over devices (`mesh.auto_batch_shards`) is first cut into that
many equal parts, and each chunk takes `size` images from every part: the parts stay the
major axis, so XLA gives each device its own part's images and runs the loop once per
device chunk, with no gathering of the batch. With one part this is the plain loop.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import layout as lay
from jaxconv._src.evaluation import mesh
from jaxconv._src.evaluation.buffers import zeros_after


def split_images(arrays: tuple[jax.Array, ...], size: int, shards: int = 1):
    """The arrays' batches as `shards` equal parts, each cut into chunks of `size` images.

    Returns:
      (stacked, rest): stacked holds, per array, (count, shards·size, ...): chunk i is images
      i·size .. (i+1)·size − 1 of every part, parts major; rest holds each part's last
      images that fill no chunk, as (shards·r, ...), or is None.
    """
    n = arrays[0].shape[0]
    part = n // shards
    count = part // size
    whole = count * size

    def parts(a: jax.Array) -> jax.Array:
        return a.reshape(shards, part, *a.shape[1:])

    def chunked(a: jax.Array) -> jax.Array:
        by_chunk = parts(a)[:, :whole].reshape(shards, count, size, *a.shape[1:])
        return jnp.moveaxis(by_chunk, 1, 0).reshape(count, shards * size, *a.shape[1:])

    stacked = tuple(chunked(a) for a in arrays)
    rest = None
    if whole < part:
        rest = tuple(parts(a)[:, whole:].reshape(-1, *a.shape[1:]) for a in arrays)
    return stacked, rest


def join_images(out: jax.Array, rest: jax.Array | None, shards: int) -> jax.Array:
    """The batch `split_images` cut, from the chunks' results (count, shards·size, ...) and
    the rest's (shards·r, ...) or None."""
    count, merged = out.shape[:2]
    inner = out.shape[2:]
    by_part = jnp.moveaxis(out.reshape(count, shards, merged // shards, *inner), 0, 1)
    by_part = by_part.reshape(shards, -1, *inner)
    if rest is not None:
        by_part = jnp.concatenate([by_part, rest.reshape(shards, -1, *inner)], axis=1)
    return by_part.reshape(-1, *inner)


def map_chunks(fn: Callable, stacked: tuple[jax.Array, ...], chunk_as_state: bool = False):
    """`lax.map(lambda chunk: fn(*chunk), stacked)` as a loop that writes each chunk's
    result into one buffer (`buffers.zeros_after`).

    With `chunk_as_state`, each chunk reaches fn as loop state: the loop body slices the
    next chunk once, into the state.
    """
    count = stacked[0].shape[0]
    chunk_types = [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in stacked]
    result = jax.make_jaxpr(fn)(*chunk_types).out_avals[0]  # keeps the closure's mesh axes
    out = zeros_after(stacked[0], (count, *result.shape), result.dtype, batch_axes=2)
    out = mesh.varying_like(mesh.varying_over(out, mesh.varying_axes(result)), *stacked)

    def chunk_at(i):
        return tuple(lax.dynamic_index_in_dim(a, i, keepdims=False) for a in stacked)

    if chunk_as_state:

        def step(i, state):
            chunk, out = state
            upcoming = chunk_at(jnp.minimum(i + 1, count - 1))
            return upcoming, lax.dynamic_update_index_in_dim(out, fn(*chunk), i, 0)

        return lax.fori_loop(0, count, step, (chunk_at(0), out))[1]
    return lax.fori_loop(
        0, count, lambda i, out: lax.dynamic_update_index_in_dim(out, fn(*chunk_at(i)), i, 0), out
    )


def map_over_images(
    fn: Callable,
    arrays: tuple[jax.Array, ...],
    size: int | None,
    chunk_as_state: bool = False,
    shards: int = 1,
) -> jax.Array:
    """fn(*arrays), where image i of the result depends on image i of each array only,
    evaluated `size` images of each of `shards` parts at a time (None: all at once).

    With `chunk_as_state`, each chunk reaches fn as a buffer of its own (loop state) rather
    than as a slice of the stacked arrays, which XLA fuses into every consumer of the chunk.
    """
    if size is None or size >= arrays[0].shape[0] // shards:
        return fn(*arrays)
    stacked, rest = split_images(arrays, size, shards)
    out = map_chunks(fn, stacked, chunk_as_state)
    return join_images(out, None if rest is None else fn(*rest), shards)


def sum_over_images(
    fn: Callable, arrays: tuple[jax.Array, ...], size: int | None, shards: int = 1
) -> jax.Array:
    """fn(*arrays), where fn is a sum of per-image terms, accumulated `size` images of each
    of `shards` parts at a time (None: all at once).

    Each part keeps its own running sum, added to the others' once after the loop: split
    over devices, that is one all-reduce rather than one per chunk.
    """
    if size is None or size >= arrays[0].shape[0] // shards:
        return fn(*arrays)
    stacked, rest = split_images(arrays, size, shards)

    def part_sums(*chunk: jax.Array) -> jax.Array:  # (shards, *term), or the term for one
        if shards == 1:
            return fn(*chunk)
        return jax.vmap(fn)(*(c.reshape(shards, -1, *c.shape[1:]) for c in chunk))

    term = jax.eval_shape(part_sums, *(a[0] for a in stacked))
    # Each part's zeros from its own images of the last array (∂L/∂W's cotangent, which
    # exists only in the backward); inside shard_map the sum varies like them.
    parts = stacked[-1][0].reshape(shards, -1, *stacked[-1].shape[2:])
    if shards == 1:
        start = zeros_after(parts[0], term.shape, term.dtype, batch_axes=0)
    else:
        start = zeros_after(parts, term.shape, term.dtype)
    start = mesh.varying_like(start, *arrays)
    total, _ = lax.scan(lambda acc, chunk: (acc + part_sums(*chunk), None), start, stacked)
    if rest is not None:
        total = total + part_sums(*rest)
    return total if shards == 1 else jnp.sum(total, axis=0)


def map_channels_last(
    fn: Callable,
    a: jax.Array,
    layout: str,
    size: int | None,
    chunk_as_state: bool = False,
    transpose_by_chunk: bool = False,
    shards: int = 1,
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
    out = map_over_images(on_chunk, (a,), size, chunk_as_state, shards)
    return lay.from_channels_last(out, layout)
