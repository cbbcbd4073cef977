"""The naive reference against hand computations from the seed document and against XLA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from tests.helpers import lax_conv2d, rel_err

# The seed's worked example: 3×3 X, 2×2 W, 2×2 Z (eqs. 2–5), with numbers filled in.
X = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
W = jnp.array([[1.0, 2.0], [3.0, 4.0]])
# z00 = 1·1 + 2·2 + 3·4 + 4·5 = 37 (eq. 2);  z01 = 1·2 + 2·3 + 3·5 + 4·6 = 47 (eq. 3)
# z10 = 1·4 + 2·5 + 3·7 + 4·8 = 67 (eq. 4);  z11 = 1·5 + 2·6 + 3·8 + 4·9 = 77 (eq. 5)
Z = [[37.0, 47.0], [67.0, 77.0]]
G = jnp.array([[1.0, -1.0], [2.0, 0.5]])  # an upstream ∂L/∂Z
# eq. 10: ∂L/∂w00 = g00·x00 + g01·x01 + g10·x10 + g11·x11 = 1 − 2 + 8 + 2.5 = 9.5, and so on.
DW = [[9.5, 12.0], [17.0, 19.5]]
# ∂L/∂x[i, j] = Σ_ab g[i−a, j−b]·w[a, b], e.g. ∂L/∂x11 = 0.5·1 + 2·2 + (−1)·3 + 1·4 = 5.5.
DX = [[1.0, 1.0, -2.0], [5.0, 5.5, -3.0], [6.0, 9.5, 2.0]]
DB = [2.5]


@pytest.mark.parametrize("conv", [jaxconv.conv2d, jaxconv.conv2d_reference])
def test_seed_worked_example_forward(conv):
    np.testing.assert_array_equal(conv(X, W), Z)


@pytest.mark.parametrize("conv", [jaxconv.conv2d, jaxconv.conv2d_reference])
def test_seed_worked_example_gradients(conv):
    b = jnp.zeros((1,))
    dx, dw, db = jax.grad(lambda x, w, b: jnp.vdot(G, conv(x, w, b)), (0, 1, 2))(X, W, b)
    np.testing.assert_array_equal(dw, DW)
    np.testing.assert_array_equal(dx, DX)
    np.testing.assert_array_equal(db, DB)


def test_seed_worked_example_public_rules():
    np.testing.assert_array_equal(jaxconv.conv2d_grad_kernel(X, G, W.shape), DW)
    np.testing.assert_array_equal(jaxconv.conv2d_grad_input(G, W, X.shape), DX)
    np.testing.assert_array_equal(jaxconv.conv2d_grad_bias(G), DB)


def test_kernel_gradient_sums_over_output_positions_not_kernel_size():
    # The seed's slip: eqs. 7–8 sum r, c over 0..k−1. With a 4×4 X and a 2×2 W, Z is 3×3, and
    # with ∂L/∂Z = 1: ∂L/∂w[a, b] = Σ_{r,c=0..2} x[r+a, c+b], x[i, j] = 4i + j,
    # = 9·(4a + b) + 3·(4·(0+1+2)) + 3·(0+1+2) = 36a + 9b + 45.
    x = jnp.arange(16.0).reshape(4, 4)
    w = jnp.ones((2, 2))
    g = jnp.ones((3, 3))
    output_bounds = [[45.0, 54.0], [81.0, 90.0]]
    # The misprinted bounds r, c = 0..1 would give Σ_{r,c=0..1} = 16a + 4b + 10.
    kernel_bounds = [[10.0, 14.0], [26.0, 30.0]]
    dw = jaxconv.conv2d_grad_kernel(x, g, w.shape)
    np.testing.assert_array_equal(dw, output_bounds)
    assert not np.allclose(dw, kernel_bounds)
    auto = jax.grad(lambda w: jnp.sum(jaxconv.conv2d_reference(x, w)))(w)
    np.testing.assert_array_equal(auto, output_bounds)


def test_stride_and_padding_by_hand():
    # 1×1 kernel of 2, stride 2, padding 1: picks x_pad[0, 0], x_pad[0, 2], x_pad[2, 0], ...
    x = jnp.arange(1.0, 10.0).reshape(3, 3)
    z = jaxconv.conv2d_reference(x, jnp.full((1, 1), 2.0), stride=2, padding=1)
    np.testing.assert_array_equal(z, [[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]])
    # Negative padding crops: rows 1..2, columns 0..1 of x, 2×2 kernel of ones → one sum.
    z = jaxconv.conv2d_reference(x, jnp.ones((2, 2)), padding=((-1, 0), (0, -1)))
    np.testing.assert_array_equal(z, [[4.0 + 5.0 + 7.0 + 8.0]])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_reference_matches_xla_with_groups_dilation_and_bias(layout):
    rng = np.random.default_rng(0)
    if layout == "NCHW":
        x, w = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((4, 3, 2, 3))
    else:
        x, w = rng.standard_normal((2, 9, 8, 6)), rng.standard_normal((2, 3, 3, 4))
    b = rng.standard_normal(4)
    cfg = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=2, layout=layout)
    x, w, b = map(jnp.asarray, (x, w, b))
    assert rel_err(jaxconv.conv2d_reference(x, w, b, **cfg), lax_conv2d(x, w, b, **cfg)) <= 1e-12


def test_reference_half_precision_returns_input_dtype():
    z = jaxconv.conv2d_reference(X.astype(jnp.bfloat16), W.astype(jnp.bfloat16))
    assert z.dtype == jnp.bfloat16
    np.testing.assert_array_equal(z.astype(jnp.float32), Z)


def test_reference_shares_no_arithmetic_with_the_library():
    # Independent of what it checks: no rules, no evaluations, no custom_vjp code.
    import ast
    from pathlib import Path

    source = Path(jaxconv.__file__).parent / "_src" / "reference.py"
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    names = {
        alias.name
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert not any("rules" in m or "evaluation" in m or "convolution" in m for m in imported)
    assert not {"rules", "evaluation", "convolution", "transpose"} & names
