"""`conv_transpose1d/2d/3d`: the transposed convolution, which is the convolution's ∂L/∂X
rule run forward, for any number of spatial axes.

PyTorch's `conv_transpose2d(x, w)` is the gradient, with respect to its input, of a `conv2d`
whose kernel is `w` read as OIHW with O = the transposed conv's C_in and I = C_out // groups
(HWIO as it stands for "NHWC"); likewise in 1-D and 3-D. Its input has the transposed conv's
output shape, and its
padding is (p, p − output_padding) (`geometry.conv_transpose_geometry`). The rules then serve
again with their roles exchanged (docs/derivation.md §11, eqs. 32–33), and no new correlation
code is needed:

    Y     = grad_input(g=X, W)          eq. 31: pad_full(X) ⋆ rot180(W)
    ∂L/∂X = forward(∂L/∂Y, W)           eq. 29, the forward correlation
    ∂L/∂W = grad_kernel(∂L/∂Y, g=X)     eq. 30 with X_conv = ∂L/∂Y and ∂L/∂Z_conv = X
    ∂L/∂b = grad_bias(∂L/∂Y)            eq. 17
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src.convolution import integer_cotangents
from jaxconv._src.evaluation import evaluate as ev
from jaxconv._src.evaluation import mesh, sharded
from jaxconv._src.evaluation.evaluate import Auto, PlanLike, PrecisionLike
from jaxconv._src.evaluation.plan import Plan
from jaxconv._src.geometry import ConvGeometry, IntOrPair, IntOrTuple, Layout

OutSharding = jax.sharding.NamedSharding | jax.sharding.PartitionSpec | None


def _forward(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
) -> jax.Array:
    """Y = grad_input(X, W) + b, `geom` being the conv whose ∂L/∂X this is."""
    rank, layout = geom.input_rank, geom.layout
    x_b, w_hwio = lay.to_batched(x, layout, rank), lay.kernel_to_hwio(w, layout, rank)
    y = sharded.grad_input(x_b, w_hwio, geom, plan, precision)
    if b is not None:
        y = y + lay.along_channels(b.astype(y.dtype), layout)
    return lay.from_batched(y.astype(x.dtype), layout, rank)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_transpose(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
) -> jax.Array:
    return _forward(x, w, b, geom, plan, precision)


def _conv_transpose_fwd(x, w, b, geom, plan, precision):
    return _forward(x, w, b, geom, plan, precision), (x, w, b)


def _conv_transpose_bwd(geom, plan, precision, residuals, g):
    # The adjoint of the input-gradient rule is the forward correlation (eq. 29); W and b
    # get the kernel rule (eq. 30) and bias rule with ∂L/∂Y in the role of the conv's X.
    x, w, b = residuals
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return integer_cotangents(x, w, b)
    rank, layout = geom.input_rank, geom.layout
    g = lay.to_batched(g, layout, rank)
    w_hwio, x_b = lay.kernel_to_hwio(w, layout, rank), lay.to_batched(x, layout, rank)
    dx = sharded.forward(g, w_hwio, geom, plan, precision)
    dw = sharded.grad_kernel(g, x_b, geom, plan, precision)
    db = None if b is None else mesh.cotangent_like(ev.grad_bias(g, layout).astype(b.dtype), b)
    return (
        mesh.cotangent_like(lay.from_batched(dx.astype(x.dtype), layout, rank), x),
        mesh.cotangent_like(lay.hwio_to_kernel(dw.astype(w.dtype), layout, rank), w),
        db,
    )


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)

_conv_transpose_jit = jax.jit(_conv_transpose, static_argnums=(3, 4, 5))


def _transpose(
    op: str,
    rank: int,
    x,
    w,
    b,
    *,
    stride,
    padding,
    output_padding,
    dilation,
    groups,
    layout,
    padding_mode,
    plan,
    precision,
    out_sharding,
) -> jax.Array:
    """A transposed convolution call of `op`, for `rank` spatial axes."""
    x, w = geo.as_array(op, "x", x), geo.as_array(op, "w", w)
    b = None if b is None else geo.as_array(op, "b", b)
    geom = geo.resolve_conv_transpose(
        op,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        rank=rank,
    )
    plan = ev.check_plan(op, plan, geom, x.dtype)
    y = _conv_transpose_jit(x, w, b, geom, plan, ev.check_precision(op, precision))
    return y if out_sharding is None else jax.sharding.reshard(y, out_sharding)


def conv_transpose2d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
    padding_mode: str = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """2-D transposed convolution (PyTorch's `conv_transpose2d`) from the hand-derived rules.

    The forward pass is `conv2d`'s input-gradient rule (∂L/∂X = pad_full(∂L/∂Z) ⋆ rot180(W),
    `rules.grad_input`) applied to `x`, for the `conv2d` whose kernel is `w` read as OIHW
    with O = C_in, I = C_out // groups. The backward pass reuses the forward correlation
    (eq. 6) for ∂L/∂x, the kernel rule (eqs. 8/11, with ∂L/∂Y as the conv's input and `x` as
    its ∂L/∂Z) for ∂L/∂w and the bias rule for ∂L/∂b. Reverse mode only, like `conv2d`.

    Args:
      x: input. "NCHW": (N, C_in, H, W) or (C_in, H, W); "NHWC": (N, H, W, C_in) or
        (H, W, C_in); or a single-channel image (H, W) with a 2-D kernel.
      w: kernel. "NCHW": (C_in, C_out//groups, kh, kw) (PyTorch's layout); "NHWC":
        (kh, kw, C_out//groups, C_in); (kh, kw) with a 2-D `x`.
      b: optional bias of shape (C_out,).
      stride: int or (sh, sw), each >= 1.
      padding: int or (ph, pw), each >= 0: removes p rows/columns from each side of the
        output (as a conv's input padding, dilation·(k−1) − p implicit zeros).
      output_padding: int or (oh, ow), each >= 0 and < max(stride, dilation) on its axis:
        rows/columns added at the high end of the output, to pick among the output sizes
        that a strided conv maps to the same size.
      dilation: kernel dilation, int or (dh, dw), each >= 1.
      groups: number of channel groups; divides C_in. groups == C_in is depthwise.
      layout: "NCHW" or "NHWC".
      padding_mode: only "zeros", as in PyTorch.
      plan: "auto", "plain" or a `jaxconv.Plan` of the conv whose ∂L/∂X this is: its
        `grad_input` form runs the forward, its `forward` and `grad_kernel` forms the backward.
      precision: of the contractions, as for `conv2d`.
      out_sharding: where Y is placed, as for `conv2d`.

    Returns:
      Y of shape (N, C_out, H_out, W_out) ("NCHW") or (N, H_out, W_out, C_out) ("NHWC"),
      without N for an unbatched input and (H_out, W_out) for a 2-D one, dtype of `x`, with
      H_out = (H − 1)·sh − 2·ph + dh·(kh − 1) + oh + 1 and likewise W_out.

    Raises:
      ValueError, TypeError: on invalid shapes, dtypes or configuration (output_padding too
        large, negative padding, an empty output, a padding_mode other than "zeros", ...),
        before computing.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> jaxconv.conv_transpose2d(x, jnp.ones((2, 2)), stride=2)  # each pixel → a 2×2 block
      Array([[1., 1., 2., 2.],
             [1., 1., 2., 2.],
             [3., 3., 4., 4.],
             [3., 3., 4., 4.]], dtype=float32)
      >>> y = jaxconv.conv_transpose2d(
      ...     jnp.ones((1, 4, 5, 5)), jnp.ones((4, 2, 3, 3)), stride=2, padding=1, output_padding=1
      ... )
      >>> y.shape
      (1, 2, 10, 10)
    """
    return _transpose(
        "conv_transpose2d",
        2,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def conv_transpose1d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCW",
    padding_mode: str = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """1-D transposed convolution (PyTorch's `conv_transpose1d`) from the hand-derived rules:
    `conv_transpose2d` for one spatial axis.

    Args:
      x: "NCW": (N, C_in, W) or (C_in, W); "NWC": (N, W, C_in) or (W, C_in); or (W,) with a
        (kw,) kernel.
      w: "NCW": (C_in, C_out//groups, kw) (PyTorch's layout); "NWC": (kw, C_out//groups, C_in).
      b, stride, padding, output_padding, dilation, groups: as for `conv_transpose2d`, with
        ints or tuples of one int.
      padding_mode, plan, precision, out_sharding: as for `conv_transpose2d`.
      layout: "NCW" or "NWC".

    Returns:
      Y of shape (N, C_out, W_out) ("NCW") or (N, W_out, C_out) ("NWC"), without N for an
      unbatched input, dtype of `x`; W_out = (W − 1)·stride − 2·padding + dilation·(kw − 1)
      + output_padding + 1.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.array([[[1.0, 2.0, 3.0]]])  # (N, C_in, W)
      >>> jaxconv.conv_transpose1d(x, jnp.ones((1, 1, 2)), stride=2)  # each entry → 2
      Array([[[1., 1., 2., 2., 3., 3.]]], dtype=float32)
    """
    return _transpose(
        "conv_transpose1d",
        1,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def conv_transpose3d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCDHW",
    padding_mode: str = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """3-D transposed convolution (PyTorch's `conv_transpose3d`) from the hand-derived rules:
    `conv_transpose2d` for three spatial axes.

    Args:
      x: "NCDHW": (N, C_in, D, H, W) or (C_in, D, H, W); "NDHWC": (N, D, H, W, C_in) or
        (D, H, W, C_in); or (D, H, W) with a (kd, kh, kw) kernel.
      w: "NCDHW": (C_in, C_out//groups, kd, kh, kw) (PyTorch's layout); "NDHWC":
        (kd, kh, kw, C_out//groups, C_in).
      b, stride, padding, output_padding, dilation, groups: as for `conv_transpose2d`, with
        ints or one per axis (d, h, w).
      padding_mode, plan, precision, out_sharding: as for `conv_transpose2d`.
      layout: "NCDHW" or "NDHWC".

    Returns:
      Y of shape (N, C_out, D_out, H_out, W_out) ("NCDHW") or (N, D_out, H_out, W_out, C_out)
      ("NDHWC"), without N for an unbatched input, dtype of `x`; per axis out = (in − 1)·stride
      − 2·padding + dilation·(k − 1) + output_padding + 1.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x, w = jnp.ones((1, 4, 3, 3, 3)), jnp.ones((4, 2, 4, 4, 4))
      >>> jaxconv.conv_transpose3d(x, w, stride=2, padding=1).shape  # (3 − 1)·2 − 2 + 3 + 1
      (1, 2, 6, 6, 6)
    """
    return _transpose(
        "conv_transpose3d",
        3,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )
