"""Shallow and depthwise forms: the rules in the caller's own layout, with no transposes.

A contraction of few terms per output (kh·kw·C/G) is far below a CPU's GEMM rate as a
matrix product. These forms sum the same terms as elementwise products (the forward, and
depthwise ∂L/∂X and ∂L/∂W) or as one contraction for all taps (shallow ∂L/∂X and ∂L/∂W).
Elementwise sums do not care where the channel axis is, so every form here takes batched
arrays in `geom.layout`, (N, C, H, W) or (N, H, W, C), and (kh, kw, C/G, O) kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import layout as lay
from jaxconv._src import rules
from jaxconv._src.geometry import ConvGeometry, Layout


def accepts_depthwise(geom: ConvGeometry) -> bool:
    """The depthwise forms need one input channel per group (C/G = 1)."""
    return geom.in_channels == geom.groups


def _split_channels(a: jax.Array, groups: int, layout: Layout) -> jax.Array:
    """The channel axis of a batched array split into (groups, channels per group)."""
    axis = lay.channel_axis(layout)
    return a.reshape(*a.shape[:axis], groups, -1, *a.shape[axis + 1 :])


def forward_fused(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 29 as one fused sum of kh·kw·C/G products, each a window channel times a kernel row.

    z[n, :, :, g·Og + o] = Σ_{a, b, i} window_ab[n, :, :, g·Cg + i]·w[a, b, i, g·Og + o]:
    input channel g·Cg + i is repeated over its group's Og outputs and scaled by w[a, b, i].

    Returns:
      (N, O, Ho, Wo) or (N, Ho, Wo, O), in the accumulation dtype.
    """
    layout, axis, axes = geom.layout, lay.channel_axis(geom.layout), lay.spatial_axes(geom.layout)
    acc = rules.accumulation_dtype(x.dtype)
    c_per_group, out_per_group = w.shape[2], geom.out_channels // geom.groups
    x_pad = rules.pad(x, geom.padding, axes, geom.input_dilation)
    return rules.total(
        jnp.repeat(lax.slice_in_dim(window, i, None, c_per_group, axis), out_per_group, axis)
        * lay.along_channels(w[a, b, i].astype(acc), layout)
        for a, b in rules.taps(geom)
        for window in [rules.window(x_pad, (a, b), geom, axes).astype(acc)]
        for i in range(c_per_group)
    )


def grad_input_depthwise(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 31 for C/G = 1: each tap's share is ∂L/∂Z·w[a, b] per channel, summed over the
    group's Og outputs.

    Returns:
      (N, C, H, W) or (N, H, W, C), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    g = g.astype(rules.accumulation_dtype(g.dtype))

    def received(a, b):
        share = g * lay.along_channels(w[a, b, 0].astype(g.dtype), layout)
        if geom.out_channels > geom.groups:  # a channel multiplier
            share = jnp.sum(_split_channels(share, geom.groups, layout), axis=axis + 1)
        return share

    shares = (((a, b), received(a, b)) for a, b in rules.taps(geom))
    return rules.windows_adjoint(shares, geom, lay.spatial_axes(layout))


def sum_over_positions(p: jax.Array, layout: Layout) -> jax.Array:
    """Σ_{n, r, c} p[n, r, c, :] of (N, H, W, C), or of (N, C, H, W) for "NCHW": (C,).

    As a product with a ones vector, a vectorised and threaded GEMV: XLA:CPU's reduce over
    the positions, with its YNNPACK fusions off, is one serial sum per channel.
    """
    highest = lax.Precision.HIGHEST  # a sum: no reduced-precision passes on accelerators
    if layout == "NHWC":
        c = p.shape[3]
        return jnp.dot(jnp.ones((p.size // c,), p.dtype), p.reshape(-1, c), precision=highest)
    n, c, h, w = p.shape
    per_image = jnp.dot(p.reshape(n * c, h * w), jnp.ones((h * w,), p.dtype), precision=highest)
    return per_image.reshape(n, c).sum(axis=0)


def grad_kernel_depthwise(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 for C/G = 1: per output channel, the sum over positions of window·∂L/∂Z, one
    product and sum per tap.

    Returns:
      (kh, kw, 1, O), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    acc = rules.accumulation_dtype(x.dtype)
    axes = lay.spatial_axes(layout)
    x_pad = rules.pad(x.astype(acc), geom.padding, axes, geom.input_dilation)
    repeats = geom.out_channels // geom.groups
    dw = [
        sum_over_positions(
            jnp.repeat(rules.window(x_pad, tap, geom, axes), repeats, axis) * g.astype(acc),
            layout,
        )
        for tap in rules.taps(geom)
    ]
    return jnp.stack(dw).reshape(*geom.kernel_hw, 1, geom.out_channels)


def grad_input_shallow(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 31 as one contraction over each group's Og channels, for all taps at once:

    received[a, b][n, r, c, g·Cg + i] = Σ_o ∂L/∂z[n, r, c, g·Og + o]·w[a, b, i, g·Og + o]
    (kh·kw·C/G rows), then put back by `rules.windows_adjoint`.

    Returns:
      (N, C, H, W) or (N, H, W, C), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    kh, kw, c_per_group, o = w.shape
    out_per_group = o // geom.groups
    # One contraction per group; a shallow grouped conv has few groups of few channels.
    received = jnp.concatenate(
        [
            lax.dot_general(
                w[..., k * out_per_group : (k + 1) * out_per_group].reshape(-1, out_per_group),
                lax.slice_in_dim(g, k * out_per_group, (k + 1) * out_per_group, axis=axis),
                (((1,), (axis,)), ((), ())),
                preferred_element_type=rules.accumulation_dtype(g.dtype),
            ).reshape(kh * kw, c_per_group, g.shape[0], *geom.out_hw)
            for k in range(geom.groups)
        ],
        axis=1,
    )  # (kh·kw, C, N, Ho, Wo)
    order = (1, 0, 2, 3) if layout == "NCHW" else (1, 2, 3, 0)
    shares = (((a, b), received[a * kw + b].transpose(order)) for a, b in rules.taps(geom))
    return rules.windows_adjoint(shares, geom, lay.spatial_axes(layout))


def grad_kernel_shallow(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 as one contraction over the positions (N, Ho, Wo) of all taps' windows at
    once, per group.

    Returns:
      (kh, kw, C/G, O), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    axes = lay.spatial_axes(layout)
    c_per_group, out_per_group = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    x_pad = rules.pad(x, geom.padding, axes, geom.input_dilation)
    windows = jnp.stack([rules.window(x_pad, tap, geom, axes) for tap in rules.taps(geom)])
    positions = lay.position_axes(layout)
    dw = jnp.concatenate(
        [
            lax.dot_general(
                lax.slice_in_dim(windows, k * c_per_group, (k + 1) * c_per_group, axis=axis + 1),
                lax.slice_in_dim(g, k * out_per_group, (k + 1) * out_per_group, axis=axis),
                ((tuple(d + 1 for d in positions), positions), ((), ())),
                preferred_element_type=rules.accumulation_dtype(x.dtype),
            )  # (kh·kw, Cg, Og)
            for k in range(geom.groups)
        ],
        axis=2,
    )
    return dw.reshape(*geom.kernel_hw, c_per_group, geom.out_channels)
