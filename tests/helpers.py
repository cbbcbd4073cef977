"""Independent references for the tests: XLA's convolution and random operands.

`lax_conv2d` maps jaxconv's arguments onto `jax.lax.conv_general_dilated` without using
any of jaxconv's geometry code, so agreement also checks the padding resolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def lax_padding(padding):
    """jaxconv's padding forms in the form lax accepts (strings stay strings)."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    if all(isinstance(p, int) for p in padding):
        return [(p, p) for p in padding]
    return [tuple(p) for p in padding]


def lax_conv2d(x, w, b=None, *, stride=1, padding="VALID", dilation=1, groups=1, layout="NCHW"):
    """jaxconv.conv2d's contract, computed by XLA's convolution (test reference only)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    rank = x.ndim
    if rank == 2:
        x, w = x[None, None], w[None, None]
        layout = "NCHW"
    elif rank == 3:
        x = x[None]
    dims = ("NCHW", "OIHW", "NCHW") if layout == "NCHW" else ("NHWC", "HWIO", "NHWC")
    z = lax.conv_general_dilated(
        x,
        w,
        window_strides=pair(stride),
        padding=lax_padding(padding),
        rhs_dilation=pair(dilation),
        dimension_numbers=dims,
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32 if x.dtype.itemsize < 4 else None,
    )
    if b is not None:
        z = z + (b[:, None, None] if layout == "NCHW" else b).astype(z.dtype)
    z = z.astype(x.dtype)
    if rank == 2:
        return z[0, 0]
    return z[0] if rank == 3 else z


def operand_shapes(*, batch, c, o, hw, khw, groups, layout, rank=4):
    """(x_shape, w_shape) for the given sizes, in `layout` and input `rank`."""
    (h, w), (kh, kw) = hw, khw
    if rank == 2:
        return (h, w), (kh, kw)
    if layout == "NCHW":
        x_shape, w_shape = (batch, c, h, w), (o, c // groups, kh, kw)
    else:
        x_shape, w_shape = (batch, h, w, c), (kh, kw, c // groups, o)
    return (x_shape[1:] if rank == 3 else x_shape), w_shape


def random_operands(seed, x_shape, w_shape, o, dtype=np.float64, bias=True):
    """Normal x, w and b as jax arrays of `dtype`."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    b = jnp.asarray(rng.standard_normal((o,)), dtype) if bias else None
    return x, w, b


def rel_err(actual, expected) -> float:
    """max|actual − expected| / max|expected| (a norm-relative error)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(np.max(np.abs(expected)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual - expected)) / scale)


def loss_grads(conv, x, w, b, cotangent, **cfg):
    """Gradients of <cotangent, conv(x, w, b)> w.r.t. (x, w, b)."""

    def loss(x, w, b):
        return jnp.vdot(cotangent, conv(x, w, b, **cfg))

    return jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
