"""The hand-derived rules of the convolution, one function per equation of docs/derivation.md.

Read this beside the derivation: each rule is its sum as written, over the whole batch,
channels-last, for any number n of spatial axes: X (N, *in, C); Z and ∂L/∂Z (N, *out, O);
W (*k, C/G, O), i.e. (kh, kw, C/G, O) in 2-D. A tap is a multi-index t = (t_1, ..., t_n) of
the kernel; the output positions p = (p_1, ..., p_n) are flattened into one axis for each
contraction, so no einsum below depends on n. A `ConvGeometry` carries every size, the
padding resolved into (lo, hi) pairs (eqs. 23–24). The fast forms of these sums are
`evaluation/`, each tested equal to its rule here; `plan="plain"` runs these rules.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src.geometry import ConvGeometry, Pads

Tap = tuple[int, ...]


def accumulation_dtype(dtype) -> jnp.dtype:
    """float32 for half-precision floating inputs (bf16, f16), the input dtype otherwise:
    integers keep theirs, as lax's result does (wider ones are asked for by converting)."""
    dtype = jnp.dtype(dtype)
    half = jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4
    return jnp.dtype(jnp.float32) if half else dtype


def total(terms: Iterable[jax.Array]) -> jax.Array:
    """The sum of the terms (at least one), left to right."""
    return functools.reduce(jnp.add, terms)


def taps(geom: ConvGeometry) -> list[Tap]:
    """The kernel taps t, in row-major order (the last axis fastest)."""
    return list(itertools.product(*map(range, geom.kernel_size)))


def spatial(a: jax.Array) -> tuple[int, ...]:
    """The spatial axes of a channels-last batch: all but the first and the last."""
    return tuple(range(1, a.ndim - 1))


# --- Windows and their adjoint (eqs. 18–22, 38), one axis after another. ---------------------


def pad(x: jax.Array, pads: Pads, axes: Sequence[int] | None = None, dilation=None) -> jax.Array:
    """P_{ℓ,h}(D_l X), eqs. 22 and 38 on each of `axes` (default: the spatial axes of a
    channels-last batch): l − 1 zeros between the entries (an input dilation, 1 for a plain
    convolution), then `pads` (one (lo, hi) per axis) of zeros on their sides, a negative
    entry cropping."""
    axes = spatial(x) if axes is None else axes
    dilation = (1,) * len(axes) if dilation is None else dilation
    config = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi), d in zip(axes, pads, dilation):
        config[axis] = (lo, hi, d - 1)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def pad_adjoint(g: jax.Array, pads: Pads, axes: Sequence[int] | None = None, dilation=None):
    """D_lᵀ P_{−ℓ,−h}(G), the adjoint of `pad`: remove the padding (zero-fill what it
    cropped), then keep every l-th entry, which the dilation's zeros did not replace."""
    axes = spatial(g) if axes is None else axes
    g = pad(g, tuple((-lo, -hi) for lo, hi in pads), axes)
    if dilation is None or all(d == 1 for d in dilation):
        return g
    strides = [1] * g.ndim
    for axis, d in zip(axes, dilation):
        strides[axis] = d
    return lax.slice(g, [0] * g.ndim, g.shape, strides)


def window(x_pad: jax.Array, tap: Tap, geom: ConvGeometry, axes=None) -> jax.Array:
    """S_t X̄, eqs. 19 and 26 on every axis: the inputs tap t multiplies.

    window[n, p, :] = x_pad[n, t·d + p·s, :] (per axis j: t_j·d_j + p_j·s_j) for p < out:
    one strided `lax.slice` of the padded input (its spatial axes are `axes`).
    """
    axes = spatial(x_pad) if axes is None else axes
    start, limit, strides = [0] * x_pad.ndim, list(x_pad.shape), [1] * x_pad.ndim
    for axis, k, d, extent, s in zip(axes, tap, geom.dilation, geom.window_extent, geom.stride):
        start[axis], limit[axis], strides[axis] = k * d, k * d + extent, s
    return lax.slice(x_pad, start, limit, strides)


def windows_adjoint(shares, geom: ConvGeometry, axes=None) -> jax.Array:
    """∂L/∂X from what each window received: Σ_t S_tᵀ, then `pad_adjoint`.

    S_tᵀ is eq. 20 on every axis, one `lax.pad`: s − 1 zeros between entries, placed at the
    tap's start t·d in the padded frame.

    `shares` are pairs (tap, share), each share shaped like a window, with its spatial axes
    on `axes` (default: a channels-last batch's); the result is shaped like the forward's
    input.
    """

    def placed(tap: Tap, share: jax.Array) -> jax.Array:
        config = [(0, 0, 0)] * share.ndim
        for axis, k, d, padded, extent, s in zip(
            spatial(share) if axes is None else axes,
            tap,
            geom.dilation,
            geom.padded_size,
            geom.window_extent,
            geom.stride,
        ):
            config[axis] = (k * d, padded - k * d - extent, s - 1)
        return lax.pad(share, jnp.zeros((), share.dtype), config)

    dx_pad = total(placed(tap, share) for tap, share in shares)
    return pad_adjoint(dx_pad, geom.padding, axes, geom.input_dilation)


def _by_group(a: jax.Array, groups: int) -> jax.Array:
    """(..., C) -> (..., G, C/G): channel γ·C_g + i at [..., γ, i]; a tap's (C/G, O) kernel
    -> (C/G, G, O/G)."""
    return a.reshape(*a.shape[:-1], groups, a.shape[-1] // groups)


def _positions(a: jax.Array) -> jax.Array:
    """(N, *out, C) -> (N, P, C): the output positions p as one axis of P = ∏out entries."""
    return a.reshape(a.shape[0], -1, a.shape[-1])


# --- The rules. ------------------------------------------------------------------------------


def forward(x: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Z = X̄ ⋆ W, eq. 29 without the bias (eq. 6 with batch, channels, stride, padding,
    dilation and groups), on every axis:

        z[n, p, γ·O_g + o] = Σ_{t, i} x̄[n, p·s + t·d, γ·C_g + i] · w[t, i, γ·O_g + o]

    Args:
      x: (N, *in, C).
      w: (*k, C/G, O).

    Returns:
      (N, *out, O), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(x.dtype), geom.groups
    x_pad = pad(x, geom.padding, dilation=geom.input_dilation)
    z = total(
        jnp.einsum(
            "npgi,igo->npgo",
            _by_group(_positions(window(x_pad, tap, geom)), groups),
            _by_group(w[tap], groups),
            preferred_element_type=acc,
        )
        for tap in taps(geom)
    )
    return z.reshape(x.shape[0], *geom.out_size, geom.out_channels)


def grad_input(g: jax.Array, w: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂X: eq. 31, then the adjoint of eq. 22's padding (and eq. 38's input dilation).

        ∂L/∂x̄[n, q, γ·C_g + i] = Σ_t Σ_{p: p·s + t·d = q} Σ_o g[n, p, γ·O_g + o]
                                                            · w[t, i, γ·O_g + o]

    Tap t sends G·W_tᵀ back through the adjoint of its window. Summed over the taps this is
    the full correlation of ∂L/∂Z with the rotated kernel (eqs. 13 and 25; the seed's
    pad_full(∂L/∂Z) ⋆ rot180(W)), without multiplying the zeros it inserts.

    Args:
      g: ∂L/∂Z, (N, *out, O).
      w: (*k, C/G, O).

    Returns:
      (N, *in, C), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(g.dtype), geom.groups
    g_by_group = _by_group(_positions(g), groups)

    def share(tap: Tap) -> jax.Array:
        w_tap = _by_group(w[tap], groups)
        s = jnp.einsum("npgo,igo->npgi", g_by_group, w_tap, preferred_element_type=acc)
        return s.reshape(g.shape[0], *geom.out_size, geom.in_channels)

    return windows_adjoint(((tap, share(tap)) for tap in taps(geom)), geom)


def grad_kernel(x: jax.Array, g: jax.Array, geom: ConvGeometry) -> jax.Array:
    """∂L/∂W = X̄ ⋆ ∂L/∂Z: eq. 30 (eqs. 8 and 11, the sums over the output positions):

        ∂L/∂w[t, i, γ·O_g + o] = Σ_{n, p} g[n, p, γ·O_g + o] · x̄[n, p·s + t·d, γ·C_g + i]

    p runs over the output positions, not over the kernel (the slip in the seed's eqs.
    7–8). The forward's stride is the step of this correlation; its dilation spaces the taps.

    Args:
      x: (N, *in, C).
      g: ∂L/∂Z, (N, *out, O).

    Returns:
      (*k, C/G, O), in the accumulation dtype.
    """
    acc, groups = accumulation_dtype(x.dtype), geom.groups
    x_pad = pad(x, geom.padding, dilation=geom.input_dilation)
    g_by_group = _by_group(_positions(g), groups)
    dw = [
        jnp.einsum(
            "npgi,npgo->igo",
            _by_group(_positions(window(x_pad, tap, geom)), groups),
            g_by_group,
            preferred_element_type=acc,
        )
        for tap in taps(geom)
    ]
    return jnp.stack(dw).reshape(*geom.kernel_size, -1, geom.out_channels)


def grad_bias(g: jax.Array) -> jax.Array:
    """∂L/∂b[o] = Σ_{n, p} g[n, p, o], eq. 17: each bias feeds every output position.
    g is ∂L/∂Z, (N, *out, O); the result (O,), in the accumulation dtype."""
    return jnp.sum(g, axis=tuple(range(g.ndim - 1)), dtype=accumulation_dtype(g.dtype))
