"""Complex operands by real arithmetic: each pass of a complex convolution as three real ones.

Every pass is bilinear in its two operands (Z in X and W, ∂L/∂X in ∂L/∂Z and W, ∂L/∂W in X
and ∂L/∂Z), so with a = p + iq and b = r + is, Gauss's product (docs/derivation.md §14,
eq. 40) gives f(a, b) = f(p, r) − f(q, s) + i·(f(p, s) + f(q, r)) from three real
evaluations,

    k₁ = f(p + q, r),   k₂ = f(p, s − r),   k₃ = f(q, r + s),   f(a, b) = (k₁ − k₃) + i·(k₁ + k₂),

three quarters of the real multiply-adds of complex arithmetic, each by real GEMMs. No
conjugate appears: JAX's cotangent map is the transpose (docs/usage.md).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax


def three_real_products(bilinear: Callable, a: jax.Array, b: jax.Array) -> jax.Array:
    """`bilinear(a, b)` of complex a, b by three real calls of it (Gauss's product, eq. 40).

    Args:
      bilinear: f(a, b), linear in each operand, that takes real operands too.
      a, b: complex arrays of f's shapes.

    Returns:
      f(a, b), complex, of the dtype whose parts f's real results have.
    """
    p, q, r, s = a.real, a.imag, b.real, b.imag
    k1 = bilinear(p + q, r)
    k2 = bilinear(p, s - r)
    k3 = bilinear(q, r + s)
    return lax.complex(k1 - k3, k1 + k2)
