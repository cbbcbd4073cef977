"""Shared test helpers: the XLA reference, operand shapes, random operands, errors.

`lax_conv2d` is `jaxconv.conv2d_xla`, which maps the arguments onto
`jax.lax.conv_general_dilated` without jaxconv's geometry code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv
from jaxconv._src.audit import FAST_COMPILE

lax_conv2d = jaxconv.conv2d_xla

# For the sweeps, whose every example is a new program on tiny operands (see FAST_COMPILE).
jit_fast_compile = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


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


def value_and_grads(conv, x, w, b, cotangent, cfg):
    """conv(x, w, b) and the gradients of <cotangent, conv(x, w, b)> w.r.t. (x, w, b)."""
    return conv(x, w, b, **cfg), loss_grads(conv, x, w, b, cotangent, **cfg)


def loss_grads(conv, x, w, b, cotangent, **cfg):
    """Gradients of <cotangent, conv(x, w, b)> w.r.t. (x, w, b)."""

    def loss(x, w, b):
        return jnp.vdot(cotangent, conv(x, w, b, **cfg))

    return jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
