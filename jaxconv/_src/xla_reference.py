"""`conv_xla` and `conv2d_xla`: jaxconv's contract computed by XLA's own convolution.

A reference to compare against (tests, the gradient audit, the demo's `--impl lax`); `conv`
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

from jaxconv._src.geometry import IntOrPair, IntOrTuple, Layout, PaddingLike


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _ints(values: object) -> tuple[int, ...]:
    # Any length passes: lax.conv_general_dilated itself reports a wrong one.
    return tuple(int(v) for v in cast(Iterable[Any], values))


_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def _per_axis(value: IntOrTuple, n: int) -> tuple[int, ...]:
    if _is_int(value):
        return (int(value),) * n
    return _ints(value)


def _lax_padding(padding: PaddingLike, n: int) -> str | list[tuple[int, int]]:
    if isinstance(padding, str):
        return padding.upper()
    if _is_int(padding):
        return [(int(padding), int(padding))] * n
    sides = cast(Sequence[object], padding)
    if all(_is_int(p) for p in sides):
        return [(int(p), int(p)) for p in cast(Sequence[int], sides)]
    return [cast(tuple[int, int], _ints(p)) for p in sides]


def _xla(x, w, b, *, stride, padding, dilation, groups, layout: str) -> jax.Array:
    """`lax.conv_general_dilated` of a caller's operands in `layout` (any case), any rank."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    layout = str(layout).upper()
    n = len(layout) - 2
    rank = x.ndim
    if rank == n:  # spatial only: one channel
        x, w, layout = x[None, None], w[None, None], f"NC{_LETTERS[n]}"
    elif rank == n + 1:
        x = x[None]
    letters = _LETTERS[n]
    first = layout[1] == "C"
    dims = (
        (f"NC{letters}", f"OI{letters}", f"NC{letters}")
        if first
        else (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    )
    half = jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4
    z = lax.conv_general_dilated(
        x,
        w,
        window_strides=_per_axis(stride, n),
        padding=_lax_padding(padding, n),
        rhs_dilation=_per_axis(dilation, n),
        dimension_numbers=dims,
        feature_group_count=int(groups),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32 if half else None,
    )
    if b is not None:
        b = jnp.asarray(b)
        z = z + (b.reshape(-1, *(1,) * n) if first else b).astype(z.dtype)
    z = z.astype(x.dtype)
    if rank == n:
        return z[0, 0]
    return z[0] if rank == n + 1 else z


def conv_xla(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
) -> jax.Array:
    """`jaxconv.conv`'s contract via `lax.conv_general_dilated`, differentiated by JAX.

    Same arguments, shapes and dtypes as `jaxconv.conv` (no argument validation beyond what
    XLA does; `layout` None: channels first, the rank of `w`). The automatic-differentiation
    reference of every rank.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> jaxconv.conv_xla(jnp.array([[[1.0, 2.0, 4.0]]]), jnp.array([[[1.0, -1.0]]]))
      Array([[[-1., -2.]]], dtype=float32)
    """
    if layout is None:
        layout = "NC" + _LETTERS[jnp.ndim(w) - 2]
    config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _xla(x, w, b, layout=layout, **config)


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
    config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _xla(x, w, b, layout=layout, **config)
