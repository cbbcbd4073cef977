"""The hand-derived rules of `conv2d`, one function per equation of docs/derivation.md.

Read this beside the derivation: each rule is its sum as written, over the whole batch,
channels-last: X (N, H, W, C); Z and ∂L/∂Z (N, Ho, Wo, O); W (kh, kw, C/G, O). A
`ConvGeometry` carries every size, the padding resolved into (lo, hi) pairs (eqs. 23–24).
The fast forms of these sums are `evaluation/`, each tested equal to its rule here;
`conv2d(..., plan="plain")` runs these rules.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src.geometry import ConvGeometry, Pads

Tap = tuple[int, int]
SPATIAL = (1, 2)  # the (H, W) axes of a channels-last batch


def accumulation_dtype(dtype) -> jnp.dtype:
    """float32 for half-precision inputs (bf16, f16), the input dtype otherwise."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def total(terms: Iterable[jax.Array]) -> jax.Array:
    """The sum of the terms (at least one), left to right."""
    return functools.reduce(jnp.add, terms)


def taps(geom: ConvGeometry) -> list[Tap]:
    """The kernel taps (a, b), row by row."""
    kh, kw = geom.kernel_hw
    return [(a, b) for a in range(kh) for b in range(kw)]


# --- Windows and their adjoint (eqs. 18–22, 38). ---------------------------------------------


def pad(x: jax.Array, pads: Pads, axes=SPATIAL, dilation=(1, 1)) -> jax.Array:
    """P_{ℓ,h}(D_l X), eqs. 22 and 38: l − 1 zeros between the entries on the two `axes`
    (an input dilation, 1 for `conv2d`), then `pads` ((lo_h, hi_h), (lo_w, hi_w)) of zeros
    on their sides, a negative entry cropping."""
    config = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi), d in zip(axes, pads, dilation):
        config[axis] = (lo, hi, d - 1)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def pad_adjoint(g: jax.Array, pads: Pads, axes=SPATIAL, dilation=(1, 1)) -> jax.Array:
    """D_lᵀ P_{−ℓ,−h}(G), the adjoint of `pad`: remove the padding (zero-fill what it
    cropped), then keep every l-th entry, which the dilation's zeros did not replace."""
    g = pad(g, ((-pads[0][0], -pads[0][1]), (-pads[1][0], -pads[1][1])), axes)
    if tuple(dilation) == (1, 1):
        return g
    strides = [1] * g.ndim
    strides[axes[0]], strides[axes[1]] = dilation
    return lax.slice(g, [0] * g.ndim, g.shape, strides)


def window(x_pad: jax.Array, tap: Tap, geom: ConvGeometry, axes=SPATIAL) -> jax.Array:
    """S_{a,b} X̄, eqs. 19 and 26 on both axes: the inputs tap (a, b) multiplies.

    window[n, r, c, :] = x_pad[n, a·dh + r·sh, b·dw + c·sw, :] for r < Ho, c < Wo: one
    strided `lax.slice` of the padded input (its `axes` are (H, W)).
    """
    start, limit, strides = [0] * x_pad.ndim, list(x_pad.shape), [1] * x_pad.ndim
    for axis, k, d, extent, s in zip(axes, tap, geom.dilation, geom.window_extent_hw, geom.stride):
        start[axis], limit[axis], strides[axis] = k * d, k * d + extent, s
    return lax.slice(x_pad, start, limit, strides)


def windows_adjoint(shares, geom: ConvGeometry, axes=SPATIAL) -> jax.Array:
    """∂L/∂X from what each window received: Σ_{a,b} S_{a,b}ᵀ, then `pad_adjoint`.

    S_{a,b}ᵀ is eq. 20 on both axes, one `lax.pad`: s − 1 zeros between entries, placed at
    the tap's start (a·dh, b·dw) in the padded frame.

    `shares` are pairs (tap, share), each share shaped like a window, with (H, W) on `axes`;
    the result is shaped like the forward's input.
    """
    (hp, wp), (eh, ew), (sh, sw) = geom.padded_hw, geom.window_extent_hw, geom.stride

    def placed(tap: Tap, share: jax.Array) -> jax.Array:
        lo_h, lo_w = tap[0] * geom.dilation[0], tap[1] * geom.dilation[1]
        config = [(0, 0, 0)] * share.ndim
        config[axes[0]] = (lo_h, hp - lo_h - eh, sh - 1)
        config[axes[1]] = (lo_w, wp - lo_w - ew, sw - 1)
        return lax.pad(share, jnp.zeros((), share.dtype), config)

    dx_pad = total(placed(tap, share) for tap, share in shares)
    return pad_adjoint(dx_pad, geom.padding, axes, geom.input_dilation)


def _by_group(a: jax.Array, groups: int) -> jax.Array:
    """(..., C) -> (..., G, C/G): channel γ·C_g + i at [..., γ, i]; a tap's (C/G, O) kernel
    -> (C/G, G, O/G)."""
    return a.reshape(*a.shape[:-1], groups, a.shape[-1] // groups)


# --- The rules. ------------------------------------------------------------------------------


def forward(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Z = X̄ ⋆ W, eq. 29 without the bias (eq. 6 with batch, channels, stride, padding,
    dilation and groups):

        z[n, r, c, γ·O_g + o] = Σ_{a, b, i} x̄[n, r·sh + a·dh, c·sw + b·dw, γ·C_g + i]
                                            · w[a, b, i, γ·O_g + o]

    Args:
      x: (N, H, W, C).
      w: (kh, kw, C/G, O).

    Returns:
      (N, Ho, Wo, O), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(x.dtype), geom.groups
    x_pad = pad(x, geom.padding, dilation=geom.input_dilation)
    z = total(
        jnp.einsum(
            "nrcgi,igo->nrcgo",
            _by_group(window(x_pad, tap, geom), groups),
            _by_group(w[tap], groups),
            preferred_element_type=acc,
        )
        for tap in taps(geom)
    )
    return z.reshape(*z.shape[:3], geom.out_channels)


def grad_input(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂X: eq. 31, then the adjoint of eq. 22's padding (and eq. 38's input dilation).

        ∂L/∂x̄[n, p, q, γ·C_g + i] = Σ_{a, b} Σ_{r, c: r·sh + a·dh = p, c·sw + b·dw = q}
                                       Σ_o g[n, r, c, γ·O_g + o] · w[a, b, i, γ·O_g + o]

    Tap (a, b) sends G·W_{a,b}ᵀ back through the adjoint of its window. Summed over the taps
    this is the full correlation of ∂L/∂Z with the rotated kernel (eqs. 13 and 25; the
    seed's pad_full(∂L/∂Z) ⋆ rot180(W)), without multiplying the zeros it inserts.

    Args:
      g: ∂L/∂Z, (N, Ho, Wo, O).
      w: (kh, kw, C/G, O).

    Returns:
      (N, H, W, C), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(g.dtype), geom.groups
    g_by_group = _by_group(g, groups)

    def share(tap: Tap) -> jax.Array:
        w_tap = _by_group(w[tap], groups)
        s = jnp.einsum("nrcgo,igo->nrcgi", g_by_group, w_tap, preferred_element_type=acc)
        return s.reshape(*s.shape[:3], geom.in_channels)

    return windows_adjoint(((tap, share(tap)) for tap in taps(geom)), geom)


def grad_kernel(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂W = X̄ ⋆ ∂L/∂Z: eq. 30 (eqs. 8 and 11, the sums over the output positions):

        ∂L/∂w[a, b, i, γ·O_g + o] = Σ_{n, r, c} g[n, r, c, γ·O_g + o]
                                               · x̄[n, r·sh + a·dh, c·sw + b·dw, γ·C_g + i]

    r and c run over the Ho × Wo outputs, not over the kernel (the slip in the seed's eqs.
    7–8). The forward's stride is the step of this correlation; its dilation spaces the taps.

    Args:
      x: (N, H, W, C).
      g: ∂L/∂Z, (N, Ho, Wo, O).

    Returns:
      (kh, kw, C/G, O), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(x.dtype), geom.groups
    x_pad = pad(x, geom.padding, dilation=geom.input_dilation)
    g_by_group = _by_group(g, groups)
    dw = [
        jnp.einsum(
            "nrcgi,nrcgo->igo",
            _by_group(window(x_pad, tap, geom), groups),
            g_by_group,
            preferred_element_type=acc,
        )
        for tap in taps(geom)
    ]
    return jnp.stack(dw).reshape(*geom.kernel_hw, -1, geom.out_channels)


def grad_bias(g: jax.Array) -> jax.Array:
    """∂L/∂b[o] = Σ_{n, r, c} g[n, r, c, o], eq. 17: each bias feeds every output position.
    g is ∂L/∂Z, (N, Ho, Wo, O); the result (O,), in the accumulation dtype."""
    return jnp.sum(g, axis=(0, 1, 2), dtype=accumulation_dtype(g.dtype))
