"""Gauss's product: a complex bilinear map from three real evaluations of it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv._src.evaluation import complex_parts
from tests.helpers import rel_err


def _complex(rng, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype)


@pytest.mark.parametrize("dtype, tol", [(jnp.complex128, 1e-14), (jnp.complex64, 1e-6)])
def test_three_real_products_equal_the_complex_product(dtype, tol):
    rng = np.random.default_rng(0)
    a, b = _complex(rng, (5, 7), dtype), _complex(rng, (7, 3), dtype)
    calls = []

    def matmul(p, r):
        calls.append((p.dtype, r.dtype))
        return p @ r

    got = complex_parts.three_real_products(matmul, a, b)
    expected = np.asarray(a, np.complex128) @ np.asarray(b, np.complex128)  # NumPy, in complex
    assert got.dtype == dtype and rel_err(got, expected) <= tol
    real = jnp.finfo(dtype).dtype
    assert calls == [(real, real)] * 3  # three real evaluations, no complex one


def test_no_conjugate_is_taken():
    # The map is bilinear, not sesquilinear: f(i·a, b) = i·f(a, b), as JAX's VJPs are.
    rng = np.random.default_rng(1)
    a, b = _complex(rng, (4,), jnp.complex128), _complex(rng, (4,), jnp.complex128)
    dot = lambda p, r: jnp.sum(p * r)  # noqa: E731
    got = complex_parts.three_real_products(dot, 1j * a, b)
    assert rel_err(got, 1j * np.sum(np.asarray(a) * np.asarray(b))) <= 1e-14
