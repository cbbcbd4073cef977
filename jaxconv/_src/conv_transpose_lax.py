"""`conv_transpose`: `jax.lax.conv_transpose`'s signature and semantics for one, two or three
spatial dimensions, by `jaxconv.conv_general_dilated` (and so by jaxconv's hand-derived rules).

lax computes a transposed convolution as a convolution of the input dilated by the strides
(`lhs_dilation`) with the kernel as given, at unit window strides; the padding is that of the
dilated input, and 'SAME'/'VALID' (or, with `use_consistent_padding`, any padding) name the
padding of the forward convolution it transposes. This module computes the same padding and
makes the same call to jaxconv's `conv_general_dilated`. `transpose_kernel=True` flips the
kernel's spatial axes and swaps its two feature axes first, as lax does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxconv._src import geometry as geo
from jaxconv._src.evaluation.evaluate import PlanLike, PrecisionLike
from jaxconv._src.general_dilated import _permutations, check_operand_ranks, conv_general_dilated

OP = "conv_transpose"


def _forward_padding(k: int, s: int, padding: str | tuple[int, int]) -> tuple[int, int]:
    """The dilated input's padding for a forward convolution's `padding` on one axis, as
    lax's `_conv_transpose_padding` computes it (`k` is the dilated kernel size)."""
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
    elif padding == "VALID":
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    elif not isinstance(padding, str):
        lo, hi = k - padding[0] - 1, k - padding[1] - 1
        total = lo + hi
    else:
        raise ValueError(f"{OP}: unknown `padding` {padding!r}.")
    return lo, total - lo


def _pair_list(padding, rank: int) -> list[tuple[int, int]]:
    """Explicit padding as `rank` (lo, hi) pairs of ints, or a TypeError that names it."""
    pairs = []
    if isinstance(padding, Sequence) and not isinstance(padding, (str, bytes)):
        pairs = [tuple(p) for p in padding if isinstance(p, Sequence) and not isinstance(p, str)]
    if (
        len(pairs) != rank
        or len(padding) != rank
        or not all(len(p) == 2 and all(geo.is_int(v) for v in p) for p in pairs)
    ):
        count = {1: "one (lo, hi) pair", 2: "two (lo, hi) pairs", 3: "three (lo, hi) pairs"}
        raise TypeError(
            f"{OP}: `padding` must be 'SAME', 'VALID' or {count.get(rank, f'{rank} pairs')} of "
            f"ints (one per spatial dimension), got {padding!r}."
        )
    return [(int(lo), int(hi)) for lo, hi in pairs]


def conv_transpose(
    lhs: jax.typing.ArrayLike,
    rhs: jax.typing.ArrayLike,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    transpose_kernel: bool = False,
    precision: PrecisionLike = None,
    preferred_element_type=None,
    use_consistent_padding: bool = False,
    *,
    plan: PlanLike = "auto",
) -> jax.Array:
    """`jax.lax.conv_transpose` for one, two or three spatial dimensions, by jaxconv's rules.

    The same arguments and result as lax (see its documentation), for operands of 3, 4 or 5
    dimensions. It is
    `jaxconv.conv_general_dilated` with `lhs_dilation=strides`, unit window strides and lax's
    padding, so its gradients are jaxconv's hand-derived rules. (PyTorch's semantics, with its
    kernel layout and `output_padding`, are `jaxconv.conv_transpose2d`.)

    Args:
      lhs: the input, laid out as `dimension_numbers[0]` says.
      rhs: the kernel, as `dimension_numbers[1]`, with as many dimensions as `lhs`.
      strides: one int per spatial dimension, the forward convolution's strides (the input's
        dilation here).
      padding: 'SAME' or 'VALID' (any case), the forward convolution's padding; or one
        (lo, hi) pair per spatial dimension: the dilated input's padding, or with
        `use_consistent_padding` the forward convolution's.
      rhs_dilation: the kernel's dilation, one int per spatial dimension (default 1).
      dimension_numbers: None (lax's default here: channels last, ("NHWC", "HWIO", "NHWC")
        in 2-D), three strings, or a `lax.ConvDimensionNumbers`.
      transpose_kernel: flip the kernel's spatial axes and swap its feature axes, which
        makes this the gradient of a forward convolution with that kernel.
      precision: of the contractions, forward and backward.
      preferred_element_type: accumulate in this dtype and return it, as for
        `conv_general_dilated`.
      use_consistent_padding: read explicit `padding` as the forward convolution's, as
        PyTorch does (lax's flag).
      plan: how jaxconv evaluates the rules (keyword-only), as for `conv2d`.

    Returns:
      The output, laid out as `dimension_numbers[2]` says.

    Raises:
      ValueError, TypeError: naming the argument, before computing, where lax would raise
        and where jaxconv cannot follow lax (no spatial dimension, more than three, or
        boolean operands).

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x, w = jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 2, 4))  # NHWC, HWIO
      >>> jaxconv.conv_transpose(x, w, (2, 2), "SAME").shape
      (1, 6, 6, 4)
    """
    lhs, rhs = geo.as_array(OP, "lhs", lhs), geo.as_array(OP, "rhs", rhs)
    rank = check_operand_ranks(OP, lhs, rhs)
    if dimension_numbers is None:  # lax's default: channels last, ("NHWC", "HWIO", "NHWC")
        letters = geo.SPATIAL_LETTERS[rank]
        dimension_numbers = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    try:
        _, rhs_perm, _ = _permutations(dimension_numbers, lhs.ndim)
    except (TypeError, ValueError) as error:  # the same check, under this function's name
        raise type(error)(str(error).replace("conv_general_dilated:", f"{OP}:", 1)) from None
    stride = geo.spatial_tuple(OP, "strides", strides, rank, None)
    dilation = geo.spatial_tuple(OP, "rhs_dilation", rhs_dilation, rank, 1)
    if not isinstance(transpose_kernel, bool):
        raise TypeError(f"{OP}: `transpose_kernel` must be a bool, got {transpose_kernel!r}.")

    if isinstance(padding, str):
        padding = geo.normalize_string(OP, "padding", padding, ("SAME", "VALID"))
    forward = isinstance(padding, str) or use_consistent_padding
    if forward:
        per_axis: list[str | tuple[int, int]]
        per_axis = [padding] * rank if isinstance(padding, str) else list(_pair_list(padding, rank))
        kernel_size = [rhs.shape[axis] for axis in rhs_perm[2:]]
        dilated = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
        pads = [_forward_padding(k, s, p) for k, s, p in zip(dilated, stride, per_axis)]
    else:
        pads = _pair_list(padding, rank)

    if transpose_kernel:
        # As lax: flip the spatial axes and swap the kernel's O and I axes.
        rhs = jnp.flip(rhs, rhs_perm[2:]).swapaxes(rhs_perm[0], rhs_perm[1])
    try:
        return conv_general_dilated(
            lhs,
            rhs,
            (1,) * rank,
            pads,
            lhs_dilation=stride,
            rhs_dilation=dilation,
            dimension_numbers=dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
            plan=plan,
        )
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("conv_general_dilated:", f"{OP}:", 1)) from None
