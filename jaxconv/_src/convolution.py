"""`conv1d`, `conv2d`, `conv3d`, `conv` and their gradients: one `jax.custom_vjp` whose
backward runs the hand-derived rules, for any number of spatial axes.

The rules are `rules.py` (docs/derivation.md §10); `evaluation` evaluates them by the forms a
`Plan` names, chosen per platform unless the caller gives one. This module is the boundary:
it validates the call (`geometry`), moves between the caller's layout and rank and the
batched arrays the evaluations take (`layout`), and registers the backward with JAX. The
functions of each rank are the rank-generic ones with that rank's layouts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src import padding_modes as pm
from jaxconv._src.evaluation import evaluate as ev
from jaxconv._src.evaluation import mesh, sharded
from jaxconv._src.evaluation.evaluate import Auto, PlanLike, PrecisionLike
from jaxconv._src.evaluation.plan import Plan
from jaxconv._src.geometry import ConvGeometry, IntOrPair, IntOrTuple, Layout, PaddingLike


def _forward(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
    backward_follows: bool = False,
) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    x, w = lay.to_batched(x, layout, rank), lay.kernel_to_hwio(w, layout, rank)

    z = sharded.forward(x, w, geom, plan, precision, backward_follows=backward_follows)
    if b is not None:
        z = z + lay.along_channels(b.astype(z.dtype), layout)
    return lay.from_batched(z.astype(x.dtype), layout, rank)


def _backward(
    x: jax.Array,
    w: jax.Array,
    g: jax.Array,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
) -> tuple[jax.Array, jax.Array]:
    """(∂L/∂X, ∂L/∂W) in the accumulation dtype, from batched x and g and a (*k, C/G, O)
    kernel."""
    dx = sharded.grad_input(g, w, geom, plan, precision)
    return dx, sharded.grad_kernel(x, g, geom, plan, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
) -> jax.Array:
    return _forward(x, w, b, geom, plan, precision)


def _conv_fwd(x, w, b, geom, plan, precision):
    # Save the operands, not the im2col patches: the backward re-slices X, which costs less
    # memory than kh·kw copies of it.
    return _forward(x, w, b, geom, plan, precision, backward_follows=True), (x, w, b)


def integer_cotangents(*primals: jax.Array | None) -> tuple:
    """The cotangents JAX gives integer operands, float0 zeros (None for no bias), without
    evaluating a rule: integers have no gradient."""
    return tuple(None if p is None else np.zeros(p.shape, jax.dtypes.float0) for p in primals)


def _conv_bwd(geom, plan, precision, residuals, g):
    x, w, b = residuals
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return integer_cotangents(x, w, b)
    rank, layout = geom.input_rank, geom.layout
    g = lay.to_batched(g, layout, rank)
    dx, dw = _backward(
        lay.to_batched(x, layout, rank),
        lay.kernel_to_hwio(w, layout, rank),
        g,
        geom,
        plan,
        precision,
    )
    db = None if b is None else mesh.cotangent_like(ev.grad_bias(g, layout).astype(b.dtype), b)
    return (
        mesh.cotangent_like(lay.from_batched(dx.astype(x.dtype), layout, rank), x),
        mesh.cotangent_like(lay.hwio_to_kernel(dw.astype(w.dtype), layout, rank), w),
        db,
    )


_conv.defvjp(_conv_fwd, _conv_bwd)

# Compiled once per (shapes, dtypes, geometry, plan, precision); inlined under jit.
_conv_jit = jax.jit(_conv, static_argnums=(3, 4, 5))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _grad_input(
    g: jax.Array, w: jax.Array, geom: ConvGeometry, plan: Plan | Auto, precision: str | None
) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    g_b, w_hwio = lay.to_batched(g, layout, rank), lay.kernel_to_hwio(w, layout, rank)
    dx = sharded.grad_input(g_b, w_hwio, geom, plan, precision)
    return lay.from_batched(dx.astype(g.dtype), layout, rank)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _grad_kernel(
    x: jax.Array, g: jax.Array, geom: ConvGeometry, plan: Plan | Auto, precision: str | None
) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    x_b, g_b = lay.to_batched(x, layout, rank), lay.to_batched(g, layout, rank)
    dw = sharded.grad_kernel(x_b, g_b, geom, plan, precision)
    return lay.hwio_to_kernel(dw.astype(x.dtype), layout, rank)


# --- Public API. -----------------------------------------------------------------------------

OutSharding = jax.sharding.NamedSharding | jax.sharding.PartitionSpec | None


def layout_of(op: str, layout, kernel_shape: tuple[int, ...], kernel: str) -> Layout:
    """The layout of a rank-generic call: `layout` (any rank jaxconv computes), or for None
    the channels-first layout of a kernel of `kernel_shape`, (O, C//groups, *k); `kernel`
    names it in messages."""
    if layout is not None:
        return geo.normalize_layout(op, layout, None)
    return geo.LAYOUTS[geo.check_rank(op, kernel, len(kernel_shape) - 2, kernel_shape)][0]


def _convolve(
    op: str,
    rank: int | None,
    x,
    w,
    b,
    *,
    stride,
    padding,
    dilation,
    groups,
    layout,
    padding_mode,
    plan,
    precision,
    out_sharding,
) -> jax.Array:
    """A convolution call of `op`, for `rank` spatial axes (None: `layout`'s)."""
    x, w = geo.as_array(op, "x", x), geo.as_array(op, "w", w)
    b = None if b is None else geo.as_array(op, "b", b)
    config = dict(stride=stride, dilation=dilation, groups=groups, layout=layout, rank=rank)
    geom = geo.resolve_conv(op, x, w, b, padding=padding, **config)
    mode = pm.check_padding_mode(op, padding_mode, geom)
    plan, precision = ev.check_plan(op, plan, geom, x.dtype), ev.check_precision(op, precision)
    if mode != "zeros":
        x = pm.pad_input(x, geom, mode)
        geom = geo.resolve_conv(op, x, w, b, padding=0, **config)
    z = _conv_jit(x, w, b, geom, plan, precision)
    return z if out_sharding is None else jax.sharding.reshard(z, out_sharding)


def conv(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
    padding_mode: pm.PaddingMode = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """Convolution (cross-correlation, eq. 6) over 1, 2 or 3 spatial axes, with hand-derived
    gradients: `conv1d`, `conv2d` and `conv3d` are this function with their rank's layouts.

    Same result as `jax.lax.conv_general_dilated` with the matching dimension numbers, plus
    bias. Reverse-mode derivatives (`jax.grad`, `jax.vjp`, and their compositions) run the
    rules `conv_grad_input`, `conv_grad_kernel` and `conv_grad_bias`; forward mode
    (`jax.jvp`) is not supported by `jax.custom_vjp` and raises a TypeError.

    Args:
      x: input, (N, C, *spatial) channels-first or (N, *spatial, C) channels-last; one
        example without N; or, with a spatial-only kernel, a spatial-only input (one channel).
      w: kernel, (O, C//groups, *k) channels-first or (*k, C//groups, O) channels-last.
      b: optional bias of shape (O,).
      stride: int or one per spatial axis, each >= 1.
      padding: "VALID", "SAME", "SAME_LOWER" (as in `jax.lax`), an int, one int per axis, or
        one (lo, hi) pair per axis; negative values crop.
      dilation: kernel dilation, int or one per axis, each >= 1.
      groups: number of channel groups; divides C and O. groups == C is depthwise.
      layout: "NCW", "NWC", "NCHW", "NHWC", "NCDHW" or "NDHWC"; None: channels-first, with
        as many spatial axes as `w` has beyond (O, C//groups).
      padding_mode: "zeros", "reflect", "replicate" or "circular", as for `conv2d`.
      plan: "auto", "plain" or a `jaxconv.Plan`, as for `conv2d`.
      precision: of the contractions, as for `conv2d`.
      out_sharding: where Z is placed, as for `conv2d`.

    Returns:
      Z in the layout of `x`, dtype of `x`.

    Raises:
      ValueError, TypeError: on invalid shapes, dtypes or configuration, before computing.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x, w = jnp.ones((2, 4, 6, 8, 8)), jnp.ones((5, 4, 3, 3, 3))  # NCDHW, OIDHW
      >>> jaxconv.conv(x, w, padding="SAME").shape
      (2, 5, 6, 8, 8)
    """
    w = geo.as_array("conv", "w", w)
    return _convolve(
        "conv",
        None,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout_of("conv", layout, w.shape, "w"),
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def conv1d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCW",
    padding_mode: pm.PaddingMode = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """1-D convolution with hand-derived gradients: `conv` for one spatial axis.

    Args:
      x: "NCW": (N, C, W) or one signal (C, W); "NWC": (N, W, C) or (W, C); or (W,) with a
        (kw,) kernel.
      w: "NCW": (O, C//groups, kw); "NWC": (kw, C//groups, O).
      b, stride, padding, dilation, groups, padding_mode, plan, precision, out_sharding: as
        for `conv` (ints, or tuples of one int).
      layout: "NCW" or "NWC".

    Returns:
      Z of shape (N, O, Wo) ("NCW") or (N, Wo, O) ("NWC"), without N for an unbatched input;
      dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.array([[[1.0, 2.0, 3.0, 4.0]]])  # (N, C, W)
      >>> jaxconv.conv1d(x, jnp.array([[[1.0, -1.0]]]))  # differences of neighbours
      Array([[[-1., -1., -1.]]], dtype=float32)
    """
    return _convolve(
        "conv1d",
        1,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def conv2d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrPair = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
    padding_mode: pm.PaddingMode = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """2-D convolution (cross-correlation, eq. 6) with hand-derived gradients.

    Same result as `jax.lax.conv_general_dilated` with the matching dimension numbers, plus
    bias. Reverse-mode derivatives (`jax.grad`, `jax.vjp`, and their compositions, including
    `jax.hessian`) use the rules `conv2d_grad_input`, `conv2d_grad_kernel` and
    `conv2d_grad_bias`. Forward mode applied directly (`jax.jvp`, `jax.jacfwd`) is not
    supported by `jax.custom_vjp` and raises a TypeError.

    Args:
      x: input. "NCHW": (N, C, H, W) or one image (C, H, W); "NHWC": (N, H, W, C) or
        (H, W, C); or a single-channel image (H, W) with a 2-D kernel.
      w: kernel. "NCHW": (O, C//groups, kh, kw) [OIHW]; "NHWC": (kh, kw, C//groups, O)
        [HWIO]; (kh, kw) with a 2-D `x`.
      b: optional bias of shape (O,).
      stride: int or (sh, sw), each >= 1.
      padding: "VALID", "SAME", "SAME_LOWER" (as in `jax.lax`: out = ceil(in / stride)),
        an int, a pair (ph, pw), or ((lo_h, hi_h), (lo_w, hi_w)); negative values crop.
      dilation: kernel dilation, int or (dh, dw), each >= 1.
      groups: number of channel groups; divides C and O. groups == C is depthwise.
      layout: "NCHW" or "NHWC".
      padding_mode: what fills the padding: "zeros", or a copy of the border of `x`:
        "reflect" (mirrored, edge not repeated), "replicate" (edge repeated) or "circular"
        (wrapped), as in PyTorch. These pad `x` explicitly with `jnp.pad` (modes reflect,
        edge, wrap) by the padding resolved from `padding`, then convolve with padding 0;
        ∂L/∂X of the padding is JAX's autodiff of `jnp.pad`, which adds each copied
        position's gradient onto its source. They need padding >= 0, and per side
        < the input size ("reflect") or <= it ("circular").
      plan: how the rules are evaluated: "auto" (the plan `jaxconv.choose` returns for the
        platform the computation is compiled for), "plain" (`rules.py` as written, the whole
        batch at once) or a `jaxconv.Plan`. Every plan computes the same sums; a plan
        changes their order and rounding and the speed, not the result's meaning.
      precision: the precision of the contractions, forward and backward, as
        `jax.lax.dot_general` takes it: None (JAX's default), a `jax.lax.Precision`, or
        "default", "high", "highest", "bfloat16", "tensorfloat32", "float32".
      out_sharding: where Z is placed, as `jax.lax.conv_general_dilated` takes it (a
        `NamedSharding`, or a `PartitionSpec` under `jax.set_mesh`). None: where the
        operands put it; on Explicit mesh axes, the batch split as x's and the channels as
        w's output channels (one group).

    Returns:
      Z of shape (N, O, Ho, Wo) ("NCHW") or (N, Ho, Wo, O) ("NHWC"), without N for an
      unbatched input and (Ho, Wo) for a 2-D one; dtype of `x`. Half-precision inputs
      accumulate in float32.

    Raises:
      ValueError, TypeError: on invalid shapes, dtypes or configuration, before computing.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.arange(9.0).reshape(3, 3)
      >>> w = jnp.array([[1.0, 0.0], [0.0, -1.0]])
      >>> jaxconv.conv2d(x, w)
      Array([[-4., -4.],
             [-4., -4.]], dtype=float32)
    """
    return _convolve(
        "conv2d",
        2,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def conv3d(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCDHW",
    padding_mode: pm.PaddingMode = "zeros",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
    out_sharding: OutSharding = None,
) -> jax.Array:
    """3-D convolution with hand-derived gradients: `conv` for three spatial axes.

    Args:
      x: "NCDHW": (N, C, D, H, W) or one volume (C, D, H, W); "NDHWC": (N, D, H, W, C) or
        (D, H, W, C); or (D, H, W) with a (kd, kh, kw) kernel.
      w: "NCDHW": (O, C//groups, kd, kh, kw); "NDHWC": (kd, kh, kw, C//groups, O).
      b, stride, padding, dilation, groups, padding_mode, plan, precision, out_sharding: as
        for `conv` (ints, or one per axis (d, h, w)).
      layout: "NCDHW" or "NDHWC".

    Returns:
      Z of shape (N, O, Do, Ho, Wo) ("NCDHW") or (N, Do, Ho, Wo, O) ("NDHWC"), without N for
      an unbatched input; dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x, w = jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 2, 2, 2))
      >>> z = jaxconv.conv3d(x, w, stride=2)
      >>> z.shape, float(z[0, 0, 0, 0, 0])  # 2 channels × 8 taps
      ((1, 3, 2, 2, 2), 16.0)
    """
    return _convolve(
        "conv3d",
        3,
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=padding_mode,
        plan=plan,
        precision=precision,
        out_sharding=out_sharding,
    )


def _grad_input_call(op, rank, g, w, x_shape, *, plan, precision, **config) -> jax.Array:
    g, w = geo.as_array(op, "g", g), geo.as_array(op, "w", w)
    geo.check_operands(op, "g", g, "w", w)
    geom = geo.conv_geometry(op, x_shape, w.shape, x_name="x_shape", rank=rank, **config)
    geo.check_cotangent(op, g.shape, geom, f"`x_shape` {tuple(x_shape)} and `w` {w.shape}")
    plan = ev.check_plan(op, plan, geom, g.dtype)
    return _grad_input(g, w, geom, plan, ev.check_precision(op, precision))


def _grad_kernel_call(op, rank, x, g, w_shape, *, plan, precision, **config) -> jax.Array:
    x, g = geo.as_array(op, "x", x), geo.as_array(op, "g", g)
    geo.check_operands(op, "x", x, "g", g)
    geom = geo.conv_geometry(op, x.shape, w_shape, rank=rank, **config)
    geo.check_cotangent(op, g.shape, geom, f"`x` {x.shape} and `w_shape` {tuple(w_shape)}")
    plan = ev.check_plan(op, plan, geom, x.dtype)
    return _grad_kernel(x, g, geom, plan, ev.check_precision(op, precision))


def _grad_bias_call(op: str, g, layout, rank: int | None) -> jax.Array:
    g = geo.as_array(op, "g", g)
    if layout is None:  # conv_grad_bias: channels-first, a batch
        layout = geo.LAYOUTS[geo.check_rank(op, "g", g.ndim - 2, tuple(g.shape))][0]
    layout = geo.normalize_layout(op, layout, rank)
    n = geo.spatial_rank_of(layout)
    geo.check_dtype(op, "g", g.dtype)
    if g.ndim not in (n, n + 1, n + 2):
        raise ValueError(
            f"{op}: `g` must be {n}-D, {n + 1}-D or {n + 2}-D, got shape {tuple(g.shape)}."
        )
    return ev.grad_bias(lay.to_batched(g, layout, g.ndim), layout).astype(g.dtype)


def conv_grad_input(
    g: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    x_shape: tuple[int, ...],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
) -> jax.Array:
    """∂L/∂X of `conv`, any rank: full correlation of ∂L/∂Z with the rotated kernel.

    Args:
      g: ∂L/∂Z, shaped like `conv`'s output for an input of shape `x_shape`.
      w: the kernel, as for `conv`.
      x_shape: shape of the forward input X.
      stride, padding, dilation, groups, layout: the forward's configuration (`layout` None:
        channels-first, the rank of `w`).
      plan, precision: as for `conv` (the plan's `grad_input` form).

    Returns:
      ∂L/∂X of shape `x_shape` and the dtype of `g`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> g, w = jnp.ones((1, 1, 3)), jnp.array([[[1.0, 2.0]]])  # NCW, OIW
      >>> jaxconv.conv_grad_input(g, w, (1, 1, 4))
      Array([[[1., 3., 3., 2.]]], dtype=float32)
    """
    op = "conv_grad_input"
    w = geo.as_array(op, "w", w)
    return _grad_input_call(
        op,
        None,
        g,
        w,
        x_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout_of(op, layout, w.shape, "w"),
        plan=plan,
        precision=precision,
    )


def conv_grad_kernel(
    x: jax.typing.ArrayLike,
    g: jax.typing.ArrayLike,
    w_shape: tuple[int, ...],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
) -> jax.Array:
    """∂L/∂W of `conv`, any rank: X ⋆ ∂L/∂Z (eq. 11), summed over the output positions.

    Args:
      x: the forward input X.
      g: ∂L/∂Z, shaped like `conv`'s output.
      w_shape: shape of the kernel W.
      stride, padding, dilation, groups, layout: the forward's configuration (`layout` None:
        channels-first, the rank of `w_shape`).
      plan, precision: as for `conv` (the plan's `grad_kernel` form).

    Returns:
      ∂L/∂W of shape `w_shape` and the dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.arange(4.0).reshape(1, 1, 4)  # NCW
      >>> jaxconv.conv_grad_kernel(x, jnp.ones((1, 1, 3)), (1, 1, 2))
      Array([[[3., 6.]]], dtype=float32)
    """
    op = "conv_grad_kernel"
    w_shape = geo.check_shape(op, "w_shape", w_shape)
    return _grad_kernel_call(
        op,
        None,
        x,
        g,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout_of(op, layout, w_shape, "w_shape"),
        plan=plan,
        precision=precision,
    )


def conv_grad_bias(g: jax.typing.ArrayLike, *, layout: Layout | None = None) -> jax.Array:
    """∂L/∂b of `conv`, any rank: ∂L/∂Z summed over everything but the channel axis.

    Args:
      g: ∂L/∂Z in `layout`: a batch, one example, or spatial only (one channel).
      layout: the forward's layout; None: channels-first, g a batch (N, O, *out).

    Returns:
      (O,), dtype of `g`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> jaxconv.conv_grad_bias(jnp.ones((2, 3, 5)))  # NCW
      Array([10., 10., 10.], dtype=float32)
    """
    return _grad_bias_call("conv_grad_bias", g, layout, None)


def conv2d_grad_input(
    g: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    x_shape: tuple[int, ...],
    *,
    stride: IntOrPair = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
) -> jax.Array:
    """∂L/∂X of `conv2d`: full correlation of ∂L/∂Z with the rotated kernel.

    Args:
      g: ∂L/∂Z, shaped like `conv2d`'s output for an input of shape `x_shape`.
      w: the kernel, as for `conv2d`.
      x_shape: shape of the forward input X.
      stride, padding, dilation, groups, layout: the forward's configuration.
      plan: "auto", "plain" or a `jaxconv.Plan`, as for `conv2d` (its `grad_input` form).
      precision: of the contractions, as for `conv2d`.

    Returns:
      ∂L/∂X of shape `x_shape` and the dtype of `g`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> g = jnp.ones((2, 2))
      >>> w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> jaxconv.conv2d_grad_input(g, w, (3, 3))
      Array([[ 1.,  3.,  2.],
             [ 4., 10.,  6.],
             [ 3.,  7.,  4.]], dtype=float32)
    """
    return _grad_input_call(
        "conv2d_grad_input",
        2,
        g,
        w,
        x_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        plan=plan,
        precision=precision,
    )


def conv2d_grad_kernel(
    x: jax.typing.ArrayLike,
    g: jax.typing.ArrayLike,
    w_shape: tuple[int, ...],
    *,
    stride: IntOrPair = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
    plan: PlanLike = "auto",
    precision: PrecisionLike = None,
) -> jax.Array:
    """∂L/∂W of `conv2d`: X ⋆ ∂L/∂Z (eq. 11), summed over the output positions (eq. 8).

    Args:
      x: the forward input X.
      g: ∂L/∂Z, shaped like `conv2d`'s output.
      w_shape: shape of the kernel W.
      stride, padding, dilation, groups, layout: the forward's configuration.
      plan: "auto", "plain" or a `jaxconv.Plan`, as for `conv2d` (its `grad_kernel` form).
      precision: of the contractions, as for `conv2d`.

    Returns:
      ∂L/∂W of shape `w_shape` and the dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.arange(9.0).reshape(3, 3)
      >>> jaxconv.conv2d_grad_kernel(x, jnp.ones((2, 2)), (2, 2))
      Array([[ 8., 12.],
             [20., 24.]], dtype=float32)
    """
    return _grad_kernel_call(
        "conv2d_grad_kernel",
        2,
        x,
        g,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        plan=plan,
        precision=precision,
    )


def conv2d_grad_bias(g: jax.typing.ArrayLike, *, layout: Layout = "NCHW") -> jax.Array:
    """∂L/∂b of `conv2d`: ∂L/∂Z summed over everything but the channel axis.

    Args:
      g: ∂L/∂Z: (N, O, Ho, Wo) or (O, Ho, Wo) for "NCHW", (N, Ho, Wo, O) or (Ho, Wo, O) for
        "NHWC", or (Ho, Wo) for the single-channel 2-D case.
      layout: "NCHW" or "NHWC".

    Returns:
      (O,), dtype of `g` ((1,) for a 2-D `g`).

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> jaxconv.conv2d_grad_bias(jnp.ones((2, 3, 4, 4)))
      Array([32., 32., 32.], dtype=float32)
    """
    return _grad_bias_call("conv2d_grad_bias", g, layout, 2)
