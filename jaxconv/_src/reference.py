"""`conv2d_reference`: eq. 6 written out naively, differentiated by plain JAX autodiff.

It shares only the argument checking (`geometry`) and layout conversion with `conv2d`; the
arithmetic is independent (index gathers and an explicit loop over groups, no `lax.slice`, no
custom rules, nothing from `rules.py` or the evaluations), so `jax.grad` of it is an
independent check of the hand-derived rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src import padding_modes as pm
from jaxconv._src.geometry import IntOrPair, Layout, PaddingLike


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
    op = "conv2d_reference"
    x, w = geo.as_array(op, "x", x), geo.as_array(op, "w", w)
    b = None if b is None else geo.as_array(op, "b", b)
    geom = geo.resolve_conv2d(
        "conv2d_reference",
        x,
        w,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    rank = geom.input_rank
    acc = jnp.promote_types(x.dtype, jnp.float32)
    x_nhwc = lay.to_nhwc(x, geom.layout, rank).astype(acc)
    w_hwio = lay.kernel_to_hwio(w, geom.layout, rank).astype(acc)

    padding_mode = pm.check_padding_mode(op, padding_mode, geom)
    (lo_h, hi_h), (lo_w, hi_w) = geom.padding
    if padding_mode != "zeros":
        src_h = pm.source_indices(geom.in_hw[0], lo_h, hi_h, padding_mode)
        src_w = pm.source_indices(geom.in_hw[1], lo_w, hi_w, padding_mode)
        x_nhwc = x_nhwc[:, src_h[:, None], src_w[None, :], :]
        (lo_h, hi_h), (lo_w, hi_w) = (0, 0), (0, 0)

    # Padding: zeros where positive, a plain crop where negative.
    x_pad = jnp.pad(
        x_nhwc, ((0, 0), (max(lo_h, 0), max(hi_h, 0)), (max(lo_w, 0), max(hi_w, 0)), (0, 0))
    )
    x_pad = x_pad[
        :,
        max(-lo_h, 0) : x_pad.shape[1] - max(-hi_h, 0),
        max(-lo_w, 0) : x_pad.shape[2] - max(-hi_w, 0),
    ]

    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = geom.kernel_hw, geom.stride, geom.dilation, geom.out_hw
    rows = np.arange(ho)[:, None] * sh + np.arange(kh)[None, :] * dh  # (Ho, kh)
    cols = np.arange(wo)[:, None] * sw + np.arange(kw)[None, :] * dw  # (Wo, kw)
    # patches[n, r, a, c, b, i] = x_pad[n, r·sh + a·dh, c·sw + b·dw, i]
    patches = x_pad[:, rows[:, :, None, None], cols[None, None, :, :], :]

    c_per_group = geom.in_channels // geom.groups
    o_per_group = geom.out_channels // geom.groups
    outputs = []
    for group in range(geom.groups):
        x_g = patches[..., group * c_per_group : (group + 1) * c_per_group]
        w_g = w_hwio[..., group * o_per_group : (group + 1) * o_per_group]
        outputs.append(jnp.einsum("nracbi,abio->nrco", x_g, w_g, precision="highest"))
    z = jnp.concatenate(outputs, axis=-1)
    if b is not None:
        z = z + b.astype(acc)
    return lay.from_nhwc(z.astype(x.dtype), geom.layout, rank)
