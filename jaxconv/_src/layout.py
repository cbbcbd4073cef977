"""Moves arrays between the caller's layout and the ones the rules work in.

The rules in `conv.py` take batched 4-D arrays in the caller's layout, (N, C, H, W) or
(N, H, W, C), and HWIO kernels. Their GEMM forms contract over a minor channel axis, so they
move to (N, H, W, C) first; their elementwise forms work in either layout. These helpers are
the only place that knows about NCHW/OIHW and about unbatched (2-D and 3-D) inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def channel_axis(layout: str) -> int:
    """The channel axis of a batched array of `layout`: 1 for "NCHW", 3 for "NHWC"."""
    return 1 if layout == "NCHW" else 3


def spatial_axes(layout: str) -> tuple[int, int]:
    """The (H, W) axes of a batched array of `layout`."""
    return (2, 3) if layout == "NCHW" else (1, 2)


def position_axes(layout: str) -> tuple[int, int, int]:
    """The axes of a batched array of `layout` that index positions: all but the channel axis."""
    return (0, 2, 3) if layout == "NCHW" else (0, 1, 2)


def along_channels(v: jax.Array, layout: str) -> jax.Array:
    """A (C,) vector shaped to broadcast along the channel axis of a batched `layout` array."""
    return v.reshape(-1, 1, 1) if layout == "NCHW" else v


def to_batched(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """An input or output array of the caller's `rank` as a batched 4-D array of `layout`.

    Args:
      a: (H, W) if rank 2; (C, H, W) or (H, W, C) if rank 3; (N, C, H, W) or (N, H, W, C).
      layout: "NCHW" or "NHWC".
      rank: a.ndim, passed explicitly because it is part of the static geometry.

    Returns:
      (N, C, H, W) or (N, H, W, C), with N = C = 1 for rank 2 and N = 1 for rank 3.
    """
    if rank == 2:
        return a[None, None] if layout == "NCHW" else a[None, :, :, None]
    return a[None] if rank == 3 else a


def from_batched(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `to_batched`."""
    if rank == 2:
        return a[0, 0] if layout == "NCHW" else a[0, :, :, 0]
    return a[0] if rank == 3 else a


def to_channels_last(a: jax.Array, layout: str) -> jax.Array:
    """A batched array of `layout` as (N, H, W, C)."""
    return jnp.transpose(a, (0, 2, 3, 1)) if layout == "NCHW" else a


def from_channels_last(a: jax.Array, layout: str) -> jax.Array:
    """Inverse of `to_channels_last`."""
    return jnp.transpose(a, (0, 3, 1, 2)) if layout == "NCHW" else a


def to_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """An input or output array of the caller's `layout` and `rank` as (N, H, W, C)."""
    return to_channels_last(to_batched(a, layout, rank), layout)


def from_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `to_nhwc`: (N, H, W, C) back to the caller's layout and rank."""
    return from_batched(from_channels_last(a, layout), layout, rank)


def kernel_to_hwio(w: jax.Array, layout: str, rank: int) -> jax.Array:
    """A kernel of the caller's layout as (kh, kw, C//groups, O).

    Args:
      w: (kh, kw) if rank 2; else OIHW for "NCHW" or HWIO for "NHWC".
      layout: "NCHW" or "NHWC".
      rank: rank of the matching input (2 means a 2-D kernel).
    """
    if rank == 2:
        return w[:, :, None, None]
    return jnp.transpose(w, (2, 3, 1, 0)) if layout == "NCHW" else w


def hwio_to_kernel(w: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `kernel_to_hwio`."""
    if rank == 2:
        return w[:, :, 0, 0]
    return jnp.transpose(w, (3, 2, 0, 1)) if layout == "NCHW" else w
