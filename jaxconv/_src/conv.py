"""`conv2d`: forward from strided `lax.slice`s, backward from the hand-derived rules.

Equation numbers refer to the derivation in `shared/seed` and `docs/derivation.md`:
eq. 6 is the forward correlation, eqs. 8/11 the kernel gradient (with the sums over the
*output* positions), and the "input gradient" equation the full correlation of ∂L/∂Z with
the rotated kernel. The rules take batched arrays in the caller's layout, (N, C, H, W) or
(N, H, W, C), and HWIO kernels; `layout.py` converts at the boundary.

Each rule has three evaluations of the same sums, chosen by the contraction's depth
(kh·kw·C/G terms per output) and the kernel: deep ones as GEMMs over a minor channel axis
(channels-last, a few images at a time), by Winograd's F(2×2, 3×3) for ungrouped 3×3
kernels at stride 1, dilated ones by phases (`winograd.py`, eqs. 35–37); shallow and
depthwise ones as fused elementwise or whole-batch contractions in the caller's own layout,
which need no transposes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src import padding_modes as pm
from jaxconv._src import winograd as wg
from jaxconv._src.geometry import ConvGeometry, IntOrPair, Layout, PaddingLike


def _accumulation_dtype(dtype) -> jnp.dtype:
    """f32 for half-precision inputs (bf16, f16), the input dtype otherwise."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


# --- Windows and their adjoint. ------------------------------------------------------------


def _pad_spatial(x: jax.Array, pads, layout: Layout = "NHWC") -> jax.Array:
    """Zero-pads (or, for negative entries, crops) the H and W axes of a batched array.

    Args:
      x: (N, H, W, C) or, for "NCHW", (N, C, H, W).
      pads: ((lo_h, hi_h[, interior_h]), (lo_w, hi_w[, interior_w])).
      layout: the layout of `x`.
    """
    config = [(0, 0, 0)] * 4
    for axis, p in zip(lay.spatial_axes(layout), pads):
        config[axis] = (p[0], p[1], p[2] if len(p) == 3 else 0)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _tap_window(x_pad: jax.Array, a: int, b: int, geom: ConvGeometry, layout: Layout) -> jax.Array:
    """Tap (a, b)'s window, the x_{r+a, c+b} of eq. 6: one strided `lax.slice`.

    window[n, r, c, :] = x_pad[n, a·dh + r·sh, b·dw + c·sw, :] for r < Ho, c < Wo.

    Args:
      x_pad: (N, Hp, Wp, C) or (N, C, Hp, Wp), the input after `geom.padding`.
      a, b: the kernel tap.
      layout: the layout of `x_pad`.

    Returns:
      (N, Ho, Wo, C) or (N, C, Ho, Wo).
    """
    start, limit, strides = [0] * 4, list(x_pad.shape), [1] * 4
    for axis, first, extent, step in zip(
        lay.spatial_axes(layout),
        (a * geom.dilation[0], b * geom.dilation[1]),
        geom.window_extent_hw,
        geom.stride,
    ):
        start[axis], limit[axis], strides[axis] = first, first + extent, step
    return lax.slice(x_pad, start, limit, strides)


def _place_taps(received, geom: ConvGeometry, layout: Layout) -> jax.Array:
    """∂L/∂X from what each tap's window received: the adjoint of `_tap_window`, summed.

    `lax.pad`, the adjoint of the strided slice, spreads a share by stride − 1 interior zeros
    and puts it back at the tap's start (a·dh, b·dw); the shares add up to ∂L/∂X_pad, and
    the adjoint of the forward's padding crops what it added and zero-fills what it cropped.

    Args:
      received: pairs ((a, b), share), share (N, Ho, Wo, C) or (N, C, Ho, Wo).
      layout: the layout of the shares.

    Returns:
      (N, H, W, C) or (N, C, H, W).
    """
    (hp, wp), (eh, ew) = geom.padded_hw, geom.window_extent_hw
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    dx_pad = sum(
        _pad_spatial(
            share,
            ((a * dh, hp - a * dh - eh, sh - 1), (b * dw, wp - b * dw - ew, sw - 1)),
            layout,
        )
        for (a, b), share in received
    )
    return _pad_spatial(dx_pad, tuple((-lo, -hi) for lo, hi in geom.padding), layout)


def _taps(geom: ConvGeometry) -> list[tuple[int, int]]:
    kh, kw = geom.kernel_hw
    return [(a, b) for a in range(kh) for b in range(kw)]


def _split_channels(a: jax.Array, groups: int, layout: Layout) -> jax.Array:
    """The channel axis of a batched array split into (groups, channels per group)."""
    axis = lay.channel_axis(layout)
    return a.reshape(*a.shape[:axis], groups, -1, *a.shape[axis + 1 :])


# --- Which evaluation. ---------------------------------------------------------------------
# Contractions this shallow (kh·kw·C/G terms per output) are far below the machine's GEMM
# rate as GEMMs (A: 1×3×3, 20 ms as GEMMs, 0.7 ms as fused multiply-adds).
_SHALLOW_MAX_DEPTH = 36


def _is_depthwise(geom: ConvGeometry) -> bool:
    # One input channel per group, in more than one group: with a single group the sums
    # over its O outputs are a contraction, which the shallow forms do as one GEMM.
    return geom.in_channels == geom.groups > 1


def _is_shallow(geom: ConvGeometry) -> bool:
    kh, kw = geom.kernel_hw
    c_per_group = geom.in_channels // geom.groups
    return c_per_group == 1 or kh * kw * c_per_group <= _SHALLOW_MAX_DEPTH


def _is_winograd(geom: ConvGeometry) -> bool:
    # F(2×2, 3×3) (`winograd.py`) takes 16 products per 2×2 outputs where the GEMM forms
    # take 36: for a deep, ungrouped 3×3 kernel at stride 1; a dilated one by its phases.
    return geom.kernel_hw == (3, 3) and geom.stride == (1, 1) and geom.groups == 1


# ∂L/∂W by Winograd does 4/9 of the GEMM form's multiply-adds, but as 16 GEMMs per chunk
# (C × tiles)·(tiles × O); smaller than this each, XLA runs them slowly enough that the GEMM
# form's one contraction over all taps is faster (B, 2^21.2 each: 62 -> 40 ms with YNNPACK's
# fusions off, level within noise as installed; D, 2^22.6, and E, 2^22, are faster by
# Winograd; this machine).
_WINOGRAD_KERNEL_GRAD_MIN_MACS = 2**22
# ∂L/∂W's GEMM form puts the windows of all taps side by side in one contraction up to this
# many output rows (kh·kw·C/G; B, 288: 46 -> 34 ms, C, 576: 30 -> 28 ms against one per
# kernel row, this machine); deeper, one per kernel row keeps a chunk's windows smaller.
_KERNEL_GRAD_ONE_GEMM_MAX_DEPTH = 576


def _is_winograd_kernel_grad(geom: ConvGeometry, images_per_chunk: int) -> bool:
    """Whether ∂L/∂W goes by Winograd: a Winograd geometry whose 16 GEMMs, on chunks of
    `images_per_chunk` images, have at least `_WINOGRAD_KERNEL_GRAD_MIN_MACS` multiply-adds."""
    if not _is_winograd(geom):
        return False
    tiles = images_per_chunk * math.prod(
        (n + -n % (2 * d)) // 2 for n, d in zip(geom.out_hw, geom.dilation)
    )  # 2×2 output tiles per image, over all phases (`_tile_aligned`)
    return tiles * geom.in_channels * geom.out_channels >= _WINOGRAD_KERNEL_GRAD_MIN_MACS


# --- GEMM forms: channels-last, a contraction per kernel row (∂L/∂W: all taps at once). -------


def _row_windows(x_pad: jax.Array, row: int, geom: ConvGeometry) -> list[jax.Array]:
    """The windows of one kernel row's taps, positions flattened: kw arrays (N·Ho·Wo, C).

    Args:
      x_pad: (N, Hp, Wp, C), the input after `geom.padding`.
      row: the kernel row a.
    """
    c = x_pad.shape[3]
    return [
        _tap_window(x_pad, row, b, geom, "NHWC").reshape(-1, c) for b in range(geom.kernel_hw[1])
    ]


def _row_forward(windows: list[jax.Array], w_row: jax.Array, groups: int, acc) -> jax.Array:
    """One kernel row's term of eq. 6: Σ_{b, i} windows[b][m, g·Cg + i]·w_row[b, i, g·Og + o].

    The kw windows side by side make one contraction over kw·C/G channels: a better-shaped
    GEMM than kw of depth C/G.

    Args:
      windows: kw arrays (M, C), from `_row_windows`.
      w_row: (kw, C//G, O), the kernel's row a.
      groups: G.
      acc: accumulation dtype.

    Returns:
      (M, O) in `acc`.
    """
    kw, c_per_group, o = w_row.shape
    m, c = windows[0].shape
    if groups == 1:
        return jnp.dot(
            jnp.concatenate(windows, axis=1), w_row.reshape(kw * c, o), preferred_element_type=acc
        )
    out = lax.dot_general(
        jnp.stack(windows, axis=1).reshape(m, kw, groups, c_per_group),
        w_row.reshape(kw, c_per_group, groups, o // groups),
        (((1, 3), (0, 1)), ((2,), (2,))),
        preferred_element_type=acc,
    )  # (G, M, Og)
    return out.transpose(1, 0, 2).reshape(m, o)


def _row_backward(g: jax.Array, w_row: jax.Array, groups: int, acc) -> list[jax.Array]:
    """One kernel row's terms of ∂L/∂X, before they are put back where their windows were.

    received[b][m, g·Cg + i] = Σ_o g[m, g·Og + o]·w_row[b, i, g·Og + o].

    Args:
      g: (M, O), ∂L/∂Z with its positions flattened.
      w_row: (kw, C//G, O).

    Returns:
      kw arrays (M, C) in `acc`.
    """
    m, o = g.shape
    kw, c_per_group, _ = w_row.shape
    if groups == 1:
        out = lax.dot_general(
            g,
            w_row.reshape(kw * c_per_group, o),
            (((1,), (1,)), ((), ())),
            preferred_element_type=acc,
        )
        return jnp.split(out, kw, axis=1)
    out = lax.dot_general(
        g.reshape(m, groups, o // groups),
        w_row.reshape(kw, c_per_group, groups, o // groups),
        (((2,), (3,)), ((1,), (2,))),
        preferred_element_type=acc,
    )  # (G, M, kw, Cg)
    out = out.transpose(2, 1, 0, 3).reshape(kw, m, groups * c_per_group)
    return list(out)


def _windows_kernel_grad(windows: list[jax.Array], g: jax.Array, groups: int, acc) -> jax.Array:
    """The taps' ∂L/∂W (eq. 8) from their windows: Σ_m windows[t][m, g·Cg + i]·g[m, g·Og + o].

    The windows side by side make one contraction with len(windows)·C/G output rows.

    Args:
      windows: arrays (M, C), the taps' windows of the padded input.
      g: (M, O), ∂L/∂Z with its positions flattened.

    Returns:
      (len(windows), C//G, O) in `acc`.
    """
    taps, (m, c), o = len(windows), windows[0].shape, g.shape[1]
    if groups == 1:
        dw = lax.dot_general(
            jnp.concatenate(windows, axis=1),
            g,
            (((0,), (0,)), ((), ())),
            preferred_element_type=acc,
        )
        return dw.reshape(taps, c, o)
    dw = lax.dot_general(
        jnp.stack(windows, axis=1).reshape(m, taps, groups, c // groups),
        g.reshape(m, groups, o // groups),
        (((0,), (0,)), ((2,), (1,))),
        preferred_element_type=acc,
    )  # (G, taps, Cg, Og)
    return dw.transpose(1, 2, 0, 3).reshape(taps, c // groups, o)


def _forward_rows(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 6 as GEMMs, on (N, H, W, C) images: the sum of `_row_forward` over rows."""
    acc = _accumulation_dtype(x.dtype)
    x_pad = _pad_spatial(x, geom.padding)
    z = sum(
        _row_forward(_row_windows(x_pad, a, geom), w[a], geom.groups, acc)
        for a in range(geom.kernel_hw[0])
    )
    return z.reshape(x.shape[0], *geom.out_hw, geom.out_channels)


def _grad_input_rows(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The input-gradient equation as GEMMs, on (N, Ho, Wo, O) images of ∂L/∂Z."""
    acc = _accumulation_dtype(g.dtype)
    g_rows = g.reshape(-1, geom.out_channels)
    received = (
        ((a, b), share.reshape(g.shape[0], *geom.out_hw, geom.in_channels))
        for a in range(geom.kernel_hw[0])
        for b, share in enumerate(_row_backward(g_rows, w[a], geom.groups, acc))
    )
    return _place_taps(received, geom, "NHWC")


def _grad_kernel_gemm(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 8 as GEMMs, summed over the (N, H, W, C) images of `x` and `g`: one contraction
    over the windows of all taps when it has at most `_KERNEL_GRAD_ONE_GEMM_MAX_DEPTH` output
    rows (kh·kw·C/G), else one per kernel row."""
    acc = _accumulation_dtype(x.dtype)
    x_pad = _pad_spatial(x, geom.padding)
    g_rows = g.reshape(-1, geom.out_channels)
    (kh, kw), groups = geom.kernel_hw, geom.groups
    rows = [_row_windows(x_pad, a, geom) for a in range(kh)]
    if kh * kw * geom.in_channels // groups <= _KERNEL_GRAD_ONE_GEMM_MAX_DEPTH:
        windows = [window for row in rows for window in row]
        dw = _windows_kernel_grad(windows, g_rows, groups, acc)
        return dw.reshape(kh, kw, *dw.shape[1:])
    return jnp.stack([_windows_kernel_grad(row, g_rows, groups, acc) for row in rows])


# --- Winograd forms: F(2×2, 3×3), channels-last. --------------------------------------------


def _tile_aligned(pads, out_hw: tuple[int, int], dilation: tuple[int, int]):
    """`pads` with each high side grown so that the out_hw outputs split into `dilation`
    phases of whole 2×2 tiles: each n rounded up to a multiple of 2·d (the overhang is
    cropped, or zero, afterwards)."""
    return tuple((lo, hi + -n % (2 * d)) for (lo, hi), n, d in zip(pads, out_hw, dilation))


def _split_phases(a: jax.Array, dilation: tuple[int, int]) -> jax.Array:
    """(N, dh·H, dw·W, C) -> (N·dh·dw, H, W, C), phase (ρ, σ) of image n, a[n, ρ::dh, σ::dw],
    at n·dh·dw + ρ·dw + σ.

    With dilation d and stride 1, output d·p + ρ reads inputs d·(p + a) + ρ only (eq. 37):
    each phase of the padded input is an undilated correlation with the same kernel.
    """
    if dilation == (1, 1):
        return a
    (n, h, w, c), (dh, dw) = a.shape, dilation
    a = a.reshape(n, h // dh, dh, w // dw, dw, c).transpose(0, 2, 4, 1, 3, 5)
    return a.reshape(n * dh * dw, h // dh, w // dw, c)


def _merge_phases(a: jax.Array, dilation: tuple[int, int]) -> jax.Array:
    """The inverse of `_split_phases`: (N·dh·dw, H, W, C) -> (N, dh·H, dw·W, C)."""
    if dilation == (1, 1):
        return a
    (m, h, w, c), (dh, dw) = a.shape, dilation
    a = a.reshape(m // (dh * dw), dh, dw, h, w, c).transpose(0, 3, 1, 4, 2, 5)
    return a.reshape(m // (dh * dw), h * dh, w * dw, c)


def _forward_winograd(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 6 by F(2×2, 3×3) on each phase of the padded input (eq. 37), on (N, H, W, C)
    images."""
    acc = _accumulation_dtype(x.dtype)
    pads = _tile_aligned(geom.padding, geom.out_hw, geom.dilation)
    x_phases = _split_phases(_pad_spatial(x.astype(acc), pads), geom.dilation)
    z = _merge_phases(wg.correlate(x_phases, w.astype(acc), acc), geom.dilation)
    ho, wo = geom.out_hw
    return z[:, :ho, :wo]


def _grad_input_winograd(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The input-gradient equation as written, ∂L/∂X = pad_full(∂L/∂Z) ⋆ rot180(W) with each
    tap's (C, O) block transposed and the forward's dilation, by F(2×2, 3×3) on each phase
    (eq. 37), on (N, Ho, Wo, O) images of ∂L/∂Z.

    The full padding (kh − 1)·d = 2d, less the forward's (lo, hi) on each side: ∂L/∂x[i] =
    Σ_a ∂L/∂z[i + lo − a·d]·w[a] = Σ_a' ∂L/∂z[i + lo − 2d + a'·d]·w[2 − a'], so ∂L/∂Z is
    padded by (2d − lo, 2d − hi) (a crop where negative), which also zero-fills what the
    forward cropped.
    """
    acc = _accumulation_dtype(g.dtype)
    pads = tuple((2 * d - lo, 2 * d - hi) for (lo, hi), d in zip(geom.padding, geom.dilation))
    pads = _tile_aligned(pads, geom.in_hw, geom.dilation)
    g_phases = _split_phases(_pad_spatial(g.astype(acc), pads), geom.dilation)
    w_rotated = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(acc)
    dx = _merge_phases(wg.correlate(g_phases, w_rotated, acc), geom.dilation)
    h, w_ = geom.in_hw
    return dx[:, :h, :w_]


def _grad_kernel_winograd(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 8 by the F(2×2, 3×3) tiles of each phase (eq. 37), summed over the (N, H, W, C)
    images of `x` and `g`."""
    acc = _accumulation_dtype(x.dtype)
    x_pad = _pad_spatial(x.astype(acc), _tile_aligned(geom.padding, geom.out_hw, geom.dilation))
    g_pad = _pad_spatial(g.astype(acc), _tile_aligned(((0, 0), (0, 0)), geom.out_hw, geom.dilation))
    return wg.kernel_grad(
        _split_phases(x_pad, geom.dilation), _split_phases(g_pad, geom.dilation), acc
    )


# --- Shallow and depthwise forms: in the caller's layout, no transposes. ----------------------


def _forward_fused(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 6 as one fused sum of kh·kw·C/G products, each a window channel times a kernel row.

    z[n, :, :, g·Og + o] = Σ_{a, b, i} window_ab[n, :, :, g·Cg + i]·w[a, b, i, g·Og + o]:
    input channel g·Cg + i is repeated over its group's Og outputs and scaled by w[a, b, i].
    """
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    acc = _accumulation_dtype(x.dtype)
    c_per_group, out_per_group = w.shape[2], geom.out_channels // geom.groups
    x_pad = _pad_spatial(x, geom.padding, layout)
    return sum(
        jnp.repeat(lax.slice_in_dim(window, i, None, c_per_group, axis), out_per_group, axis)
        * lay.along_channels(w[a, b, i].astype(acc), layout)
        for a, b in _taps(geom)
        for window in [_tap_window(x_pad, a, b, geom, layout).astype(acc)]
        for i in range(c_per_group)
    )


def _grad_input_depthwise(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The input-gradient equation for C/G = 1: each tap's share is ∂L/∂Z·w[a, b] per channel,
    summed over the group's Og outputs."""
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    g = g.astype(_accumulation_dtype(g.dtype))

    def received(a, b):
        share = g * lay.along_channels(w[a, b, 0].astype(g.dtype), layout)
        if geom.out_channels > geom.groups:  # a channel multiplier
            share = jnp.sum(_split_channels(share, geom.groups, layout), axis=axis + 1)
        return share

    return _place_taps((((a, b), received(a, b)) for a, b in _taps(geom)), geom, layout)


def _sum_over_positions(p: jax.Array, layout: Layout) -> jax.Array:
    """Σ_{n, r, c} p[n, r, c, :] of (N, H, W, C), or of (N, C, H, W) for "NCHW": (C,).

    As a product with a ones vector, a vectorised and threaded GEMV: with XLA's YNNPACK
    fusions off, its reduce over the positions is one serial sum per channel (F's ∂L/∂W:
    47 -> 23 ms NHWC, 42 -> 19 ms NCHW; as installed, equal within noise; this machine).
    """
    highest = lax.Precision.HIGHEST  # a sum: no reduced-precision passes on accelerators
    if layout == "NHWC":
        c = p.shape[3]
        return jnp.dot(jnp.ones((p.size // c,), p.dtype), p.reshape(-1, c), precision=highest)
    n, c, h, w = p.shape
    per_image = jnp.dot(p.reshape(n * c, h * w), jnp.ones((h * w,), p.dtype), precision=highest)
    return per_image.reshape(n, c).sum(axis=0)


def _grad_kernel_depthwise(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 8 for C/G = 1: per output channel, the sum over positions of window·∂L/∂Z, one
    product and sum per tap."""
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    acc = _accumulation_dtype(x.dtype)
    x_pad = _pad_spatial(x.astype(acc), geom.padding, layout)
    repeats = geom.out_channels // geom.groups
    dw = [
        _sum_over_positions(
            jnp.repeat(_tap_window(x_pad, a, b, geom, layout), repeats, axis) * g.astype(acc),
            layout,
        )
        for a, b in _taps(geom)
    ]
    return jnp.stack(dw).reshape(*geom.kernel_hw, 1, geom.out_channels)


def _grad_input_shallow(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The input-gradient equation as one contraction over each group's Og channels:

    received[a, b][n, r, c, g·Cg + i] = Σ_o ∂L/∂z[n, r, c, g·Og + o]·w[a, b, i, g·Og + o],
    for all taps at once (kh·kw·C/G rows), then put back by `_place_taps`.
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
                preferred_element_type=_accumulation_dtype(g.dtype),
            ).reshape(kh * kw, c_per_group, g.shape[0], *geom.out_hw)
            for k in range(geom.groups)
        ],
        axis=1,
    )  # (kh·kw, C, N, Ho, Wo)
    order = (1, 0, 2, 3) if layout == "NCHW" else (1, 2, 3, 0)
    return _place_taps(
        (((a, b), received[a * kw + b].transpose(order)) for a, b in _taps(geom)), geom, layout
    )


def _grad_kernel_shallow(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 8 as one contraction over the positions (N, Ho, Wo) of all taps' windows at once,
    per group."""
    layout, axis = geom.layout, lay.channel_axis(geom.layout)
    c_per_group, out_per_group = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    x_pad = _pad_spatial(x, geom.padding, layout)
    windows = jnp.stack([_tap_window(x_pad, a, b, geom, layout) for a, b in _taps(geom)])
    positions = lay.position_axes(layout)
    dw = jnp.concatenate(
        [
            lax.dot_general(
                lax.slice_in_dim(windows, k * c_per_group, (k + 1) * c_per_group, axis=axis + 1),
                lax.slice_in_dim(g, k * out_per_group, (k + 1) * out_per_group, axis=axis),
                ((tuple(d + 1 for d in positions), positions), ((), ())),
                preferred_element_type=_accumulation_dtype(x.dtype),
            )  # (kh·kw, Cg, Og)
            for k in range(geom.groups)
        ],
        axis=2,
    )
    return dw.reshape(*geom.kernel_hw, c_per_group, geom.out_channels)


# --- Evaluation a few images at a time. ----------------------------------------------------
# The GEMM forms build kw windows per kernel row; over a whole batch they reach tens of MB,
# fall out of cache and come back as fresh pages on every call. A chunk of images with about
# this many output positions keeps them in cache: 1.5–5× faster per pass (B–E, this machine).
_CHUNK_POSITIONS = 6144
# A Winograd chunk has a fixed cost (its transforms and 16 GEMMs) that thin kernels
# amortise only over more positions: at least this many output values (positions · O).
# E (O = 32): 16 images a chunk instead of 4, forward 6.5 -> 4.7 ms (this machine).
_WINOGRAD_CHUNK_VALUES = 2**19


def _images_per_chunk(n: int, geom: ConvGeometry, winograd: bool | None = None) -> int:
    """Images per chunk: the count nearest `_CHUNK_POSITIONS` output positions (for the
    Winograd forms, at least `_WINOGRAD_CHUNK_VALUES` / O), at least one.

    A divisor of n when there is one at least half that size, so no remainder is left.
    `winograd`: whether the form is a Winograd one; by default, whether `geom` takes them.
    """
    positions = _CHUNK_POSITIONS
    if winograd is None:
        winograd = _is_winograd(geom)
    if winograd:
        positions = max(positions, _WINOGRAD_CHUNK_VALUES // geom.out_channels)
    target = max(1, min(n, round(positions / max(1, geom.out_hw[0] * geom.out_hw[1]))))
    for size in range(target, (target - 1) // 2, -1):
        if n % size == 0:
            return size
    return target


def _split_images(arrays: tuple[jax.Array, ...], size: int):
    """(the arrays' first n // size·size images as (n // size, size, ...), the rest or None)."""
    n = arrays[0].shape[0]
    whole = n // size * size
    stacked = tuple(a[:whole].reshape(n // size, size, *a.shape[1:]) for a in arrays)
    rest = tuple(a[whole:] for a in arrays) if whole < n else None
    return stacked, rest


def _map_chunks_as_state(fn, stacked: tuple[jax.Array, ...]) -> jax.Array:
    """`lax.map(lambda chunk: fn(*chunk), stacked)`, with each chunk handed to fn as loop
    state: the loop body slices the next chunk once, into the state."""
    count = stacked[0].shape[0]

    def step(chunk, i):
        following = jnp.minimum(i + 1, count - 1)
        upcoming = tuple(lax.dynamic_index_in_dim(a, following, keepdims=False) for a in stacked)
        return upcoming, fn(*chunk)

    _, out = lax.scan(step, tuple(a[0] for a in stacked), jnp.arange(count))
    return out


def _map_over_images(
    fn, arrays: tuple[jax.Array, ...], size: int, chunk_as_state: bool = False
) -> jax.Array:
    """fn(*arrays), where image i of the result depends on image i of each array only,
    evaluated `size` images at a time.

    With `chunk_as_state`, each chunk reaches fn as a buffer of its own (loop state) rather
    than as a slice of the stacked arrays, which XLA fuses into every consumer: for fn that
    reads its chunk many times in place (Winograd with nothing to pad, 16 transforms), B's
    forward 29.7 -> 21.5 ms; where fn pads first, the pad is that buffer already, and the
    state costs more than it saves (E's forward 6.8 -> 8.4 ms; this machine).
    """
    if size >= arrays[0].shape[0]:
        return fn(*arrays)
    stacked, rest = _split_images(arrays, size)
    if chunk_as_state:
        out = _map_chunks_as_state(fn, stacked)
    else:
        out = lax.map(lambda chunk: fn(*chunk), stacked)
    out = out.reshape(-1, *out.shape[2:])
    return out if rest is None else jnp.concatenate([out, fn(*rest)])


def _sum_over_images(fn, arrays: tuple[jax.Array, ...], size: int) -> jax.Array:
    """fn(*arrays), where fn is a sum of per-image terms, accumulated `size` images at a time."""
    if size >= arrays[0].shape[0]:
        return fn(*arrays)
    stacked, rest = _split_images(arrays, size)
    term = jax.eval_shape(fn, *(a[0] for a in stacked))
    total, _ = lax.scan(
        lambda acc, chunk: (acc + fn(*chunk), None), jnp.zeros(term.shape, term.dtype), stacked
    )
    return total if rest is None else total + fn(*rest)


def _map_channels_last(
    fn,
    a: jax.Array,
    geom: ConvGeometry,
    chunk_as_state: bool = False,
    transpose_by_chunk: bool = False,
) -> jax.Array:
    """fn, a GEMM form taking (N, H, W, C) images, on `a` of `geom.layout`, a chunk of images
    at a time (`_map_over_images`); the result comes back in `geom.layout`.

    An NCHW `a` is made channels-last in one pass, or with `transpose_by_chunk` one chunk at
    a time inside the loop: no batch-sized copy, but nothing another rule can share.
    """
    if transpose_by_chunk:

        def on_chunk(chunk: jax.Array) -> jax.Array:
            return fn(lay.to_channels_last(chunk, geom.layout))

    else:
        a, on_chunk = lay.to_channels_last(a, geom.layout), fn
    out = _map_over_images(on_chunk, (a,), _images_per_chunk(a.shape[0], geom), chunk_as_state)
    return lay.from_channels_last(out, geom.layout)


# --- The rules. ----------------------------------------------------------------------------


def forward_rule(
    x: jax.Array, w: jax.Array, geom: ConvGeometry, *, backward_follows: bool = False
) -> jax.Array:
    """Z = pad(X) ⋆ W (eq. 6).

    z[n, r, c, g·Og + o] = Σ_{a, b} Σ_i x_pad[n, r·sh + a·dh, c·sw + b·dw, g·Cg + i]
                                        · w[a, b, i, g·Og + o]

    Shallow and depthwise contractions as one fused sum in the caller's layout
    (`_forward_fused`); deep ones channels-last, a chunk of images at a time (each image's Z
    depends on that image alone): by F(2×2, 3×3) for ungrouped 3×3 kernels at stride 1
    (eq. 35; dilated ones by phases, eq. 37), otherwise as one GEMM per kernel row.

    Args:
      x: (N, C, H, W) or (N, H, W, C), as `geom.layout`.
      w: (kh, kw, C//G, O).
      geom: the geometry.
      backward_follows: ∂L/∂W will read X channels-last too, so an NCHW X is transposed
        whole, once for both (XLA shares it); otherwise a chunk at a time, which measured
        0.68–0.75× the forward's time on C and D NCHW (this machine).

    Returns:
      (N, O, Ho, Wo) or (N, Ho, Wo, O), in the accumulation dtype (f32 for half precision).
    """
    if _is_shallow(geom):
        return _forward_fused(x, w, geom)
    if _is_winograd(geom):
        pads = _tile_aligned(geom.padding, geom.out_hw, geom.dilation)
        in_place = geom.dilation == (1, 1) and pads == ((0, 0), (0, 0))
        form = functools.partial(_forward_winograd, w=w, geom=geom)
    else:
        form, in_place = functools.partial(_forward_rows, w=w, geom=geom), False
    return _map_channels_last(
        form, x, geom, chunk_as_state=in_place, transpose_by_chunk=not backward_follows
    )


def grad_input_rule(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂X = full correlation of ∂L/∂Z with the rotated kernel (input-gradient equation).

    From ∂z[r, c]/∂x[i, j] = w[i − r, j − c]: ∂L/∂x[i, j] = Σ_{a, b} ∂L/∂z[i − a, j − b]·w[a, b],
    i.e. ∂L/∂X = pad_full(∂L/∂Z) ⋆ rot180(W), with terms outside Z zero. Generalised to
    stride s, dilation d, padding lo and groups, in padded-input coordinates:

        ∂L/∂x_pad[n, i, j, g·Cg + c] = Σ_{a, b, o} ∂L/∂z[n, (i − a·dh)/sh, (j − b·dw)/sw, g·Og + o]
                                                  · w[a, b, c, g·Og + o]

    where only integer quotients inside Z contribute; then ∂L/∂X is ∂L/∂X_pad with the
    forward padding cropped off (a forward crop, negative padding, becomes zero rows).
    Evaluated tap by tap: tap (a, b)'s term ∂L/∂Z·w[a, b]ᵀ goes back where the forward's
    strided slice read it (`_place_taps`). Summed over the taps, in one fused pass, this is
    the full correlation above without multiplying the zeros. The terms are GEMMs per
    kernel row (deep, channels-last, by chunks of images), one contraction for all taps
    (shallow) or products per channel (depthwise). For an ungrouped 3×3 kernel at stride 1,
    the full correlation itself, by F(2×2, 3×3) (eq. 25 with s = 1, dilated by phases,
    eq. 37; `_grad_input_winograd`).

    Args:
      g: ∂L/∂Z, (N, O, Ho, Wo) or (N, Ho, Wo, O), as `geom.layout`.
      w: (kh, kw, C//G, O).
      geom: the forward's geometry.

    Returns:
      ∂L/∂X, (N, C, H, W) or (N, H, W, C), in the accumulation dtype.
    """
    if _is_depthwise(geom):
        return _grad_input_depthwise(g, w, geom)
    if _is_shallow(geom):
        return _grad_input_shallow(g, w, geom)
    form = _grad_input_winograd if _is_winograd(geom) else _grad_input_rows
    return _map_channels_last(functools.partial(form, w=w, geom=geom), g, geom)


def grad_kernel_rule(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂W = X ⋆ ∂L/∂Z (eqs. 8 and 11, sums over the output positions).

    ∂L/∂w[a, b, i, g·Og + o] = Σ_{n, r, c} ∂L/∂z[n, r, c, g·Og + o]
                                          · x_pad[n, r·sh + a·dh, c·sw + b·dw, g·Cg + i]:
    the forward's stride becomes the step of the correlation and its dilation the spacing
    of the kernel taps. r and c run over the output rows and columns (Ho, Wo), not over the
    kernel's k1, k2 as eqs. 7–8 of the seed misprint. Contractions over the same strided
    windows the forward reads: all taps at once, or per kernel row when that is over 576
    deep (deep, channels-last, summed over chunks of images), all taps at once (shallow),
    or a product per tap summed over the positions (depthwise, by chunks of images). For a
    deep, ungrouped 3×3 kernel at stride 1 whose chunks make large enough GEMMs
    (`_is_winograd_kernel_grad`), by the F(2×2, 3×3) tiles instead of the windows (eq. 36;
    dilated by phases, eq. 37), by chunks of images.

    Args:
      x: (N, C, H, W) or (N, H, W, C), as `geom.layout`.
      g: ∂L/∂Z, (N, O, Ho, Wo) or (N, Ho, Wo, O).
      geom: the forward's geometry.

    Returns:
      ∂L/∂W, (kh, kw, C//G, O), in the accumulation dtype.
    """
    chunk = _images_per_chunk(x.shape[0], geom)
    if _is_depthwise(geom):
        return _sum_over_images(functools.partial(_grad_kernel_depthwise, geom=geom), (x, g), chunk)
    if _is_shallow(geom):
        return _grad_kernel_shallow(x, g, geom)
    x, g = lay.to_channels_last(x, geom.layout), lay.to_channels_last(g, geom.layout)
    if _is_winograd_kernel_grad(geom, chunk):
        form = _grad_kernel_winograd
    else:
        form, chunk = _grad_kernel_gemm, _images_per_chunk(x.shape[0], geom, winograd=False)
    return _sum_over_images(functools.partial(form, geom=geom), (x, g), chunk)


def grad_bias_rule(g: jax.Array, layout: Layout) -> jax.Array:
    """∂L/∂b[o] = Σ_{n, r, c} ∂L/∂z[n, r, c, o]: each bias feeds every output position.

    Args:
      g: ∂L/∂Z, (N, O, Ho, Wo) or (N, Ho, Wo, O), as `layout`.

    Returns:
      (O,), in the accumulation dtype.
    """
    return jnp.sum(g, axis=lay.position_axes(layout), dtype=_accumulation_dtype(g.dtype))


# --- The custom_vjp, in the caller's layout. ---------------------------------------------


def _forward(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    geom: ConvGeometry,
    backward_follows: bool = False,
) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    x, w = lay.to_batched(x, layout, rank), lay.kernel_to_hwio(w, layout, rank)
    z = forward_rule(x, w, geom, backward_follows=backward_follows)
    if b is not None:
        z = z + lay.along_channels(b.astype(z.dtype), layout)
    return lay.from_batched(z.astype(x.dtype), layout, rank)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None, geom: ConvGeometry) -> jax.Array:
    return _forward(x, w, b, geom)


def _conv2d_fwd(x, w, b, geom):
    # Save the operands, not the im2col patches: the backward re-slices X, which costs less
    # memory than kh·kw copies of it.
    return _forward(x, w, b, geom, backward_follows=True), (x, w, b)


def _conv2d_bwd(geom, residuals, g):
    x, w, b = residuals
    rank, layout = geom.input_rank, geom.layout
    g = lay.to_batched(g, layout, rank)
    w_hwio = lay.kernel_to_hwio(w, layout, rank)
    dx = grad_input_rule(g, w_hwio, geom)
    dw = grad_kernel_rule(lay.to_batched(x, layout, rank), g, geom)
    db = None if b is None else grad_bias_rule(g, layout).astype(b.dtype)
    return (
        lay.from_batched(dx.astype(x.dtype), layout, rank),
        lay.hwio_to_kernel(dw.astype(w.dtype), layout, rank),
        db,
    )


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)

# Compiled once per (shapes, dtypes, geometry); inlined when the caller is already under jit.
_conv2d_jit = jax.jit(_conv2d, static_argnums=(3,))


@functools.partial(jax.jit, static_argnums=(2,))
def _grad_input(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    dx = grad_input_rule(lay.to_batched(g, layout, rank), lay.kernel_to_hwio(w, layout, rank), geom)
    return lay.from_batched(dx.astype(g.dtype), layout, rank)


@functools.partial(jax.jit, static_argnums=(2,))
def _grad_kernel(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    rank, layout = geom.input_rank, geom.layout
    dw = grad_kernel_rule(lay.to_batched(x, layout, rank), lay.to_batched(g, layout, rank), geom)
    return lay.hwio_to_kernel(dw.astype(x.dtype), layout, rank)


# --- Public API. -----------------------------------------------------------------------------


def _check_operands(op: str, a_name: str, a: jax.Array, b_name: str, b: jax.Array) -> None:
    geo.check_floating(op, a_name, a.dtype)
    geo.check_floating(op, b_name, b.dtype)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: `{a_name}` and `{b_name}` must have the same dtype, "
            f"got {a.dtype} and {b.dtype}."
        )


def resolve_call(
    op: str,
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    *,
    stride: IntOrPair,
    padding: PaddingLike,
    dilation: IntOrPair,
    groups: int,
    layout: Layout,
) -> ConvGeometry:
    """Validates the operands and configuration of a forward call; returns its geometry."""
    geo.check_layout(op, layout)
    _check_operands(op, "x", x, "w", w)
    geom = geo.conv_geometry(
        op,
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    geo.check_bias(op, b, geom)
    return geom


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
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    geom = resolve_call(
        "conv2d",
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    pm.check_padding_mode("conv2d", padding_mode, geom)
    if padding_mode != "zeros":
        x = pm.pad_input(x, geom, padding_mode)
        geom = resolve_call(
            "conv2d",
            x,
            w,
            b,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            layout=layout,
        )
    return _conv2d_jit(x, w, b, geom)


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
) -> jax.Array:
    """∂L/∂X of `conv2d`: full correlation of ∂L/∂Z with the rotated kernel.

    Args:
      g: ∂L/∂Z, shaped like `conv2d`'s output for an input of shape `x_shape`.
      w: the kernel, as for `conv2d`.
      x_shape: shape of the forward input X.
      stride, padding, dilation, groups, layout: the forward's configuration.

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
    g, w = jnp.asarray(g), jnp.asarray(w)
    op = "conv2d_grad_input"
    geo.check_layout(op, layout)
    _check_operands(op, "g", g, "w", w)
    geom = geo.conv_geometry(
        op,
        tuple(x_shape),
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        x_name="x_shape",
    )
    geo.check_cotangent(op, g.shape, geom)
    return _grad_input(g, w, geom)


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
) -> jax.Array:
    """∂L/∂W of `conv2d`: X ⋆ ∂L/∂Z (eq. 11), summed over the output positions (eq. 8).

    Args:
      x: the forward input X.
      g: ∂L/∂Z, shaped like `conv2d`'s output.
      w_shape: shape of the kernel W.
      stride, padding, dilation, groups, layout: the forward's configuration.

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
    x, g = jnp.asarray(x), jnp.asarray(g)
    op = "conv2d_grad_kernel"
    geo.check_layout(op, layout)
    _check_operands(op, "x", x, "g", g)
    geom = geo.conv_geometry(
        op,
        x.shape,
        tuple(w_shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    geo.check_cotangent(op, g.shape, geom)
    return _grad_kernel(x, g, geom)


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
    g = jnp.asarray(g)
    op = "conv2d_grad_bias"
    geo.check_layout(op, layout)
    geo.check_floating(op, "g", g.dtype)
    if g.ndim not in (2, 3, 4):
        raise ValueError(f"{op}: `g` must be 2-D, 3-D or 4-D, got shape {tuple(g.shape)}.")
    return grad_bias_rule(lay.to_batched(g, layout, g.ndim), layout).astype(g.dtype)
