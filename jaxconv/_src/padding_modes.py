"""Padding modes: what fills the border `padding` adds around the input of a convolution.

"zeros" is the convolution's own implicit padding (`ConvGeometry.padding`). The other modes
(PyTorch's and Equinox's names) copy input values into the border: the input is padded
explicitly by the geometry's resolved (lo, hi) and then convolved with padding 0.
"""

from __future__ import annotations

import functools
from typing import Literal, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src.geometry import (
    ConvGeometry,
    Pads,
    axis_names,
    is_channels_first,
    normalize_string,
    spatial_rank_of,
)

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]

PADDING_MODES: tuple[PaddingMode, ...] = ("zeros", "reflect", "replicate", "circular")
_JNP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(op: str, padding_mode: str, geom: ConvGeometry) -> PaddingMode:
    """`padding_mode` in lower case; raises unless it is known (any letter case) and fits the
    resolved padding of `geom`.

    The limits are PyTorch's (`torch.nn.functional.pad`): padding is non-negative for every
    mode but "zeros"; "reflect" needs each side's padding < the input size (the border
    mirrors the input without repeating its edge); "circular" allows up to the input size
    (it wraps around at most once); "replicate" has no limit.

    Raises:
      ValueError: naming `padding_mode`, the axis, its padding and the input size.
    """
    # normalize_string returns one of PADDING_MODES itself: the cast only keeps its type.
    mode = cast(PaddingMode, normalize_string(op, "padding_mode", padding_mode, PADDING_MODES))
    if mode == "zeros":
        return mode
    for axis, n, (lo, hi) in zip(axis_names(geom.spatial_rank), geom.in_size, geom.padding):
        if min(lo, hi) < 0:
            raise ValueError(
                f"{op}: `padding_mode`={mode!r} needs non-negative padding, got "
                f"{axis} padding ({lo}, {hi}) from `padding`; crop the input instead."
            )
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"{op}: `padding_mode`='reflect' needs padding smaller than the input on "
                f"each side (as in PyTorch); {axis} padding ({lo}, {hi}) but input {axis} {n}."
            )
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"{op}: `padding_mode`='circular' wraps around at most once, so each side's "
                f"padding must be at most the input size (as in PyTorch); {axis} padding "
                f"({lo}, {hi}) but input {axis} {n}."
            )
    return mode


def _spatial_axes(layout: str, rank: int) -> tuple[int, ...]:
    """The spatial axes of a caller's array of `rank` axes in `layout`."""
    n = spatial_rank_of(layout)
    if rank == n:
        return tuple(range(n))
    first = rank - n if is_channels_first(layout) else rank - n - 1
    return tuple(range(first, first + n))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _pad(x: jax.Array, pads: Pads, mode: str, axes: tuple[int, ...]) -> jax.Array:
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(axes, pads):
        widths[axis] = pair
    return jnp.pad(x, widths, mode=mode)


def pad_input(x: jax.Array, geom: ConvGeometry, padding_mode: str) -> jax.Array:
    """`x`, in the caller's layout, padded by `geom.padding` with a non-"zeros" mode.

    `jnp.pad` with mode "reflect" (reflect), "edge" (replicate) or "wrap" (circular). Its
    gradient is JAX's autodiff of `jnp.pad`: every border position's gradient is added back
    onto the input position it copies.

    Args:
      x: the input of the convolution, any accepted rank, in `geom.layout`.
      geom: the geometry resolved for `x`; `check_padding_mode` has accepted it.
      padding_mode: "reflect", "replicate" or "circular".

    Returns:
      `x` with its spatial axes grown to `geom.padded_size`.
    """
    axes = _spatial_axes(geom.layout, geom.input_rank)
    return _pad(x, geom.padding, _JNP_MODES[padding_mode], axes)


def source_indices(n: int, lo: int, hi: int, padding_mode: str) -> np.ndarray:
    """For each of the lo + n + hi padded positions, the input position it copies.

    A plain index map, independent of `jnp.pad`, for the naive reference: position i − lo of
    the padded axis copies i for 0 <= i < n, and outside that range:
    reflect: −i and 2(n − 1) − i; replicate: the nearest edge; circular: i mod n.
    """
    i = np.arange(-lo, n + hi)
    if padding_mode == "replicate":
        return np.clip(i, 0, n - 1)
    if padding_mode == "circular":
        return i % n
    if padding_mode == "reflect":
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i)
    raise ValueError(f"source_indices: no index map for `padding_mode`={padding_mode!r}.")
