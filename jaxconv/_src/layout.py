"""Moves arrays between the caller's layout and the ones the rules work in.

The evaluations take batched arrays in the caller's layout, (N, C, *spatial) or
(N, *spatial, C), and kernels (*k, C/G, O) (HWIO in 2-D). Their GEMM forms contract over a
minor channel axis, so they move to channels-last first; their elementwise forms work in
either layout. These helpers are the only place that knows where the channel axis is and
about unbatched inputs. A layout is one of `geometry.LAYOUTS`: its length is the batched rank.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxconv._src.geometry import is_channels_first, spatial_rank_of


def channel_axis(layout: str) -> int:
    """The channel axis of a batched array of `layout`: 1 channels-first, the last otherwise."""
    return 1 if is_channels_first(layout) else len(layout) - 1


def spatial_axes(layout: str) -> tuple[int, ...]:
    """The spatial axes of a batched array of `layout`: (2, 3) for "NCHW", (1, 2) for "NHWC"."""
    first = 2 if is_channels_first(layout) else 1
    return tuple(range(first, first + spatial_rank_of(layout)))


def position_axes(layout: str) -> tuple[int, ...]:
    """The axes of a batched array of `layout` that index positions: all but the channel axis."""
    return (0, *spatial_axes(layout))


def along_channels(v: jax.Array, layout: str) -> jax.Array:
    """A (C,) vector shaped to broadcast along the channel axis of a batched `layout` array."""
    if is_channels_first(layout):
        return v.reshape(-1, *(1,) * spatial_rank_of(layout))
    return v


def to_batched(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """An input or output array of the caller's `rank` as a batched array of `layout`.

    Args:
      a: spatial only (one channel) if rank is the spatial rank n; one example, (C, *spatial)
        or (*spatial, C), if rank n + 1; else a batch.
      layout: one of `geometry.LAYOUTS`.
      rank: a.ndim, passed explicitly because it is part of the static geometry.

    Returns:
      (N, C, *spatial) or (N, *spatial, C), with N = C = 1 for rank n and N = 1 for n + 1.
    """
    n = spatial_rank_of(layout)
    if rank == n:
        return a[None, None] if is_channels_first(layout) else a[None, ..., None]
    return a[None] if rank == n + 1 else a


def from_batched(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `to_batched`."""
    n = spatial_rank_of(layout)
    if rank == n:
        return a[0, 0] if is_channels_first(layout) else a[0, ..., 0]
    return a[0] if rank == n + 1 else a


def to_channels_last(a: jax.Array, layout: str) -> jax.Array:
    """A batched array of `layout` as (N, *spatial, C)."""
    if not is_channels_first(layout):
        return a
    return jnp.transpose(a, (0, *range(2, a.ndim), 1))


def from_channels_last(a: jax.Array, layout: str) -> jax.Array:
    """Inverse of `to_channels_last`."""
    if not is_channels_first(layout):
        return a
    return jnp.transpose(a, (0, a.ndim - 1, *range(1, a.ndim - 1)))


def to_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """An input or output array of the caller's `layout` and `rank` as (N, *spatial, C)."""
    return to_channels_last(to_batched(a, layout, rank), layout)


def from_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `to_nhwc`: (N, *spatial, C) back to the caller's layout and rank."""
    return from_batched(from_channels_last(a, layout), layout, rank)


def kernel_to_hwio(w: jax.Array, layout: str, rank: int) -> jax.Array:
    """A kernel of the caller's layout as (*k, C//groups, O), HWIO in 2-D.

    Args:
      w: spatial only (*k) if rank is the spatial rank; else (O, C//groups, *k) for a
        channels-first layout or (*k, C//groups, O) for a channels-last one.
      layout: one of `geometry.LAYOUTS`.
      rank: rank of the matching input (the spatial rank means a spatial-only kernel).
    """
    if rank == spatial_rank_of(layout):
        return w[..., None, None]
    if not is_channels_first(layout):
        return w
    return jnp.transpose(w, (*range(2, w.ndim), 1, 0))


def hwio_to_kernel(w: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `kernel_to_hwio`."""
    if rank == spatial_rank_of(layout):
        return w[..., 0, 0]
    if not is_channels_first(layout):
        return w
    return jnp.transpose(w, (w.ndim - 1, w.ndim - 2, *range(w.ndim - 2)))
