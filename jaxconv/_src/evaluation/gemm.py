"""GEMM forms: the rules as matrix products over a minor channel axis, channels-last.

The forward and ∂L/∂X put the windows of one kernel row side by side, one contraction of
depth kw·C/G per row (a better-shaped GEMM than kw of depth C/G); ∂L/∂W contracts the windows
of all taps at once (`grad_kernel_taps`) or of one kernel row at a time (`grad_kernel_rows`).
Same sums as `rules.py`, in another order (docs/derivation.md §10).

A kernel row, for n spatial axes, is the taps that share their first n − f indices: the last
f axes are folded into one contraction (`Plan.fold_axes`; f = 1 is a row of kw taps in 2-D,
and in 1-D all the taps). With `loop`, the rows run as a `lax.fori_loop` whose body, one
row's GEMM, XLA compiles once however many rows there are (a 3-D kernel has k² of them);
the row's leading offsets are then dynamic slices. Arrays: (N, *spatial, C) batches,
(*k, C/G, O) kernels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import rules
from jaxconv._src.evaluation.buffers import zeros_after
from jaxconv._src.geometry import ConvGeometry
from jaxconv._src.rules import Tap


def kernel_rows(geom: ConvGeometry, fold: int) -> list[tuple[Tap, list[Tap]]]:
    """The kernel's rows, each as (its leading index, its taps in row-major order), when the
    last `fold` axes (at most all of them) are folded into one contraction."""
    lead = max(0, geom.spatial_rank - fold)
    leading, trailing = geom.kernel_size[:lead], geom.kernel_size[lead:]
    return [
        (row, [row + t for t in itertools.product(*map(range, trailing))])
        for row in itertools.product(*map(range, leading))
    ]


def _row_kernel(w: jax.Array, row: Tap) -> jax.Array:
    """The kernel's taps of one row as (taps, C/G, O)."""
    w_row = w[row]
    return w_row if w_row.ndim == 3 else w_row.reshape(-1, *w_row.shape[-2:])


def row_windows(x_pad: jax.Array, row_taps: list[Tap], geom: ConvGeometry) -> list[jax.Array]:
    """The windows of one kernel row's taps: arrays (N, *out, C).

    Args:
      x_pad: (N, *padded, C), the input after `geom.padding`.
      row_taps: the row's taps (`kernel_rows`).
    """
    return [rules.window(x_pad, tap, geom) for tap in row_taps]


def _side_by_side(windows: list[jax.Array], by_pads: bool) -> jax.Array:
    """Windows (N, *out, C) side by side, positions flattened: (N·∏out, taps·C).

    `by_pads` (`Plan.rows_by_pads`) joins them as a sum of zero-padded windows, which XLA
    makes in one pass from the input where a concatenation first copies out each window;
    each joined value then tests every window's bounds, so it pays for a kernel row's few
    taps, not for all of a kernel's.
    """
    c, taps = windows[0].shape[-1], len(windows)
    if not by_pads or taps == 1:
        return jnp.concatenate(windows, axis=-1).reshape(-1, taps * c)
    keep = [(0, 0, 0)] * (windows[0].ndim - 1)
    joined = rules.total(
        lax.pad(v, jnp.zeros((), v.dtype), [*keep, (b * c, (taps - 1 - b) * c, 0)])
        for b, v in enumerate(windows)
    )
    return joined.reshape(-1, taps * c)


def row_forward(
    windows: list[jax.Array], w_row: jax.Array, groups: int, acc, by_pads: bool = False
) -> jax.Array:
    """One kernel row's term of eq. 29: Σ_{b, i} windows[b][m, g·Cg + i]·w_row[b, i, g·Og + o].

    Args:
      windows: one array (N, *out, C) per tap b of the row, from `row_windows`; m indexes
        the flattened (N, *out).
      w_row: (taps, C//G, O), the row's kernel (`_row_kernel`).
      groups: G.
      acc: accumulation dtype.
      by_pads: how the windows are joined (`_side_by_side`).

    Returns:
      (M, O) in `acc`.
    """
    kw, c_per_group, o = w_row.shape
    side_by_side = _side_by_side(windows, by_pads)
    m, c = side_by_side.shape[0], windows[0].shape[-1]
    if groups == 1:
        return jnp.dot(side_by_side, w_row.reshape(kw * c, o), preferred_element_type=acc)
    out = lax.dot_general(
        side_by_side.reshape(m, kw, groups, c_per_group),
        w_row.reshape(kw, c_per_group, groups, o // groups),
        (((1, 3), (0, 1)), ((2,), (2,))),
        preferred_element_type=acc,
    )  # (G, M, Og)
    return out.transpose(1, 0, 2).reshape(m, o)


def row_backward(g: jax.Array, w_row: jax.Array, groups: int, acc) -> list[jax.Array]:
    """One kernel row's terms of eq. 31, before they go back where their windows were.

    received[b][m, g·Cg + i] = Σ_o g[m, g·Og + o]·w_row[b, i, g·Og + o].

    Args:
      g: (M, O), ∂L/∂Z with its positions flattened.
      w_row: (taps, C//G, O).

    Returns:
      one array (M, C) per tap of the row, in `acc`.
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


def windows_kernel_grad(
    windows: list[jax.Array], g: jax.Array, groups: int, acc, by_pads: bool = False
) -> jax.Array:
    """The taps' ∂L/∂W (eq. 30) from their windows: Σ_m windows[t][m, g·Cg + i]·g[m, g·Og + o].

    The windows side by side make one contraction with len(windows)·C/G output rows.

    Args:
      windows: arrays (N, *out, C), the taps' windows of the padded input.
      g: (M, O), ∂L/∂Z with its positions flattened.
      by_pads: how the windows are joined (`_side_by_side`).

    Returns:
      (len(windows), C//G, O) in `acc`.
    """
    taps, c, (m, o) = len(windows), windows[0].shape[-1], g.shape
    side_by_side = _side_by_side(windows, by_pads)
    if groups == 1:
        dw = lax.dot_general(side_by_side, g, (((0,), (0,)), ((), ())), preferred_element_type=acc)
        return dw.reshape(taps, c, o)
    dw = lax.dot_general(
        side_by_side.reshape(m, taps, groups, c // groups),
        g.reshape(m, groups, o // groups),
        (((0,), (0,)), ((2,), (1,))),
        preferred_element_type=acc,
    )  # (G, taps, Cg, Og)
    return dw.transpose(1, 2, 0, 3).reshape(taps, c // groups, o)


# --- Kernel rows in a loop: one row per iteration, the row index traced. --------------------


def _row_index(r: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
    """The leading multi-index of row r of a kernel whose leading axes have `sizes`,
    row-major (as `kernel_rows` orders them)."""
    index = []
    for k in reversed(sizes):
        index.append(r % k)
        r = r // k
    return index[::-1]


def row_slab(
    x_pad: jax.Array, index: Sequence[Any], geom: ConvGeometry, axes: Sequence[int] | None = None
) -> jax.Array:
    """What one row's windows read: x_pad[n, index·d + p·s, ...] on the row's leading axes
    (p < out), every entry of the others; (N, *out[:lead], *padded[lead:], C).

    `index` may be traced (a loop's row). The spatial axes are `axes`, a channels-last
    batch's by default; an index of every axis gives its tap's window.
    """
    axes = range(1, x_pad.ndim - 1) if axes is None else axes
    starts: list[Any] = [0] * x_pad.ndim
    sizes, strides = list(x_pad.shape), [1] * x_pad.ndim
    for j, (i, axis) in enumerate(zip(index, axes)):
        starts[axis] = i * geom.dilation[j]
        sizes[axis], strides[axis] = geom.window_extent[j], geom.stride[j]
    slab = lax.dynamic_slice(x_pad, starts, sizes)
    return lax.slice(slab, [0] * slab.ndim, slab.shape, strides)


def _trailing_config(tap: Tap, geom: ConvGeometry, lead: int):
    """(axis, start t·d, extent, stride, padded size) of each trailing axis of a tap."""
    return [
        (1 + j, k * geom.dilation[j], geom.window_extent[j], geom.stride[j], geom.padded_size[j])
        for j, k in zip(range(lead, geom.spatial_rank), tap)
    ]


def _trailing_window(slab: jax.Array, tap: Tap, geom: ConvGeometry, lead: int) -> jax.Array:
    """The window of a tap's trailing indices in a row's slab: (N, *out, C)."""
    start, limit, strides = [0] * slab.ndim, list(slab.shape), [1] * slab.ndim
    for axis, begin, extent, stride, _ in _trailing_config(tap, geom, lead):
        start[axis], limit[axis], strides[axis] = begin, begin + extent, stride
    return lax.slice(slab, start, limit, strides)


def _trailing_adjoint(share: jax.Array, tap: Tap, geom: ConvGeometry, lead: int) -> jax.Array:
    """The adjoint of `_trailing_window` (eq. 20 on the trailing axes): a share (N, *out, C)
    placed in a row's slab, s − 1 zeros between its entries."""
    config = [(0, 0, 0)] * share.ndim
    for axis, begin, extent, stride, padded in _trailing_config(tap, geom, lead):
        config[axis] = (begin, padded - begin - extent, stride - 1)
    return lax.pad(share, jnp.zeros((), share.dtype), config)


def _looped_rows(geom: ConvGeometry, fold: int) -> tuple[int, list[Tap], int]:
    """(the number of rows, the trailing indices of a row's taps, the leading axes' count)."""
    rows = kernel_rows(geom, fold)
    lead = max(0, geom.spatial_rank - fold)
    return len(rows), [tap[lead:] for tap in rows[0][1]], lead


def _slab_windows(x_pad, r, geom, lead, trailing) -> list[jax.Array]:
    """The windows (N, *out, C) of row r's taps, from its slab."""
    slab = row_slab(x_pad, _row_index(r, geom.kernel_size[:lead]), geom)
    return [_trailing_window(slab, t, geom, lead) for t in trailing]


def _forward_loop(x_pad, w, geom, fold, acc, x, by_pads) -> jax.Array:
    """Σ over the rows of `row_forward`, a row an iteration: (N·∏out, O). Its zeros come
    from the unpadded x (a padded one's first elements are constants)."""
    rows, trailing, lead = _looped_rows(geom, fold)
    w_rows = w.reshape(rows, len(trailing), *w.shape[-2:])

    def add_row(r, z):
        windows = _slab_windows(x_pad, r, geom, lead, trailing)
        return z + row_forward(windows, w_rows[r], geom.groups, acc, by_pads)

    n = x_pad.shape[0]
    start = zeros_after(x, (n, math.prod(geom.out_size), geom.out_channels), acc)
    return lax.fori_loop(0, rows, add_row, start.reshape(-1, geom.out_channels))


def _grad_input_loop(g_rows, w, geom, fold, acc, n) -> jax.Array:
    """Σ_t S_tᵀ of `row_backward`'s shares, a row an iteration: ∂L/∂X̄, (N, *padded, C)."""
    rows, trailing, lead = _looped_rows(geom, fold)
    w_rows = w.reshape(rows, len(trailing), *w.shape[-2:])
    c = geom.in_channels
    interior = [(0, 0, 0)] + [(0, 0, s - 1) for s in geom.stride[:lead]]
    interior += [(0, 0, 0)] * (geom.spatial_rank - lead + 1)

    def add_row(r, dx_pad):
        shares = row_backward(g_rows, w_rows[r], geom.groups, acc)
        slab = rules.total(
            _trailing_adjoint(share.reshape(n, *geom.out_size, c), t, geom, lead)
            for t, share in zip(trailing, shares)
        )
        slab = lax.pad(slab, jnp.zeros((), acc), interior)  # the leading axes' S_tᵀ
        index = _row_index(r, geom.kernel_size[:lead])
        starts: list[Any] = [0] * dx_pad.ndim
        for j, i in enumerate(index):
            starts[1 + j] = i * geom.dilation[j]
        return lax.dynamic_update_slice(
            dx_pad, lax.dynamic_slice(dx_pad, starts, slab.shape) + slab, starts
        )

    start = zeros_after(g_rows.reshape(n, -1), (n, *geom.padded_size, c), acc)
    return lax.fori_loop(0, rows, add_row, start)


def _grad_kernel_loop(x_pad, g_rows, geom, fold, acc, w_shape, by_pads) -> jax.Array:
    """Each row's `windows_kernel_grad`, a row an iteration: (rows, taps per row, C/G, O)."""
    rows, trailing, lead = _looped_rows(geom, fold)

    def row_grad(r, dw):
        windows = _slab_windows(x_pad, r, geom, lead, trailing)
        return dw.at[r].set(windows_kernel_grad(windows, g_rows, geom.groups, acc, by_pads))

    start = zeros_after(g_rows, (rows, len(trailing), *w_shape[-2:]), acc, batch_axes=0)
    return lax.fori_loop(0, rows, row_grad, start)


def forward_rows(
    x: jax.Array,
    w: jax.Array,
    geom: ConvGeometry,
    fold: int = 1,
    loop: bool = False,
    by_pads: bool = False,
) -> jax.Array:
    """Eq. 29 as one GEMM per kernel row (`row_forward`), summed over the rows.

    Args:
      x: (N, *in, C).
      w: (*k, C//G, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).
      loop: the rows as a loop (module doc).
      by_pads: a row's windows joined by pads (`_side_by_side`).

    Returns:
      (N, *out, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    if loop and len(kernel_rows(geom, fold)) > 1:
        z = _forward_loop(x_pad, w, geom, fold, acc, x, by_pads)
        return z.reshape(x.shape[0], *geom.out_size, geom.out_channels)
    z = rules.total(
        row_forward(
            row_windows(x_pad, row_taps, geom), _row_kernel(w, row), geom.groups, acc, by_pads
        )
        for row, row_taps in kernel_rows(geom, fold)
    )
    return z.reshape(x.shape[0], *geom.out_size, geom.out_channels)


def accepts_padded_cotangent(geom: ConvGeometry) -> bool:
    """Whether each tap's share of ∂L/∂X is a shifted copy of ∂L/∂Z's shape: stride 1 and an
    undilated input (`grad_input_rows` with `padded`)."""
    ones = (1,) * geom.spatial_rank
    return geom.stride == ones and geom.input_dilation == ones


def _grad_input_padded(g: jax.Array, w: jax.Array, geom: ConvGeometry, fold: int, acc) -> jax.Array:
    """Eq. 31 at stride 1 with the row GEMMs on ∂L/∂Z zero-padded by the full correlation's
    padding: ∂L/∂x[i] = Σ_t s_t[i + ℓ − t·d] with s_t = ∂L/∂Z·w_tᵀ, each s_t[i + ℓ − t·d]
    over all i a static slice of the padded product, summed without a pad per tap.

    The padding, (k − 1)·d − ℓ low and (k − 1)·d − h high (none where negative), is the
    zeros `rules.windows_adjoint` would place around each share. Their products with the
    kernel are the extra rows: (∏(out + pads) / ∏out − 1) more multiply-adds, and an
    infinite weight makes them nan, as in XLA's ∂L/∂X.

    Returns:
      (N, *in, C) in the accumulation dtype.
    """
    extents = [(k - 1) * d for k, d in zip(geom.kernel_size, geom.dilation)]
    pads = tuple((max(0, e - lo), max(0, e - hi)) for e, (lo, hi) in zip(extents, geom.padding))
    g_pad = rules.pad(g, pads)
    n, c = g.shape[0], geom.in_channels
    g_rows = g_pad.reshape(-1, geom.out_channels)
    shares = []
    for row, row_taps in kernel_rows(geom, fold):
        products = row_backward(g_rows, _row_kernel(w, row), geom.groups, acc)
        for tap, share in zip(row_taps, products):
            share = share.reshape(n, *g_pad.shape[1:-1], c)
            starts = [
                lo - t * d + p
                for (lo, _), t, d, (p, _) in zip(geom.padding, tap, geom.dilation, pads)
            ]
            limits = [start + size for start, size in zip(starts, geom.in_size)]
            shares.append(lax.slice(share, (0, *starts, 0), (n, *limits, c)))
    return rules.total(shares)


def grad_input_rows(
    g: jax.Array,
    w: jax.Array,
    geom: ConvGeometry,
    fold: int = 1,
    loop: bool = False,
    padded: bool = False,
) -> jax.Array:
    """Eq. 31 with one GEMM per kernel row (`row_backward`), each tap's share put back by
    the adjoint of its window (`rules.windows_adjoint`).

    Args:
      g: ∂L/∂Z, (N, *out, O).
      w: (*k, C//G, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).
      loop: the rows as a loop (module doc).
      padded: the GEMMs on ∂L/∂Z padded so that each share is a slice
        (`_grad_input_padded`; stride 1 and an undilated input, `accepts_padded_cotangent`).

    Returns:
      (N, *in, C) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(g.dtype)
    if padded:
        return _grad_input_padded(g, w, geom, fold, acc)
    g_rows = g.reshape(-1, geom.out_channels)
    if loop and len(kernel_rows(geom, fold)) > 1:
        dx_pad = _grad_input_loop(g_rows, w, geom, fold, acc, g.shape[0])
        return rules.pad_adjoint(dx_pad, geom.padding, dilation=geom.input_dilation)
    received = (
        (tap, share.reshape(g.shape[0], *geom.out_size, geom.in_channels))
        for row, row_taps in kernel_rows(geom, fold)
        for tap, share in zip(row_taps, row_backward(g_rows, _row_kernel(w, row), geom.groups, acc))
    )
    return rules.windows_adjoint(received, geom)


def grad_kernel_taps(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 as one GEMM over the windows of all taps side by side.

    Args:
      x: (N, *in, C).
      g: ∂L/∂Z, (N, *out, O).

    Returns:
      (*k, C//G, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    g_rows = g.reshape(-1, geom.out_channels)
    windows = [
        window
        for _, row_taps in kernel_rows(geom, 1)
        for window in row_windows(x_pad, row_taps, geom)
    ]
    dw = windows_kernel_grad(windows, g_rows, geom.groups, acc)
    return dw.reshape(*geom.kernel_size, *dw.shape[1:])


def grad_kernel_rows(
    x: jax.Array,
    g: jax.Array,
    geom: ConvGeometry,
    fold: int = 1,
    loop: bool = False,
    by_pads: bool = False,
) -> jax.Array:
    """Eq. 30 as one GEMM per kernel row: a row's windows side by side.

    Args:
      x: (N, *in, C).
      g: ∂L/∂Z, (N, *out, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).
      loop: the rows as a loop (module doc).
      by_pads: a row's windows joined by pads (`_side_by_side`).

    Returns:
      (*k, C//G, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    g_rows = g.reshape(-1, geom.out_channels)
    if loop and len(kernel_rows(geom, fold)) > 1:
        w_shape = (*geom.kernel_size, geom.in_channels // geom.groups, geom.out_channels)
        dw = _grad_kernel_loop(x_pad, g_rows, geom, fold, acc, w_shape, by_pads)
        return dw.reshape(w_shape)
    rows = [
        windows_kernel_grad(row_windows(x_pad, row_taps, geom), g_rows, geom.groups, acc, by_pads)
        for _, row_taps in kernel_rows(geom, fold)
    ]
    dw = jnp.stack(rows)  # (rows, taps per row, C//G, O)
    shape = (*geom.kernel_size, *dw.shape[2:])
    return dw if dw.shape == shape else dw.reshape(shape)
