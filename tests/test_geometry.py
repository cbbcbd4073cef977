"""Argument validation and geometry: every bad input gets a clear error before computing."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src.geometry import conv_geometry, resolve_padding


def zeros(shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


X = zeros((2, 4, 8, 8))
W = zeros((6, 4, 3, 3))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        # wrong ndim
        (dict(x=zeros((8,))), ValueError, "`x` must be 2-D (H, W), 3-D (one image) or 4-D"),
        (dict(x=zeros((1, 2, 3, 4, 5))), ValueError, "got shape (1, 2, 3, 4, 5)"),
        # x and w ndim mismatch
        (dict(x=zeros((8, 8))), ValueError, "so `w` must be 2-D (kh, kw); got `w` of shape"),
        (dict(w=zeros((3, 3))), ValueError, "so `w` must be 4-D (O, C//groups, kh, kw)"),
        # channel mismatch
        (dict(w=zeros((6, 3, 3, 3))), ValueError, "channel mismatch: `x` of shape (2, 4, 8, 8)"),
        (dict(w=zeros((6, 3, 3, 3))), ValueError, "= 3 × 1 = 3"),
        # groups
        (dict(groups=3), ValueError, "`groups` (=3) must divide the input channels C (=4)"),
        (dict(groups=4), ValueError, "`groups` (=4) must divide the output channels O (=6)"),
        (dict(groups=0), ValueError, "`groups` must be >= 1, got 0"),
        (dict(groups=2.0), TypeError, "`groups` must be an int, got 2.0"),
        # stride / dilation
        (dict(stride=0), ValueError, "`stride` must be >= 1, got 0"),
        (dict(stride=(1, -2)), ValueError, "`stride` must be >= 1, got (1, -2)"),
        (dict(stride=1.5), TypeError, "`stride` must be an int or a pair of ints, got 1.5"),
        (dict(stride=(1, 2, 3)), TypeError, "`stride` must be an int or a pair of ints"),
        (dict(dilation=0), ValueError, "`dilation` must be >= 1, got 0"),
        (dict(dilation="2"), TypeError, "`dilation` must be an int or a pair of ints, got '2'"),
        (dict(stride=True), TypeError, "`stride` must be an int or a pair of ints, got True"),
        # padding
        (
            dict(padding="FULL"),
            ValueError,
            "`padding` must be one of ('VALID', 'SAME', 'SAME_LOWER') (any case), got 'FULL'",
        ),
        (dict(padding=(1, 2, 3)), TypeError, "malformed `padding` (1, 2, 3)"),
        (dict(padding=((1, 2), 3)), TypeError, "malformed `padding` ((1, 2), 3)"),
        (dict(padding=((1, 2, 0), (0, 0))), TypeError, "malformed `padding`"),
        (dict(padding=1.0), TypeError, "malformed `padding` 1.0"),
        # padding that crops more than the input (an input smaller than the kernel is an
        # empty output, as in XLA: tests/test_convolution.py)
        (dict(padding=-5), ValueError, "crops more than the input: the padded input height"),
        (dict(padding=((0, 0), (-4, -5))), ValueError, "width would be -1 (= 8 + -4 + -5)"),
        # layout
        (dict(layout="NCWH"), ValueError, "`layout` must be one of ('NCHW', 'NHWC') (any case)"),
        (dict(layout=None), TypeError, "`layout` must be a string, one of ('NCHW', 'NHWC')"),
        (dict(padding_mode="mirror"), ValueError, "`padding_mode` must be one of"),
        (dict(padding_mode=0), TypeError, "`padding_mode` must be a string"),
        # dtypes: floating, complex or integer, x and w alike (as lax)
        (dict(x=zeros((2, 4, 8, 8), jnp.int32)), TypeError, "same dtype, got int32 and float32"),
        (dict(w=zeros((6, 4, 3, 3), bool)), TypeError, "`w` must have a floating, complex or"),
        (dict(x=zeros((2, 4, 8, 8), jnp.complex64)), TypeError, "got complex64"),
        (dict(w=zeros((6, 4, 3, 3), jnp.float16)), TypeError, "same dtype, got float32"),
        # bias
        (dict(b=zeros((5,))), ValueError, "`b` must have shape (O,) = (6,), got (5,)"),
        (dict(b=zeros((1, 6))), ValueError, "got (1, 6)"),
        (dict(b=zeros((6,), jnp.int32)), TypeError, "`b` of dtype int32 does not fit `x` of"),
        (dict(b=zeros((6,), jnp.complex64)), TypeError, "the bias must be of the same kind"),
        # a kernel without taps (XLA refuses it too)
        (dict(w=zeros((6, 4, 0, 3))), ValueError, "the kernel's spatial sizes must be >= 1"),
        # not arrays
        (dict(x="abc"), TypeError, "`x` must be an array, got str 'abc'"),
        (dict(x=None), TypeError, "`x` must be an array, got NoneType"),
        (dict(w={"w": 1}), TypeError, "`w` must be an array, got dict"),
        (dict(b="bias"), TypeError, "`b` must be an array, got str"),
        (dict(x=[[1.0, 2.0], [3.0]]), TypeError, "`x` is not an array"),
    ],
)
@pytest.mark.parametrize("fn", [jaxconv.conv2d, jaxconv.conv2d_reference])
def test_bad_input_raises_before_computing(fn, kwargs, error, message):
    args, kwargs = dict(x=X, w=W, b=None), dict(kwargs)
    args.update({k: kwargs.pop(k) for k in ("x", "w", "b") if k in kwargs})
    with pytest.raises(error, match=re.escape(message)):
        fn(args["x"], args["w"], args["b"], **kwargs)


def test_messages_start_with_the_function_name():
    with pytest.raises(ValueError, match=r"^conv2d_reference: "):
        jaxconv.conv2d_reference(X, W, stride=0)
    with pytest.raises(ValueError, match=r"^conv2d: "):
        jaxconv.conv2d(X, W, layout="NCWH")


def test_nhwc_messages_show_hwio_form():
    x = zeros((2, 8, 8, 4))
    with pytest.raises(ValueError, match=re.escape("(kh, kw, C//groups, O)")):
        jaxconv.conv2d(x, zeros((3, 3, 3, 6)), layout="NHWC")


def test_grad_functions_validate_g_shape_and_dtype():
    g = zeros((2, 6, 6, 6))
    with pytest.raises(ValueError, match=re.escape("`g` must have the shape (2, 6, 6, 6) of the")):
        jaxconv.conv2d_grad_input(zeros((2, 6, 5, 6)), W, X.shape)
    with pytest.raises(
        ValueError, match=re.escape("(2, 4, 8, 8) and `w_shape` (6, 4, 3, 3), got (2")
    ):
        jaxconv.conv2d_grad_kernel(X, zeros((2, 6, 6, 5)), W.shape)
    with pytest.raises(TypeError, match="`g` and `w` must have the same dtype"):
        jaxconv.conv2d_grad_input(zeros((2, 6, 6, 6), jnp.float16), W, X.shape)
    with pytest.raises(ValueError, match=re.escape("`x_shape` must be 2-D (H, W)")):
        jaxconv.conv2d_grad_input(g, W, (8,))
    with pytest.raises(ValueError, match=re.escape("`g` must be 2-D, 3-D or 4-D")):
        jaxconv.conv2d_grad_bias(zeros((3,)))
    with pytest.raises(TypeError, match="`g` must have a floating, complex or integer dtype"):
        jaxconv.conv2d_grad_bias(zeros((2, 3, 3), bool))


def test_nan_input_is_not_an_error():
    z = jaxconv.conv2d(X.at[0, 0, 0, 0].set(jnp.nan), jnp.ones_like(W))
    assert bool(jnp.isnan(z[0, :, 0, 0]).all()) and bool(jnp.isfinite(z[1]).all())


# --- Padding resolution, by hand. ----------------------------------------------------------


@pytest.mark.parametrize(
    "padding, in_hw, k_dil, stride, expected",
    [
        ("VALID", (5, 5), (3, 3), (1, 1), ((0, 0), (0, 0))),
        # out = ceil(5/1) = 5; total = 4 + 3 − 5 = 2 → (1, 1)
        ("SAME", (5, 5), (3, 3), (1, 1), ((1, 1), (1, 1))),
        # out = ceil(8/2) = 4; total = 3·2 + 3 − 8 = 1 → SAME (0, 1), SAME_LOWER (1, 0)
        ("SAME", (8, 8), (3, 3), (2, 2), ((0, 1), (0, 1))),
        ("SAME_LOWER", (8, 8), (3, 3), (2, 2), ((1, 0), (1, 0))),
        ("same", (8, 8), (3, 3), (2, 2), ((0, 1), (0, 1))),
        # out = ceil(7/3) = 3; total = 2·3 + 5 − 7 = 4 → (2, 2); width: 1 + 1 − 7 < 0 → 0
        ("SAME", (7, 7), (5, 1), (3, 3), ((2, 2), (0, 0))),
        (2, (5, 5), (3, 3), (1, 1), ((2, 2), (2, 2))),
        ((1, 3), (5, 5), (3, 3), (1, 1), ((1, 1), (3, 3))),
        (((-1, 2), (0, 3)), (5, 5), (3, 3), (1, 1), ((-1, 2), (0, 3))),
        (np.int64(1), (5, 5), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ],
)
def test_resolve_padding(padding, in_hw, k_dil, stride, expected):
    assert resolve_padding("op", padding, in_hw, k_dil, stride) == expected


def test_geometry_sizes_by_hand():
    # H: 10 + 1 + 2 = 13 padded; dilated kernel 2·(3−1)+1 = 5; out = (13 − 5)//3 + 1 = 3.
    # W: 7 + 0 + 0 = 7; kernel 2; out = (7 − 2)//2 + 1 = 3.
    geom = conv_geometry(
        "op",
        (4, 6, 10, 7),
        (8, 3, 3, 2),
        stride=(3, 2),
        padding=((1, 2), (0, 0)),
        dilation=(2, 1),
        groups=2,
        layout="NCHW",
    )
    assert geom.out_hw == (3, 3)
    assert geom.padded_size == (13, 7)
    assert geom.dilated_kernel_size == (5, 2)
    assert (geom.in_channels, geom.out_channels, geom.groups) == (6, 8, 2)
    # Tap (a, b) reads padded rows 2a, 2a+3, 2a+6 (extent 7) and columns b, b+2, b+4 (extent 5).
    assert geom.window_extent == (7, 5)
    assert geom.flops == 2 * 8 * 3 * 3 * 3 * 3 * 2
    assert geom.output_shape((4,)) == (4, 8, 3, 3)


def test_geometry_is_hashable_and_static():
    kwargs = dict(stride=1, padding="SAME", dilation=1, groups=1, layout="NHWC")
    a = conv_geometry("op", (1, 5, 5, 2), (3, 3, 2, 4), **kwargs)
    b = conv_geometry("op", (1, 5, 5, 2), (3, 3, 2, 4), **kwargs)
    assert a == b and hash(a) == hash(b)


# --- Shapes that disagree, and the one rule for string arguments (issue: reliability). ------


def test_grad_kernel_compares_the_batch_of_g_with_that_of_x():
    # Depthwise: a g of one image against an x of two once gave a (8, 1, 3, 3) answer.
    with pytest.raises(ValueError, match=re.escape("`g` must have the shape (2, 8, 6, 6) of")):
        jaxconv.conv2d_grad_kernel(
            jnp.ones((2, 8, 8, 8)), jnp.ones((1, 8, 6, 6)), (8, 1, 3, 3), groups=8
        )
    with pytest.raises(ValueError, match=re.escape("got (3, 6, 6, 6)")):
        jaxconv.conv2d_grad_kernel(X, zeros((3, 6, 6, 6)), W.shape)


@pytest.mark.parametrize(
    "x_shape, error, message",
    [
        (
            (5, 4, 8, 8),
            ValueError,
            "`g` must have the shape (5, 6, 6, 6) of the output of the "
            "conv of `x_shape` (5, 4, 8, 8)",
        ),
        ((-1, 4, 8, 8), ValueError, "`x_shape` must have sizes >= 0, got (-1, 4, 8, 8)"),
        (8, TypeError, "`x_shape` must be a tuple of ints, got 8"),
        (None, TypeError, "`x_shape` must be a tuple of ints, got None"),
        ((2, 4, 8.0, 8), TypeError, "`x_shape` must be a tuple of ints, got (2, 4, 8.0, 8)"),
        ((2, 4, True, 8), TypeError, "`x_shape` must be a tuple of ints, got (2, 4, True, 8)"),
        ("2488", TypeError, "`x_shape` must be a tuple of ints, got '2488'"),
    ],
)
def test_grad_input_checks_every_entry_of_x_shape(x_shape, error, message):
    with pytest.raises(error, match=re.escape(message)):
        jaxconv.conv2d_grad_input(jnp.ones((2, 6, 6, 6)), jnp.ones((6, 4, 3, 3)), x_shape)


def test_grad_kernel_checks_w_shape():
    with pytest.raises(TypeError, match=re.escape("`w_shape` must be a tuple of ints, got 3")):
        jaxconv.conv2d_grad_kernel(X, zeros((2, 6, 6, 6)), 3)
    with pytest.raises(ValueError, match=re.escape("`w_shape` must have sizes >= 0")):
        jaxconv.conv2d_grad_kernel(X, zeros((2, 6, 6, 6)), (6, 4, -3, 3))


@pytest.mark.parametrize(
    "fn, args",
    [
        (jaxconv.conv2d_grad_input, ("g", zeros((2, 6, 6, 6)), "w", W)),
        (jaxconv.conv2d_grad_kernel, ("x", X, "g", zeros((2, 6, 6, 6)))),
    ],
)
@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, [[1.0], [2.0, 3.0]]])
def test_non_arrays_are_named_by_every_function(fn, args, bad):
    first, a, second, b = args
    extra = X.shape if fn is jaxconv.conv2d_grad_input else W.shape
    for name, call in ((first, lambda: fn(bad, b, extra)), (second, lambda: fn(a, bad, extra))):
        with pytest.raises(TypeError, match=rf"^{fn.__name__}: `{name}` (must be|is not) an array"):
            call()
    with pytest.raises(TypeError, match=r"^conv_transpose2d: `x` (must be|is not) an array"):
        jaxconv.conv_transpose2d(bad, W)
    with pytest.raises(TypeError, match=r"^conv2d_grad_bias: `g` (must be|is not) an array"):
        jaxconv.conv2d_grad_bias(bad)


def test_every_string_argument_takes_any_case():
    x, w = jnp.arange(2 * 8 * 8 * 4.0).reshape(2, 8, 8, 4), jnp.ones((3, 3, 4, 6))
    canonical = jaxconv.conv2d(x, w, padding="SAME_LOWER", layout="NHWC", padding_mode="reflect")
    for layout, padding, mode, plan in (
        ("nhwc", "same_lower", "Reflect", "AUTO"),
        ("Nhwc", "Same_Lower", "REFLECT", "Plain"),
    ):
        got = jaxconv.conv2d(x, w, padding=padding, layout=layout, padding_mode=mode, plan=plan)
        np.testing.assert_allclose(got, canonical, rtol=1e-6)
    g = jnp.ones((2, 6, 4, 4))
    np.testing.assert_array_equal(jaxconv.conv2d_grad_bias(g, layout="nchw"), [32.0] * 6)
    y = jaxconv.conv_transpose2d(zeros((1, 6, 3, 3)), W, padding_mode="ZEROS", layout="nchw")
    assert y.shape == (1, 4, 5, 5)
    assert jaxconv.conv2d_geometry((1, 4, 8, 8), (6, 4, 3, 3), layout="nchw").layout == "NCHW"
