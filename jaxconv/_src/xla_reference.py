"""`conv2d_xla`: jaxconv's contract computed by XLA's own convolution.

A reference to compare against (tests, the gradient audit, the demo's `--impl lax`); `conv2d`
never calls it. It maps the arguments straight onto `lax.conv_general_dilated`, without
jaxconv's geometry code, so agreement also checks how jaxconv resolves padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeGuard, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.geometry import IntOrPair, Layout, PaddingLike


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _ints(values: object) -> tuple[int, ...]:
    # Any length passes: lax.conv_general_dilated itself reports a wrong one.
    return tuple(int(v) for v in cast(Iterable[Any], values))


def _pair(value: IntOrPair) -> tuple[int, int]:
    if _is_int(value):
        return (int(value), int(value))
    return cast(tuple[int, int], _ints(value))


def _lax_padding(padding: PaddingLike) -> str | list[tuple[int, int]]:
    if isinstance(padding, str):
        return padding.upper()
    if _is_int(padding):
        return [(int(padding), int(padding))] * 2
    sides = cast(Sequence[object], padding)
    if all(_is_int(p) for p in sides):
        return [(int(p), int(p)) for p in cast(Sequence[int], sides)]
    return [cast(tuple[int, int], _ints(p)) for p in sides]


def conv2d_xla(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrPair = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
) -> jax.Array:
    """`jaxconv.conv2d`'s contract via `lax.conv_general_dilated`, differentiated by JAX.

    Same arguments, shapes and dtypes as `jaxconv.conv2d` (no argument validation beyond
    what XLA does). Used as the automatic-differentiation reference.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.arange(9.0).reshape(3, 3)
      >>> jaxconv.conv2d_xla(x, jnp.array([[1.0, 0.0], [0.0, -1.0]]))
      Array([[-4., -4.],
             [-4., -4.]], dtype=float32)
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    layout_name = str(layout).upper()
    rank = x.ndim
    if rank == 2:
        x, w, layout_name = x[None, None], w[None, None], "NCHW"
    elif rank == 3:
        x = x[None]
    nchw = layout_name == "NCHW"
    dims = ("NCHW", "OIHW", "NCHW") if nchw else ("NHWC", "HWIO", "NHWC")
    half = x.dtype.itemsize < 4
    z = lax.conv_general_dilated(
        x,
        w,
        window_strides=_pair(stride),
        padding=_lax_padding(padding),
        rhs_dilation=_pair(dilation),
        dimension_numbers=dims,
        feature_group_count=int(groups),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32 if half else None,
    )
    if b is not None:
        b = jnp.asarray(b)
        z = z + (b[:, None, None] if nchw else b).astype(z.dtype)
    z = z.astype(x.dtype)
    if rank == 2:
        return z[0, 0]
    return z[0] if rank == 3 else z
