"""`conv_reference` and `conv2d_reference`: eq. 6 written out naively, differentiated by plain
JAX autodiff, for any number of spatial axes.

It shares only the argument checking (`geometry`) and layout conversion with `conv`; the
arithmetic is independent (index gathers and an explicit loop over groups, no `lax.slice`, no
custom rules, nothing from `rules.py` or the evaluations), so `jax.grad` of it is an
independent check of the hand-derived rules.
"""

from __future__ import annotations

import string

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src import padding_modes as pm
from jaxconv._src.geometry import IntOrPair, IntOrTuple, Layout, PaddingLike


def _naive(op: str, rank: int | None, x, w, b, padding_mode, **config) -> jax.Array:
    x, w = geo.as_array(op, "x", x), geo.as_array(op, "w", w)
    b = None if b is None else geo.as_array(op, "b", b)
    geom = geo.resolve_conv(op, x, w, b, rank=rank, **config)
    n = geom.spatial_rank
    # Integers wrap as lax's do (mod 2^bits, whatever width sums them); floats in f32 or wider.
    integer = jnp.issubdtype(x.dtype, jnp.integer)
    acc = jnp.promote_types(x.dtype, jnp.int32 if integer else jnp.float32)
    x_cl = lay.to_nhwc(x, geom.layout, geom.input_rank).astype(acc)  # (N, *in, C)
    w_cl = lay.kernel_to_hwio(w, geom.layout, geom.input_rank).astype(acc)  # (*k, C/G, O)

    padding_mode = pm.check_padding_mode(op, padding_mode, geom)
    pads = list(geom.padding)
    if padding_mode != "zeros":
        # Each padded position copies the input position `source_indices` names.
        for axis, (size, (lo, hi)) in enumerate(zip(geom.in_size, pads)):
            source = pm.source_indices(size, lo, hi, padding_mode)
            x_cl = jnp.take(x_cl, source, axis=axis + 1)
        pads = [(0, 0)] * n

    # Padding: zeros where positive, a plain crop where negative.
    x_pad = jnp.pad(x_cl, [(0, 0), *((max(lo, 0), max(hi, 0)) for lo, hi in pads), (0, 0)])
    crop = tuple(
        slice(max(-lo, 0), x_pad.shape[axis + 1] - max(-hi, 0))
        for axis, (lo, hi) in enumerate(pads)
    )
    x_pad = x_pad[(slice(None), *crop)]

    # patches[n, p_1, t_1, ..., p_n, t_n, i] = x_pad[n, p_1·s_1 + t_1·d_1, ..., i]: one
    # index array per axis, broadcast against the others'.
    index = []
    for axis, (out, k, s, d) in enumerate(
        zip(geom.out_size, geom.kernel_size, geom.stride, geom.dilation)
    ):
        rows = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d  # (out, k)
        shape = [1] * (2 * n)
        shape[2 * axis], shape[2 * axis + 1] = out, k
        index.append(rows.reshape(shape))
    patches = x_pad[(slice(None), *index)]

    positions, taps = string.ascii_lowercase[:n], string.ascii_uppercase[:n]
    interleaved = "".join(p + t for p, t in zip(positions, taps))
    spec = f"z{interleaved}i,{taps}io->z{positions}o"
    c_per_group = geom.in_channels // geom.groups
    o_per_group = geom.out_channels // geom.groups
    outputs = []
    for group in range(geom.groups):
        x_g = patches[..., group * c_per_group : (group + 1) * c_per_group]
        w_g = w_cl[..., group * o_per_group : (group + 1) * o_per_group]
        outputs.append(jnp.einsum(spec, x_g, w_g, precision="highest"))
    z = jnp.concatenate(outputs, axis=-1)
    if b is not None:
        z = z + b.astype(acc)
    return lay.from_nhwc(z.astype(x.dtype), geom.layout, geom.input_rank)


def conv_reference(
    x: jax.typing.ArrayLike,
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
    padding_mode: pm.PaddingMode = "zeros",
) -> jax.Array:
    """Naive `conv`, any rank: z[n, p, o] = Σ_{t, i} x_pad[n, p·s + t·d, i]·w[t, i, o].

    Arguments, shapes and result are exactly those of `jaxconv.conv`. Its gradients come
    from `jax.grad` through the gathers, never from the hand-derived rules. Slow and memory
    hungry: for tests and teaching.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.array([[[1.0, 2.0, 4.0, 8.0]]])  # NCW
      >>> jaxconv.conv_reference(x, jnp.array([[[1.0, -1.0]]]))
      Array([[[-1., -2., -4.]]], dtype=float32)
    """
    op = "conv_reference"
    w = geo.as_array(op, "w", w)
    if layout is None:
        kernel_rank = geo.check_rank(op, "w", w.ndim - 2, tuple(w.shape))
        layout = geo.LAYOUTS[kernel_rank][0]
    config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _naive(op, None, x, w, b, padding_mode, layout=layout, **config)


def conv2d_reference(
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
    """Naive `conv2d`: z[n,r,c,o] = Σ_{a,b,i} x_pad[n, r·sh + a·dh, c·sw + b·dw, i]·w[a,b,i,o].

    Arguments, shapes and result are exactly those of `jaxconv.conv2d`. Its gradients come
    from `jax.grad` through the gathers, never from the hand-derived rules. Slow and memory
    hungry: for tests and teaching. A `padding_mode` other than "zeros" is one more gather:
    each padded row and column copies the input one `padding_modes.source_indices` names
    (no `jnp.pad`).

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> x = jnp.arange(9.0).reshape(3, 3)
      >>> jaxconv.conv2d_reference(x, jnp.array([[1.0, 0.0], [0.0, -1.0]]))
      Array([[-4., -4.],
             [-4., -4.]], dtype=float32)
    """
    config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _naive("conv2d_reference", 2, x, w, b, padding_mode, layout=layout, **config)
