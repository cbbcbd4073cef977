"""GEMM forms: the rules as matrix products over a minor channel axis, channels-last.

The forward and ∂L/∂X put the windows of one kernel row side by side, one contraction of
depth kw·C/G per row (a better-shaped GEMM than kw of depth C/G); ∂L/∂W contracts the windows
of all taps at once (`grad_kernel_taps`) or of one kernel row at a time (`grad_kernel_rows`).
Same sums as `rules.py`, in another order (docs/derivation.md §10).

A kernel row, for n spatial axes, is the taps that share their first n − f indices: the last
f axes are folded into one contraction (`Plan.fold_axes`; f = 1 is a row of kw taps in 2-D,
and in 1-D all the taps). Arrays: (N, *spatial, C) batches, (*k, C/G, O) kernels.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import rules
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
    """The windows of one kernel row's taps, positions flattened: arrays (N·∏out, C).

    Args:
      x_pad: (N, *padded, C), the input after `geom.padding`.
      row_taps: the row's taps (`kernel_rows`).
    """
    c = x_pad.shape[-1]
    return [rules.window(x_pad, tap, geom).reshape(-1, c) for tap in row_taps]


def row_forward(windows: list[jax.Array], w_row: jax.Array, groups: int, acc) -> jax.Array:
    """One kernel row's term of eq. 29: Σ_{b, i} windows[b][m, g·Cg + i]·w_row[b, i, g·Og + o].

    Args:
      windows: one array (M, C) per tap b of the row, from `row_windows`.
      w_row: (taps, C//G, O), the row's kernel (`_row_kernel`).
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


def windows_kernel_grad(windows: list[jax.Array], g: jax.Array, groups: int, acc) -> jax.Array:
    """The taps' ∂L/∂W (eq. 30) from their windows: Σ_m windows[t][m, g·Cg + i]·g[m, g·Og + o].

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


def forward_rows(x: jax.Array, w: jax.Array, geom: ConvGeometry, fold: int = 1) -> jax.Array:
    """Eq. 29 as one GEMM per kernel row (`row_forward`), summed over the rows.

    Args:
      x: (N, *in, C).
      w: (*k, C//G, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).

    Returns:
      (N, *out, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    z = rules.total(
        row_forward(row_windows(x_pad, row_taps, geom), _row_kernel(w, row), geom.groups, acc)
        for row, row_taps in kernel_rows(geom, fold)
    )
    return z.reshape(x.shape[0], *geom.out_size, geom.out_channels)


def grad_input_rows(g: jax.Array, w: jax.Array, geom: ConvGeometry, fold: int = 1) -> jax.Array:
    """Eq. 31 with one GEMM per kernel row (`row_backward`), each tap's share put back by
    the adjoint of its window (`rules.windows_adjoint`).

    Args:
      g: ∂L/∂Z, (N, *out, O).
      w: (*k, C//G, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).

    Returns:
      (N, *in, C) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(g.dtype)
    g_rows = g.reshape(-1, geom.out_channels)
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


def grad_kernel_rows(x: jax.Array, g: jax.Array, geom: ConvGeometry, fold: int = 1) -> jax.Array:
    """Eq. 30 as one GEMM per kernel row: a row's windows side by side.

    Args:
      x: (N, *in, C).
      g: ∂L/∂Z, (N, *out, O).
      fold: the kernel axes one GEMM folds (`kernel_rows`).

    Returns:
      (*k, C//G, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    g_rows = g.reshape(-1, geom.out_channels)
    rows = [
        windows_kernel_grad(row_windows(x_pad, row_taps, geom), g_rows, geom.groups, acc)
        for _, row_taps in kernel_rows(geom, fold)
    ]
    dw = jnp.stack(rows)  # (rows, taps per row, C//G, O)
    shape = (*geom.kernel_size, *dw.shape[2:])
    return dw if dw.shape == shape else dw.reshape(shape)
