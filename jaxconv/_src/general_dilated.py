"""`conv_general_dilated`: `jax.lax.conv_general_dilated`'s signature and semantics for one,
two or three spatial dimensions, computed by jaxconv's rules and differentiated by its
hand-derived ones.

Every call becomes one convolution channels-first (NCW/OIW, NCHW/OIHW or NCDHW/OIDHW): the
operands are transposed by the dimension numbers; an input dilation is part of the padding
operator of the rules (derivation eq. 38); batch groups are feature groups of a regrouped
input (eq. 39). Flax's `nnx.Conv` and `linen.Conv` take it as their `conv_general_dilated=`
argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import geometry as geo
from jaxconv._src.convolution import _conv_jit
from jaxconv._src.evaluation import evaluate as ev
from jaxconv._src.evaluation.evaluate import PlanLike, PrecisionLike

OP = "conv_general_dilated"
Perm = tuple[int, ...]


def check_operand_ranks(op: str, lhs: jax.Array, rhs: jax.Array) -> int:
    """The number of spatial dimensions of a lax-style call; raises naming the operands
    unless both have it and jaxconv computes it (1, 2 or 3)."""
    if lhs.ndim != rhs.ndim:
        raise ValueError(
            f"{op}: `lhs` of shape {tuple(lhs.shape)} and `rhs` of shape {tuple(rhs.shape)} "
            "must have the same number of dimensions (batch or features, then the spatial "
            "ones), as in lax."
        )
    return geo.check_rank(op, "lhs", lhs.ndim - 2, tuple(lhs.shape))


def _permutations(dimension_numbers, ndim: int) -> tuple[Perm, Perm, Perm]:
    """(lhs, rhs, out) permutations to (N, C, *spatial), (O, I, *spatial), (N, C, *spatial)
    for operands of `ndim` dimensions, as lax reads `dimension_numbers`: None (channels
    first), three strings such as ("NHWC", "HWIO", "NHWC") whose spatial letters are matched
    to the kernel's order, or lax's `ConvDimensionNumbers` of index tuples."""
    if dimension_numbers is None:
        return (tuple(range(ndim)),) * 3
    if hasattr(dimension_numbers, "lhs_spec"):  # lax.ConvDimensionNumbers
        perms = tuple(
            tuple(int(i) for i in getattr(dimension_numbers, f"{name}_spec"))
            for name in ("lhs", "rhs", "out")
        )
        if not all(sorted(p) == list(range(ndim)) for p in perms):
            raise ValueError(
                f"{OP}: `dimension_numbers` {dimension_numbers} must permute the {ndim} "
                f"dimensions of the operands."
            )
        return perms  # type: ignore[return-value]
    specs = dimension_numbers
    if (
        not isinstance(specs, Sequence)
        or len(specs) != 3
        or not all(isinstance(s, str) for s in specs)
    ):
        raise TypeError(
            f"{OP}: `dimension_numbers` must be None, three strings such as "
            f"('NHWC', 'HWIO', 'NHWC') or a lax.ConvDimensionNumbers; got {dimension_numbers!r}."
        )
    lhs_spec, rhs_spec, out_spec = specs
    pairs = (("N", "C"), ("O", "I"), ("N", "C"))
    spatial_count = {1: "one spatial letter", 2: "two spatial letters"}.get(
        ndim - 2, f"{ndim - 2} spatial letters"
    )
    for spec, pair in zip(specs, pairs):
        if len(spec) != ndim or len(set(spec)) != ndim or not set(pair) <= set(spec):
            raise ValueError(
                f"{OP}: `dimension_numbers` {tuple(specs)}: {spec!r} must hold {pair[0]!r}, "
                f"{pair[1]!r} and {spatial_count}, each once (operands of {ndim} dimensions)."
            )
    spatial = [set(s) - set(p) for s, p in zip(specs, pairs)]
    if not spatial[0] == spatial[1] == spatial[2]:
        raise ValueError(
            f"{OP}: `dimension_numbers` {tuple(specs)} must use the same spatial letters in "
            "all three specs."
        )

    def perm(spec: str, pair: tuple[str, str]) -> Perm:
        # Spatial axes in the kernel's order of their letters, as lax pairs them.
        axes = [i for i, c in enumerate(spec) if c not in pair]
        axes.sort(key=lambda i: rhs_spec.index(spec[i]))
        return (spec.index(pair[0]), spec.index(pair[1]), *axes)

    return perm(lhs_spec, pairs[0]), perm(rhs_spec, pairs[1]), perm(out_spec, pairs[2])


def _count(name: str, value) -> int:
    if not geo.is_int(value):
        raise TypeError(f"{OP}: `{name}` must be an int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{OP}: `{name}` must be >= 1, got {value}.")
    return int(value)


def conv_general_dilated(
    lhs: jax.typing.ArrayLike,
    rhs: jax.typing.ArrayLike,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: PrecisionLike = None,
    preferred_element_type=None,
    out_sharding=None,
    *,
    plan: PlanLike = "auto",
) -> jax.Array:
    """`jax.lax.conv_general_dilated` for one, two or three spatial dimensions, by jaxconv's
    rules.

    The same arguments and result as lax (see its documentation), for operands of 3, 4 or 5
    dimensions; its gradients are jaxconv's hand-derived rules (`conv`'s custom_vjp).

    Args:
      lhs: the input, laid out as `dimension_numbers[0]` says.
      rhs: the kernel, as `dimension_numbers[1]`, with as many dimensions as `lhs`.
      window_strides: one int per spatial dimension.
      padding: "VALID", "SAME" or "SAME_LOWER" (any case), or one (lo, hi) pair per spatial
        dimension; with an `lhs_dilation` above 1, pairs only (as in lax).
      lhs_dilation: the input's dilation, one int per spatial dimension (a transposed
        convolution's stride).
      rhs_dilation: the kernel's dilation, one int per spatial dimension.
      dimension_numbers: None (channels first: NCHW, OIHW, NCHW in 2-D), three strings, or
        a `lax.ConvDimensionNumbers`.
      feature_group_count: channel groups (`conv2d`'s `groups`).
      batch_group_count: groups of the batch, each with its own output channels; at most one
        of the two counts above 1.
      precision: of the contractions, forward and backward (`conv2d`'s `precision`).
      preferred_element_type: accumulate in this dtype and return it: a wider integer or a
        floating dtype for integer operands (int8 → int32 is exact), a wider floating or
        complex one for floating or complex operands, as lax takes it.
      out_sharding: where the result is placed (`jax.sharding.reshard`), as lax does.
      plan: how jaxconv evaluates the rules, as for `conv2d` (keyword-only).

    Returns:
      The output, laid out as `dimension_numbers[2]` says; dtype `preferred_element_type`
      or that of `lhs`.

    Raises:
      ValueError, TypeError: naming the argument, before computing, where lax would raise
        and where jaxconv cannot follow lax (no spatial dimension, more than three, or
        boolean operands).

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
      >>> z = jaxconv.conv_general_dilated(x, w, (2, 2), "SAME", lhs_dilation=None,
      ...     dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> z.shape, float(z[0, 1, 1, 0])
      ((1, 3, 3, 4), 18.0)
    """
    lhs, rhs = geo.as_array(OP, "lhs", lhs), geo.as_array(OP, "rhs", rhs)
    rank = check_operand_ranks(OP, lhs, rhs)
    geo.check_operands(OP, "lhs", lhs, "rhs", rhs)
    out_dtype = lhs.dtype
    if preferred_element_type is not None:
        out_dtype = geo.check_preferred_element_type(OP, lhs.dtype, preferred_element_type)
    lhs_perm, rhs_perm, out_perm = _permutations(dimension_numbers, lhs.ndim)
    strides = geo.spatial_tuple(OP, "window_strides", window_strides, rank, None)
    input_dilation = geo.spatial_tuple(OP, "lhs_dilation", lhs_dilation, rank, 1)
    kernel_dilation = geo.spatial_tuple(OP, "rhs_dilation", rhs_dilation, rank, 1)
    features = _count("feature_group_count", feature_group_count)
    batches = _count("batch_group_count", batch_group_count)
    if features > 1 and batches > 1:
        raise ValueError(
            f"{OP}: at most one of `feature_group_count` ({features}) and `batch_group_count` "
            f"({batches}) may be above 1, as in lax."
        )

    x, w = jnp.transpose(lhs, lhs_perm), jnp.transpose(rhs, rhs_perm)  # NC*, OI*
    (n, c), (o, i) = x.shape[:2], w.shape[:2]
    shapes = f"`lhs` {tuple(lhs.shape)} and `rhs` {tuple(rhs.shape)}"
    if c != i * features:
        raise ValueError(
            f"{OP}: {shapes}: the input features C = {c} must be the kernel's input features "
            f"{i} × `feature_group_count` {features}."
        )
    for count, name in ((features, "feature_group_count"), (batches, "batch_group_count")):
        if o % count:
            raise ValueError(
                f"{OP}: {shapes}: `{name}` ({count}) must divide the output features O = {o}."
            )
    if n % batches:
        raise ValueError(
            f"{OP}: {shapes}: `batch_group_count` ({batches}) must divide the batch N = {n}."
        )
    if batches > 1:
        # Eq. 39: image b·N/B + m of batch group b is image m's channel block b of a conv
        # with B feature groups.
        size = x.shape[2:]
        x = x.reshape(batches, n // batches, c, *size).transpose(1, 0, *range(2, rank + 3))
        x = x.reshape(n // batches, batches * c, *size)
    if out_dtype != x.dtype:
        x, w = x.astype(out_dtype), w.astype(out_dtype)  # accumulate in the wider dtype
    geom = geo.conv_geometry(
        OP,
        x.shape,
        w.shape,
        stride=strides,
        padding=padding,
        dilation=kernel_dilation,
        groups=max(features, batches),
        layout=geo.LAYOUTS[rank][0],
        x_name="lhs",
        input_dilation=input_dilation,
        rank=rank,
    )
    checked, precision = ev.check_plan(OP, plan, geom, x.dtype), ev.check_precision(OP, precision)
    z = _conv_jit(x, w, None, geom, checked, precision)
    out = jnp.transpose(z, tuple(int(k) for k in np.argsort(out_perm))).astype(out_dtype)
    return out if out_sharding is None else jax.sharding.reshard(out, out_sharding)
