"""conv_transpose: lax.conv_transpose's contract, values and gradients, by jaxconv's rules."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv
from tests.helpers import jit_fast_compile, rel_err

TOL = 1e-10


def _operands(lhs_spec, rhs_spec, transpose_kernel=False, n=2, c=3, o=4, hw=(5, 4), khw=(3, 2)):
    """Operands of a transposed conv from c to o features. With `transpose_kernel` the
    kernel's O axis holds the input's c features and its I axis the output's o (lax swaps
    them), so c != o tells the two axes apart."""
    rng = np.random.default_rng(0)
    sizes = dict(N=n, C=c, H=hw[0], W=hw[1])
    kernel = dict(O=c, I=o) if transpose_kernel else dict(O=o, I=c)
    kernel.update(H=khw[0], W=khw[1])
    lhs = rng.standard_normal(tuple(sizes[d] for d in lhs_spec))
    rhs = rng.standard_normal(tuple(kernel[d] for d in rhs_spec))
    return jnp.asarray(lhs), jnp.asarray(rhs)


def _assert_matches_lax(lhs, rhs, **kwargs):
    """Value and both gradients of jaxconv's and lax's, compiled as one program."""

    @jit_fast_compile
    def both(lhs, rhs):
        out = []
        for conv in (jaxconv.conv_transpose, lax.conv_transpose):
            z, vjp = jax.vjp(lambda a, b, conv=conv: conv(a, b, **kwargs), lhs, rhs)
            cot = jnp.asarray(np.random.default_rng(1).standard_normal(z.shape), z.dtype)
            out.append((z, *vjp(cot)))
        return out

    ours, theirs = both(lhs, rhs)
    for name, a, b in zip(("out", "d_lhs", "d_rhs"), ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert rel_err(a, b) <= TOL, name
    return ours[0]


# (strides, padding, rhs_dilation, use_consistent_padding)
CASES = [
    ((1, 1), "SAME", None, False),
    ((2, 2), "SAME", None, False),
    ((3, 2), "SAME", (1, 2), False),  # stride above the dilated kernel on one axis
    ((2, 1), "VALID", None, False),
    ((3, 3), "VALID", (2, 1), False),
    ((2, 2), ((1, 2), (0, 1)), None, False),  # the dilated input's padding, as given
    ((2, 3), ((2, 0), (3, 1)), (1, 2), False),
    ((2, 2), ((-1, 1), (1, -1)), None, False),  # negative: crops
    ((2, 2), ((1, 1), (0, 1)), None, True),  # the forward conv's padding, as in PyTorch
    ((3, 1), ((0, 2), (1, 0)), (2, 1), True),
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("strides, padding, rhs_dilation, consistent", CASES)
def test_matches_lax(strides, padding, rhs_dilation, consistent, transpose_kernel):
    lhs, rhs = _operands("NHWC", "HWIO", transpose_kernel)
    _assert_matches_lax(
        lhs,
        rhs,
        strides=strides,
        padding=padding,
        rhs_dilation=rhs_dilation,
        transpose_kernel=transpose_kernel,
        use_consistent_padding=consistent,
    )


DIMENSION_NUMBERS = [
    ("NCHW", "OIHW", "NCHW"),
    ("NHWC", "OIHW", "NCHW"),
    ("CHWN", "IOWH", "HNWC"),  # spatial axes in the kernel's order (W before H)
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("dims", DIMENSION_NUMBERS)
def test_dimension_numbers(dims, transpose_kernel):
    lhs, rhs = _operands(dims[0], dims[1], transpose_kernel, c=2, o=5)
    _assert_matches_lax(
        lhs,
        rhs,
        strides=(2, 3),
        padding="SAME",
        rhs_dilation=(2, 1),
        dimension_numbers=dims,
        transpose_kernel=transpose_kernel,
    )


def test_conv_dimension_numbers_object_and_shape():
    lhs, rhs = _operands("NCHW", "OIHW")
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NCHW", "OIHW", "NCHW"))
    z = _assert_matches_lax(lhs, rhs, strides=(2, 2), padding="VALID", dimension_numbers=dims)
    # VALID: (H − 1)·s + k rows, as the transpose of a VALID stride-2 conv.
    assert z.shape == (2, 4, (5 - 1) * 2 + 3, (4 - 1) * 2 + 2)


def test_transpose_kernel_is_the_gradient_of_the_forward_conv():
    # With transpose_kernel=True and the forward conv's kernel, conv_transpose is ∂/∂x of
    # that conv (lax's docstring): checked against jax.vjp of lax's forward conv.
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 5)))  # HWIO, forward: 3 → 5 features
    dn = ("NHWC", "HWIO", "NHWC")
    z, vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, w, (2, 2), "SAME", None, None, dn), x)
    g = jnp.asarray(rng.standard_normal(z.shape))
    got = jaxconv.conv_transpose(g, w, (2, 2), "SAME", dimension_numbers=dn, transpose_kernel=True)
    assert rel_err(got, vjp(g)[0]) <= TOL


def test_preferred_element_type_and_precision_pass_through():
    lhs, rhs = (a.astype(jnp.float32) for a in _operands("NHWC", "HWIO"))
    kwargs = dict(strides=(2, 2), padding="SAME", precision="highest")
    z = jaxconv.conv_transpose(lhs, rhs, preferred_element_type=jnp.float64, **kwargs)
    assert z.dtype == jnp.float64
    expected = lax.conv_transpose(lhs, rhs, preferred_element_type=jnp.float64, **kwargs)
    assert rel_err(z, expected) <= 1e-14  # float32 products are exact in float64
    # The plain plan: contractions (the CPU's plan of this shallow conv has none to carry it).
    plain = dict(kwargs, plan="plain")
    jaxpr = str(jax.make_jaxpr(lambda a: jaxconv.conv_transpose(a, rhs, **plain).sum())(lhs))
    assert "Precision.HIGHEST" in jaxpr and "conv_general_dilated" not in jaxpr


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(lhs=np.zeros((2, 5, 3))), ValueError, "`lhs` of shape (2, 5, 3) and `rhs` of"),
        (dict(rhs=np.zeros((3, 3, 3, 4, 1))), ValueError, "`rhs` of shape (3, 3, 3, 4, 1) must"),
        (
            dict(lhs=np.zeros((2, 5)), rhs=np.zeros((3, 4))),
            ValueError,
            "has 0 spatial dimensions; jaxconv computes convolutions of 1, 2 or 3",
        ),
        (dict(strides=2), TypeError, "`strides` must be a sequence of two ints"),
        (dict(strides=(0, 1)), ValueError, "`strides` must be >= 1"),
        (dict(rhs_dilation=(1, 1, 1)), TypeError, "`rhs_dilation` must be a sequence of two"),
        (dict(padding="SAME_LOWER"), ValueError, "`padding` must be one of ('SAME', 'VALID')"),
        (dict(padding=[(1, 1)]), TypeError, "`padding` must be 'SAME', 'VALID' or two"),
        (dict(padding=((1, 1), (1, 1.5))), TypeError, "`padding` must be 'SAME', 'VALID' or"),
        (dict(dimension_numbers=("NCH", "OIH", "NCH")), ValueError, "two spatial letters"),
        (dict(transpose_kernel="yes"), TypeError, "`transpose_kernel` must be a bool"),
        (dict(rhs=np.zeros((3, 3, 2, 4))), ValueError, "the input features C = 3 must be"),
    ],
)
def test_errors_name_the_argument(kwargs, error, message):
    args = dict(lhs=np.zeros((2, 5, 4, 3)), rhs=np.zeros((3, 3, 3, 4)), strides=(1, 1))
    args["padding"] = "SAME"
    args.update(kwargs)
    with pytest.raises(error, match="^conv_transpose: .*" + re.escape(message)):
        jaxconv.conv_transpose(**args)
