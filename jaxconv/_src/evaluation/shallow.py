"""Shallow and depthwise forms: the rules in the caller's own layout, with no transposes.

A contraction of few terms per output (∏k·C/G) is far below a CPU's GEMM rate as a matrix
product. These forms sum the same terms as elementwise products (the forward, and depthwise
∂L/∂X and ∂L/∂W) or as one contraction for all taps (shallow ∂L/∂X and ∂L/∂W). Elementwise
sums do not care where the channel axis is, so every form here takes batched arrays in
`geom.layout`, (N, C, *spatial) or (N, *spatial, C), and (*k, C/G, O) kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import layout as lay
from jaxconv._src import rules
from jaxconv._src.evaluation import gemm
from jaxconv._src.evaluation.buffers import zeros_after
from jaxconv._src.geometry import ConvGeometry, Layout, is_channels_first


def accepts_depthwise(geom: ConvGeometry) -> bool:
    """The depthwise forms need one input channel per group (C/G = 1)."""
    return geom.in_channels == geom.groups


def _split_channels(a: jax.Array, groups: int, layout: Layout) -> jax.Array:
    """The channel axis of a batched array split into (groups, channels per group)."""
    axis = lay.channel_axis(layout)
    return a.reshape(*a.shape[:axis], groups, -1, *a.shape[axis + 1 :])


def forward_fused(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 29 as one fused sum of ∏k·C/G products, each a window channel times a kernel row.

    z[n, ..., g·Og + o] = Σ_{t, i} window_t[n, ..., g·Cg + i]·w[t, i, g·Og + o]:
    input channel g·Cg + i is repeated over its group's Og outputs and scaled by w[t, i].

    Returns:
      (N, O, *out) or (N, *out, O), in the accumulation dtype.
    """
    layout, axis, axes = geom.layout, lay.channel_axis(geom.layout), lay.spatial_axes(geom.layout)
    acc = rules.accumulation_dtype(x.dtype)
    c_per_group, out_per_group = w.shape[-2], geom.out_channels // geom.groups
    x_pad = rules.pad(x, geom.padding, axes, geom.input_dilation)
    return rules.total(
        jnp.repeat(lax.slice_in_dim(window, i, None, c_per_group, axis), out_per_group, axis)
        * lay.along_channels(w[(*tap, i)].astype(acc), layout)
        for tap in rules.taps(geom)
        for window in [rules.window(x_pad, tap, geom, axes).astype(acc)]
        for i in range(c_per_group)
    )


def grad_input_depthwise(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 31 for C/G = 1: each tap's share is ∂L/∂Z·w[t] per channel, summed over the
    group's Og outputs.

    Returns:
      (N, C, *in) or (N, *in, C), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    g = g.astype(rules.accumulation_dtype(g.dtype))

    def received(tap):
        share = g * lay.along_channels(w[(*tap, 0)].astype(g.dtype), layout)
        if geom.out_channels > geom.groups:  # a channel multiplier
            share = jnp.sum(_split_channels(share, geom.groups, layout), axis=axis + 1)
        return share

    shares = ((tap, received(tap)) for tap in rules.taps(geom))
    return rules.windows_adjoint(shares, geom, lay.spatial_axes(layout))


def sum_over_positions(p: jax.Array, layout: Layout) -> jax.Array:
    """Σ_{n, q} p[n, q, :] of (N, *spatial, C), or of (N, C, *spatial) channels-first: (C,).

    As a product with a ones vector, a vectorised and threaded GEMV: XLA:CPU's reduce over
    the positions, with its YNNPACK fusions off, is one serial sum per channel.
    """
    highest = lax.Precision.HIGHEST  # a sum: no reduced-precision passes on accelerators
    if not is_channels_first(layout):
        c = p.shape[-1]
        return jnp.dot(jnp.ones((p.size // c,), p.dtype), p.reshape(-1, c), precision=highest)
    n, c = p.shape[:2]
    positions = p.size // (n * c)
    per_image = jnp.dot(
        p.reshape(n * c, positions), jnp.ones((positions,), p.dtype), precision=highest
    )
    return per_image.reshape(n, c).sum(axis=0)


def grad_kernel_depthwise(
    x: jax.Array, g: jax.Array, geom: ConvGeometry, loop: bool = False
) -> jax.Array:
    """Eq. 30 for C/G = 1: per output channel, the sum over positions of window·∂L/∂Z, one
    product and sum per tap.

    With `loop`, the taps run as a `lax.fori_loop` whose body, one tap's product and sum,
    XLA compiles once however many taps there are; the tap's window is a dynamic slice.

    Returns:
      (*k, 1, O), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    acc = rules.accumulation_dtype(x.dtype)
    axes = lay.spatial_axes(layout)
    x_pad = rules.pad(x.astype(acc), geom.padding, axes, geom.input_dilation)
    repeats = geom.out_channels // geom.groups
    g = g.astype(acc)

    def tap_grad(window: jax.Array) -> jax.Array:
        return sum_over_positions(jnp.repeat(window, repeats, axis) * g, layout)

    taps = rules.taps(geom)
    if loop:
        indices = jnp.asarray(taps, int).reshape(len(taps), geom.spatial_rank)

        def add_tap(t, dw):
            tap = lax.dynamic_index_in_dim(indices, t, keepdims=False)
            window = gemm.row_slab(x_pad, list(tap), geom, axes)
            return lax.dynamic_update_index_in_dim(dw, tap_grad(window), t, 0)

        start = zeros_after(g, (len(taps), geom.out_channels), acc, batch_axes=0)
        dw = lax.fori_loop(0, len(taps), add_tap, start)
    else:
        dw = jnp.stack([tap_grad(rules.window(x_pad, tap, geom, axes)) for tap in taps])
    return dw.reshape(*geom.kernel_size, 1, geom.out_channels)


def grad_input_shallow(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 31 as one contraction over each group's Og channels, for all taps at once:

    received[t][n, p, g·Cg + i] = Σ_o ∂L/∂z[n, p, g·Og + o]·w[t, i, g·Og + o]
    (∏k·C/G rows), then put back by `rules.windows_adjoint`.

    Returns:
      (N, C, *in) or (N, *in, C), in the accumulation dtype.
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    c_per_group, o = w.shape[-2:]
    taps = rules.taps(geom)
    out_per_group = o // geom.groups
    # One contraction per group; a shallow grouped conv has few groups of few channels.
    received = jnp.concatenate(
        [
            lax.dot_general(
                w[..., k * out_per_group : (k + 1) * out_per_group].reshape(-1, out_per_group),
                lax.slice_in_dim(g, k * out_per_group, (k + 1) * out_per_group, axis=axis),
                (((1,), (axis,)), ((), ())),
                preferred_element_type=rules.accumulation_dtype(g.dtype),
            ).reshape(len(taps), c_per_group, g.shape[0], *geom.out_size)
            for k in range(geom.groups)
        ],
        axis=1,
    )  # (taps, C, N, *out)
    rank = geom.spatial_rank
    if is_channels_first(layout):
        order = (1, 0, *range(2, rank + 2))
    else:
        order = (1, *range(2, rank + 2), 0)
    shares = ((tap, received[index].transpose(order)) for index, tap in enumerate(taps))
    return rules.windows_adjoint(shares, geom, lay.spatial_axes(layout))


def grad_kernel_shallow(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 as one contraction over the positions (N, *out) of all taps' windows at once,
    per group.

    Returns:
      (*k, C/G, O), in the accumulation dtype.
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
            )  # (taps, Cg, Og)
            for k in range(geom.groups)
        ],
        axis=2,
    )
    return dw.reshape(*geom.kernel_size, c_per_group, geom.out_channels)
