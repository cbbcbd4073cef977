"""Winograd's F(2×2, 3×3): a stride-1 3×3 correlation with 16 products per 2×2 output tile
where the sums of eq. 6 take 36.

1-D, F(2, 3): two outputs of a 3-tap correlation, y[r] = Σ_a d[r + a]·w[a], from a tile of
four inputs d, as y = Aᵀ[(G w) ⊙ (Bᵀ d)] with

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]],
    G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]],   Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].

2-D nests it: Y = Aᵀ[(G W Gᵀ) ⊙ (Bᵀ D B)]A per 4×4 input tile D, tiles 2 apart. Over
channels the ⊙ becomes a contraction: for each of the 16 tile entries, one GEMM
(tiles, C)·(C, O). The identity is exact; in floating point its rounding is that of a few
extra additions (docs/derivation.md §10, eqs. 35–36).

The kernel gradient uses the same tiles. Summing y[r]·g[r] over r for any w gives
Σ_r d[r + a]·g[r] = Σ_k G[k, a]·(A g)[k]·(Bᵀ d)[k], so eq. 8 over one tile is
Gᵀ[(A g_t Aᵀ) ⊙ (Bᵀ D B)]G, with g_t the tile's 2×2 of ∂L/∂Z.

Dilated kernels go by phases (eq. 37): with dilation d at stride 1, each of the d_h·d_w
phases of the padded input is an undilated correlation with the same kernel.

The tile algebra comes first (`correlate`, `kernel_grad`), then the three forms that pad,
split into phases, crop, and call it (`forward`, `grad_input`, `grad_kernel`).
Arrays are channels-last: (N, H, W, C).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src import rules
from jaxconv._src.geometry import ConvGeometry, Pads

_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def tile_counts(out_hw: tuple[int, ...]) -> tuple[int, ...]:
    """(T, U): the 2×2 output tiles that cover (Ho, Wo); the last row or column may overhang."""
    return tuple(-(-n // 2) for n in out_hw)


def _input_rows(d: jax.Array, axis: int, tiles: int) -> list[jax.Array]:
    """Bᵀ d along `axis`: d has 2·tiles + 2 entries there; four arrays of `tiles` entries.

    Entry k of tile t is d[2t + k]: a strided slice per k.
    """
    d0, d1, d2, d3 = (lax.slice_in_dim(d, k, k + 2 * tiles - 1, 2, axis) for k in range(4))
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _input_tiles(x_pad: jax.Array) -> list[jax.Array]:
    """Bᵀ D B of every input tile: 16 arrays (N·T·U, C), entry (p, q) at 4p + q.

    Args:
      x_pad: (N, 2T + 2, 2U + 2, C).
    """
    n, hp, wp, c = x_pad.shape
    t, u = (hp - 2) // 2, (wp - 2) // 2
    by_rows = _input_rows(x_pad, 1, t)  # 4 × (N, T, 2U + 2, C)
    return [v.reshape(n * t * u, c) for rows in by_rows for v in _input_rows(rows, 2, u)]


def _kernel_tiles(w: jax.Array) -> jax.Array:
    """G W Gᵀ: (3, 3, C, O) -> (16, C, O), entry (p, q) at 4p + q."""
    g = jnp.asarray(_G, w.dtype)
    # HIGHEST: a tiny product, kept exact where an accelerator would round f32 matmuls.
    u = jnp.einsum("pa,abco,qb->pqco", g, w, g, precision=lax.Precision.HIGHEST)
    return u.reshape(16, *w.shape[2:])


def _output_rows(m: list[jax.Array]) -> list[jax.Array]:
    """Aᵀ m: four arrays (one per tile entry) -> the tile's two outputs."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def _grad_rows(g0: jax.Array, g1: jax.Array) -> list[jax.Array]:
    """A g: a tile's two outputs' ∂L/∂Z -> four arrays, one per tile entry."""
    return [g0, g0 + g1, g0 - g1, -g1]


def correlate(x_pad: jax.Array, w: jax.Array, acc) -> jax.Array:
    """Eq. 6 with stride 1 and a 3×3 kernel: z[n, r, c, o] = Σ_{a, b, i} x_pad[n, r + a, c + b, i]
    · w[a, b, i, o], by F(2×2, 3×3).

    Args:
      x_pad: (N, 2T + 2, 2U + 2, C), padded so that its tiles cover the wanted outputs.
      w: (3, 3, C, O).
      acc: accumulation dtype of the 16 GEMMs.

    Returns:
      (N, 2T, 2U, O): every output the tiles cover; the caller crops the overhang.
    """
    n, hp, wp, _ = x_pad.shape
    t, u = (hp - 2) // 2, (wp - 2) // 2
    u_tiles = _kernel_tiles(w)
    m = [
        jnp.dot(v, u_tiles[k], preferred_element_type=acc).reshape(n, t, u, -1)
        for k, v in enumerate(_input_tiles(x_pad))
    ]
    per_column = [_output_rows([m[4 * p + q] for p in range(4)]) for q in range(4)]
    rows = [_output_rows([per_column[q][i] for q in range(4)]) for i in range(2)]
    # rows[i][j]: output (i, j) of every tile, (N, T, U, O); interleave them.
    y = jnp.stack([jnp.stack(row, axis=3) for row in rows], axis=2)  # (N, T, 2, U, 2, O)
    return y.reshape(n, 2 * t, 2 * u, -1)


def kernel_grad(x_pad: jax.Array, g: jax.Array, acc) -> jax.Array:
    """Eq. 8 with stride 1 and a 3×3 kernel: ∂L/∂w[a, b, i, o] = Σ_{n, r, c} x_pad[n, r + a,
    c + b, i]·g[n, r, c, o], by the F(2×2, 3×3) tiles.

    Args:
      x_pad: (N, 2T + 2, 2U + 2, C).
      g: (N, 2T, 2U, O), ∂L/∂Z, zero on the outputs the tiles overhang.
      acc: accumulation dtype of the 16 GEMMs.

    Returns:
      (3, 3, C, O).
    """
    o = g.shape[3]
    g_rows = _grad_rows(g[:, 0::2], g[:, 1::2])  # A along rows: 4 × (N, T, 2U, O)
    g_tiles = [e.reshape(-1, o) for r in g_rows for e in _grad_rows(r[:, :, 0::2], r[:, :, 1::2])]
    du = jnp.stack(
        [
            lax.dot_general(v, gt, (((0,), (0,)), ((), ())), preferred_element_type=acc)
            for v, gt in zip(_input_tiles(x_pad), g_tiles)
        ]
    ).reshape(4, 4, x_pad.shape[3], o)
    gm = jnp.asarray(_G, acc)
    return jnp.einsum("pa,pqco,qb->abco", gm, du, gm, precision=lax.Precision.HIGHEST)


# --- The forms: padding, phases and crops around the tile algebra. ---------------------------


def accepts(geom: ConvGeometry) -> bool:
    """F(2×2, 3×3) computes an ungrouped 3×3 correlation at stride 1 (any kernel dilation) of
    an undilated input."""
    return (
        geom.kernel_size == (3, 3)
        and geom.stride == (1, 1)
        and geom.groups == 1
        and geom.input_dilation == (1, 1)
    )


def tile_aligned(pads: Pads, out_hw: tuple[int, ...], dilation: tuple[int, ...]) -> Pads:
    """`pads` with each high side grown so that the out_hw outputs split into `dilation`
    phases of whole 2×2 tiles: each n rounded up to a multiple of 2·d (the overhang is
    cropped, or zero, afterwards)."""
    return tuple((lo, hi + -n % (2 * d)) for (lo, hi), n, d in zip(pads, out_hw, dilation))


def tiles_per_image(geom: ConvGeometry) -> int:
    """The 2×2 output tiles of one image, over all its phases."""
    return math.prod((n + -n % (2 * d)) // 2 for n, d in zip(geom.out_size, geom.dilation))


def reads_input_in_place(geom: ConvGeometry) -> bool:
    """Whether the forward reads its input as it comes: undilated, nothing to pad."""
    pads = tile_aligned(geom.padding, geom.out_size, geom.dilation)
    return geom.dilation == (1, 1) and pads == ((0, 0), (0, 0))


def split_phases(a: jax.Array, dilation: tuple[int, ...]) -> jax.Array:
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


def merge_phases(a: jax.Array, dilation: tuple[int, ...]) -> jax.Array:
    """The inverse of `split_phases`: (N·dh·dw, H, W, C) -> (N, dh·H, dw·W, C)."""
    if dilation == (1, 1):
        return a
    (m, h, w, c), (dh, dw) = a.shape, dilation
    a = a.reshape(m // (dh * dw), dh, dw, h, w, c).transpose(0, 3, 1, 4, 2, 5)
    return a.reshape(m // (dh * dw), h * dh, w * dw, c)


def forward(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 29 by F(2×2, 3×3) on each phase of the padded input (eq. 37).

    Args:
      x: (N, H, W, C).
      w: (3, 3, C, O).

    Returns:
      (N, Ho, Wo, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    pads = tile_aligned(geom.padding, geom.out_size, geom.dilation)
    x_phases = split_phases(rules.pad(x.astype(acc), pads), geom.dilation)
    z = merge_phases(correlate(x_phases, w.astype(acc), acc), geom.dilation)
    ho, wo = geom.out_size
    return z[:, :ho, :wo]


def grad_input(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The input gradient as the derivation writes it, ∂L/∂X = pad_full(∂L/∂Z) ⋆ rot180(W)
    with each tap's (C, O) block transposed and the forward's dilation (eqs. 13, 25), by
    F(2×2, 3×3) on each phase (eq. 37).

    The full padding (kh − 1)·d = 2d, less the forward's (lo, hi) on each side: ∂L/∂x[i] =
    Σ_a ∂L/∂z[i + lo − a·d]·w[a] = Σ_a' ∂L/∂z[i + lo − 2d + a'·d]·w[2 − a'], so ∂L/∂Z is
    padded by (2d − lo, 2d − hi) (a crop where negative), which also zero-fills what the
    forward cropped.

    Args:
      g: ∂L/∂Z, (N, Ho, Wo, O).
      w: (3, 3, C, O).

    Returns:
      (N, H, W, C) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(g.dtype)
    full = tuple((2 * d - lo, 2 * d - hi) for (lo, hi), d in zip(geom.padding, geom.dilation))
    pads = tile_aligned(full, geom.in_size, geom.dilation)
    g_phases = split_phases(rules.pad(g.astype(acc), pads), geom.dilation)
    w_rotated = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(acc)
    dx = merge_phases(correlate(g_phases, w_rotated, acc), geom.dilation)
    h, w_ = geom.in_size
    return dx[:, :h, :w_]


def grad_kernel(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Eq. 30 by the F(2×2, 3×3) tiles of each phase (eqs. 36–37).

    Args:
      x: (N, H, W, C).
      g: ∂L/∂Z, (N, Ho, Wo, O).

    Returns:
      (3, 3, C, O) in the accumulation dtype.
    """
    acc = rules.accumulation_dtype(x.dtype)
    x_pad = rules.pad(x.astype(acc), tile_aligned(geom.padding, geom.out_size, geom.dilation))
    g_pad = rules.pad(g.astype(acc), tile_aligned(((0, 0), (0, 0)), geom.out_size, geom.dilation))
    return kernel_grad(split_phases(x_pad, geom.dilation), split_phases(g_pad, geom.dilation), acc)
