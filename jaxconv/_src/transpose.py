"""`conv_transpose2d`: the transposed convolution, which is `conv2d`'s ∂L/∂X rule run forward.

PyTorch's `conv_transpose2d(x, w)` is the gradient, with respect to its input, of a `conv2d`
whose kernel is `w` read as OIHW with O = the transposed conv's C_in and I = C_out // groups
(HWIO as it stands for "NHWC"). Its input has the transposed conv's output shape, and its
padding is (p, p − output_padding) (`geometry.conv_transpose_geometry`). The rules of
`conv.py` then serve again with their roles exchanged, and no new correlation code is needed:

    Y     = grad_input_rule(g=X, W)          input-gradient equation: pad_full(X) ⋆ rot180(W)
    ∂L/∂X = forward_rule(∂L/∂Y, W)           eq. 6, the forward correlation
    ∂L/∂W = grad_kernel_rule(∂L/∂Y, g=X)     eqs. 8/11 with X_conv = ∂L/∂Y and ∂L/∂Z_conv = X
    ∂L/∂b = grad_bias_rule(∂L/∂Y)            bias gradient
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconv._src import conv
from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src.geometry import ConvGeometry, IntOrPair, Layout


def _forward(x: jax.Array, w: jax.Array, b: jax.Array | None, geom: ConvGeometry) -> jax.Array:
    """Y = `conv.grad_input_rule`(X, W) + b, `geom` being the conv whose ∂L/∂X this is."""
    rank, layout = geom.input_rank, geom.layout
    y = conv.grad_input_rule(
        lay.to_batched(x, layout, rank), lay.kernel_to_hwio(w, layout, rank), geom
    )
    if b is not None:
        y = y + lay.along_channels(b.astype(y.dtype), layout)
    return lay.from_batched(y.astype(x.dtype), layout, rank)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_transpose2d(
    x: jax.Array, w: jax.Array, b: jax.Array | None, geom: ConvGeometry
) -> jax.Array:
    return _forward(x, w, b, geom)


def _conv_transpose2d_fwd(x, w, b, geom):
    return _forward(x, w, b, geom), (x, w, b)


def _conv_transpose2d_bwd(geom, residuals, g):
    # The adjoint of the input-gradient rule is the forward correlation (eq. 6); W and b
    # get the kernel rule (eqs. 8/11) and bias rule with ∂L/∂Y in the role of the conv's X.
    x, w, b = residuals
    rank, layout = geom.input_rank, geom.layout
    g = lay.to_batched(g, layout, rank)
    w_hwio = lay.kernel_to_hwio(w, layout, rank)
    dx = conv.forward_rule(g, w_hwio, geom)
    dw = conv.grad_kernel_rule(g, lay.to_batched(x, layout, rank), geom)
    db = None if b is None else conv.grad_bias_rule(g, layout).astype(b.dtype)
    return (
        lay.from_batched(dx.astype(x.dtype), layout, rank),
        lay.hwio_to_kernel(dw.astype(w.dtype), layout, rank),
        db,
    )


_conv_transpose2d.defvjp(_conv_transpose2d_fwd, _conv_transpose2d_bwd)

_conv_transpose2d_jit = jax.jit(_conv_transpose2d, static_argnums=(3,))


def resolve_transpose_call(
    op: str,
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    *,
    stride: IntOrPair,
    padding: IntOrPair,
    output_padding: IntOrPair,
    dilation: IntOrPair,
    groups: int,
    layout: Layout,
    padding_mode: str,
) -> ConvGeometry:
    """Validates a `conv_transpose2d` call; returns the geometry of the conv it is the ∂L/∂X of.

    Raises:
      ValueError, TypeError: naming the argument and showing its value or the shapes.
    """
    geo.check_layout(op, layout)
    if padding_mode != "zeros":
        raise ValueError(
            f"{op}: only `padding_mode`='zeros' is supported for a transposed convolution "
            f"(as in PyTorch), got {padding_mode!r}."
        )
    conv._check_operands(op, "x", x, "w", w)
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{op}: `x` must be 2-D (H, W), 3-D (one image) or 4-D (a batch), "
            f"got shape {tuple(x.shape)}."
        )
    w_form = {"NCHW": "(C_in, C_out//groups, kh, kw)", "NHWC": "(kh, kw, C_out//groups, C_in)"}
    w_form = "(kh, kw)" if x.ndim == 2 else w_form[layout]
    w_ndim = 2 if x.ndim == 2 else 4
    if w.ndim != w_ndim:
        raise ValueError(
            f"{op}: `x` of shape {tuple(x.shape)} is {x.ndim}-D, so `w` must be {w_ndim}-D "
            f"{w_form}; got `w` of shape {tuple(w.shape)}."
        )
    stride2 = geo.normalize_pair(op, "stride", stride, minimum=1)
    dilation2 = geo.normalize_pair(op, "dilation", dilation, minimum=1)
    padding2 = geo.normalize_pair(op, "padding", padding, minimum=0)
    output_padding2 = geo.normalize_pair(op, "output_padding", output_padding, minimum=0)
    if not geo._is_int(groups):
        raise TypeError(f"{op}: `groups` must be an int, got {groups!r}.")
    if groups < 1:
        raise ValueError(f"{op}: `groups` must be >= 1, got {groups}.")
    groups = int(groups)

    batch = x.shape[:1] if x.ndim == 4 else ()
    if x.ndim == 2:
        (h, wd), (kh, kw), c_in, c_in_w, c_out_per_group = x.shape, w.shape, 1, 1, 1
    elif layout == "NCHW":
        (c_in, h, wd), (c_in_w, c_out_per_group, kh, kw) = x.shape[-3:], w.shape
    else:
        (h, wd, c_in), (kh, kw, c_out_per_group, c_in_w) = x.shape[-3:], w.shape
    if min(h, wd, kh, kw) < 1:
        raise ValueError(
            f"{op}: spatial sizes must be >= 1; got `x` of shape {tuple(x.shape)} "
            f"and `w` of shape {tuple(w.shape)}."
        )
    if c_in % groups:
        raise ValueError(
            f"{op}: `groups` (={groups}) must divide the input channels C_in (={c_in}) "
            f"of `x` with shape {tuple(x.shape)}."
        )
    if c_in_w != c_in:
        raise ValueError(
            f"{op}: channel mismatch: `x` of shape {tuple(x.shape)} ({layout}) has "
            f"C_in={c_in} channels, but `w` of shape {tuple(w.shape)} {w_form} has "
            f"C_in={c_in_w}."
        )
    c_out = c_out_per_group * groups
    if b is not None:
        geo.check_floating(op, "b", b.dtype)
        if tuple(b.shape) != (c_out,):
            raise ValueError(
                f"{op}: `b` must have shape (C_out,) = ({c_out},) (C_out//groups × groups = "
                f"{c_out_per_group} × {groups}), got {tuple(b.shape)}."
            )

    out_hw, conv_padding = geo.conv_transpose_geometry(
        op,
        (h, wd),
        (kh, kw),
        stride=stride2,
        padding=padding2,
        output_padding=output_padding2,
        dilation=dilation2,
    )
    if x.ndim == 2:
        out_shape = out_hw
    elif layout == "NCHW":
        out_shape = (*batch, c_out, *out_hw)
    else:
        out_shape = (*batch, *out_hw, c_out)
    # The conv whose input is the transposed conv's output and whose output is `x`.
    return geo.conv_geometry(
        op,
        out_shape,
        w.shape,
        stride=stride2,
        padding=conv_padding,
        dilation=dilation2,
        groups=groups,
        layout=layout,
        x_name="output",
    )


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
) -> jax.Array:
    """2-D transposed convolution (PyTorch's `conv_transpose2d`) from the hand-derived rules.

    The forward pass is `conv2d`'s input-gradient rule (∂L/∂X = pad_full(∂L/∂Z) ⋆ rot180(W),
    `conv.grad_input_rule`) applied to `x`, for the `conv2d` whose kernel is `w` read as OIHW
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
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    geom = resolve_transpose_call(
        "conv_transpose2d",
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
    )
    return _conv_transpose2d_jit(x, w, b, geom)
