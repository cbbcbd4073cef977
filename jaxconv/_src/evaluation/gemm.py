"""GEMM forms: the rules as matrix products over a minor channel axis, channels-last.

The forward and ∂L/∂X put the kw windows of one kernel row side by side, one contraction of
depth kw·C/G per row (a better-shaped GEMM than kw of depth C/G); ∂L/∂W contracts the windows
of all kh·kw taps at once (`grad_kernel_taps`) or of one kernel row at a time
(`grad_kernel_rows`). Same sums as `rules.py`, in another order (docs/derivation.md §10).
Arrays: (N, H, W, C) images, (kh, kw, C/G, O) kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import rules
from jaxconv._src.geometry import ConvGeometry


def row_windows(x_pad: jax.Array, row: int, geom: ConvGeometry) -> list[jax.Array]:
    """The windows of one kernel row's taps, positions flattened: kw arrays (N·Ho·Wo, C).

    Args:
      x_pad: (N, Hp, Wp, C), the input after `geom.padding`.
      row: the kernel row a.
    """
    c = x_pad.shape[3]
    return [rules.window(x_pad, (row, b), geom).reshape(-1, c) for b in range(geom.kernel_hw[1])]


def row_forward(windows: list[jax.Array], w_row: jax.Array, groups: int, acc) -> jax.Array:
    """One kernel row's term of eq. 29: Σ_{b, i} windows[b][m, g·Cg + i]·w_row[b, i, g·Og + o].

    Args:
      windows: kw arrays (M, C), from `row_windows`.
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


def row_backward(g: jax.Array, w_row: jax.Array, groups: int, acc) -> list[jax.Array]:
    """One kernel row's terms of eq. 31, before they go back where their windows were.

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


def forward_rows(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 29 as one GEMM per kernel row (`row_forward`), summed over the rows.

    Args:
      x: (N, H, W, C).
      w: (kh, kw, C//G, O).

    Returns:
      (N, Ho, Wo, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    z = rules.total(
        row_forward(row_windows(x_pad, a, geom), w[a], geom.groups, acc)
        for a in range(geom.kernel_hw[0])
    )
    return z.reshape(x.shape[0], *geom.out_hw, geom.out_channels)


def grad_input_rows(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 31 with one GEMM per kernel row (`row_backward`), each tap's share put back by
    the adjoint of its window (`rules.windows_adjoint`).

    Args:
      g: ∂L/∂Z, (N, Ho, Wo, O).
      w: (kh, kw, C//G, O).

    Returns:
      (N, H, W, C) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(g.dtype)
    g_rows = g.reshape(-1, geom.out_channels)
    received = (
        ((a, b), share.reshape(g.shape[0], *geom.out_hw, geom.in_channels))
        for a in range(geom.kernel_hw[0])
        for b, share in enumerate(row_backward(g_rows, w[a], geom.groups, acc))
    )
    return rules.windows_adjoint(received, geom)


def grad_kernel_taps(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 as one GEMM over the windows of all kh·kw taps side by side.

    Args:
      x: (N, H, W, C).
      g: ∂L/∂Z, (N, Ho, Wo, O).

    Returns:
      (kh, kw, C//G, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    g_rows = g.reshape(-1, geom.out_channels)
    windows = [window for a in range(geom.kernel_hw[0]) for window in row_windows(x_pad, a, geom)]
    dw = windows_kernel_grad(windows, g_rows, geom.groups, acc)
    return dw.reshape(*geom.kernel_hw, *dw.shape[1:])


def grad_kernel_rows(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 as one GEMM per kernel row: a row's kw windows side by side.

    Args:
      x: (N, H, W, C).
      g: ∂L/∂Z, (N, Ho, Wo, O).

    Returns:
      (kh, kw, C//G, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x, geom.padding, dilation=geom.input_dilation)
    g_rows = g.reshape(-1, geom.out_channels)
    return jnp.stack(
        [
            windows_kernel_grad(row_windows(x_pad, a, geom), g_rows, geom.groups, acc)
            for a in range(geom.kernel_hw[0])
        ]
    )
