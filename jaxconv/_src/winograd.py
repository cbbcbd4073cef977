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

This module is the tile algebra only; the rules pad, crop and choose it (`conv.py`).
Arrays are channels-last: (N, H, W, C).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def tile_counts(out_hw: tuple[int, int]) -> tuple[int, int]:
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
