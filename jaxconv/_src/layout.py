"""Moves arrays between the caller's layout and the canonical NHWC / HWIO one.

The rules in `conv.py` are written once, for NHWC inputs and HWIO kernels; these helpers
are the only place that knows about NCHW/OIHW and about unbatched (2-D and 3-D) inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """An input or output array of the caller's `layout` and `rank` as (N, H, W, C).

    Args:
      a: (H, W) if rank 2; (C, H, W) or (H, W, C) if rank 3; (N, C, H, W) or (N, H, W, C).
      layout: "NCHW" or "NHWC".
      rank: a.ndim, passed explicitly because it is part of the static geometry.

    Returns:
      (N, H, W, C), with N = C = 1 for rank 2 and N = 1 for rank 3.
    """
    if rank == 2:
        return a[None, :, :, None]
    if rank == 3:
        a = a[None]
    return jnp.transpose(a, (0, 2, 3, 1)) if layout == "NCHW" else a


def from_nhwc(a: jax.Array, layout: str, rank: int) -> jax.Array:
    """Inverse of `to_nhwc`: (N, H, W, C) back to the caller's layout and rank."""
    if rank == 2:
        return a[0, :, :, 0]
    if layout == "NCHW":
        a = jnp.transpose(a, (0, 3, 1, 2))
    return a[0] if rank == 3 else a


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
