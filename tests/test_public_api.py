"""The public API on arbitrary input: a named error before computing, or XLA's own result.

Hypothesis draws calls of every public function with shapes that often disagree, zero-size
dimensions and wrong Python types. Each call either raises a ValueError or TypeError whose
message starts with the function's name and names an argument in backticks, or returns what
XLA's convolution gives for the same call, values and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import jaxconv
from tests.helpers import rel_err

TOL = 1e-10
BAD = st.sampled_from([1.5, "2", None, True, (1, 2, 3), [1, None]])


def _pair(low, high):
    ints = st.integers(low, high)
    return st.one_of(ints, st.tuples(ints, ints))


_PADDING = st.one_of(
    st.sampled_from(["VALID", "same", "Same_Lower"]),
    st.integers(-2, 3),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(*[st.tuples(st.integers(-2, 2), st.integers(-2, 2))] * 2),
)
# One call in four gets a value of the wrong kind for one argument.
_FAULTS = {
    "stride": st.one_of(BAD, st.just(0)),
    "dilation": st.one_of(BAD, st.just(-1)),
    "groups": st.one_of(BAD, st.just(0)),
    "padding": st.one_of(BAD, st.just("full")),
    "layout": st.sampled_from(["NCWH", None, 4]),
}


@st.composite
def _calls(draw):
    """(function name, x-like, w-like, b, config, extra) with sizes 0–5, often inconsistent."""
    fn = draw(st.sampled_from(["conv2d", "conv2d_grad_input", "conv2d_grad_kernel", "transpose"]))
    groups = draw(st.sampled_from([1, 2]))
    n, h, w = (draw(st.sampled_from(v)) for v in ([0, 1, 2], [0, 1, 3, 6], [1, 4]))
    kh, kw = draw(st.sampled_from([1, 2, 3, 1, 2, 3, 0])), draw(st.sampled_from([1, 2, 3]))
    if draw(st.integers(0, 2)):  # channels that agree, two calls in three; zero ones too
        c_w, o = draw(st.sampled_from([0, 1, 2])), groups * draw(st.sampled_from([0, 1, 2]))
        c = groups * c_w if fn != "transpose" else o  # a transposed conv's x has w's C_in
    else:
        c, c_w, o = (draw(st.sampled_from([0, 1, 2, 3])) for _ in range(3))
    layout = draw(st.sampled_from(["NCHW", "NHWC", "nhwc", "Nchw"]))
    nhwc = layout.upper() == "NHWC"
    x_shape = (n, h, w, c) if nhwc else (n, c, h, w)
    w_shape = (kh, kw, c_w, o) if nhwc else (o, c_w, kh, kw)
    if draw(st.booleans()):  # one image
        x_shape = x_shape[1:]
    cfg = dict(
        stride=draw(_pair(1, 2)),
        dilation=draw(_pair(1, 2)),
        groups=groups,
        layout=layout,
    )
    if fn == "transpose":
        cfg["padding"] = draw(st.integers(0, 2))
        cfg["output_padding"] = draw(st.integers(0, 1))
    else:
        cfg["padding"] = draw(_PADDING)
    if draw(st.integers(0, 3)) == 0:
        fault = draw(st.sampled_from(sorted(_FAULTS)))
        cfg[fault] = draw(_FAULTS[fault])
    b_size = c_w * groups if fn == "transpose" else o
    b = draw(st.sampled_from([None, (b_size,), None, (b_size,), (b_size + 1,), "bias"]))
    extra = "right"  # g of the right shape, and x_shape or w_shape as they are
    if draw(st.integers(0, 3)) == 0:
        extra = draw(st.one_of(st.just("wrong"), BAD))
    return fn, x_shape, w_shape, b, cfg, extra


def _array(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _xla_output_shape(x_shape, w_shape, cfg):
    def conv(x, w):
        return jaxconv.conv2d_xla(x, w, **cfg)

    try:
        with np.errstate(divide="ignore"):  # XLA's shape rule on a stride of 0
            return jax.eval_shape(
                conv, *(jax.ShapeDtypeStruct(s, jnp.float64) for s in (x_shape, w_shape))
            ).shape
    except Exception:  # XLA refuses it too; jaxconv must then raise its own named error
        return (1, 1, 1, 1)


def _assert_named_error(op, error):
    event(f"{op}: named error")
    message = str(error)
    assert isinstance(error, (ValueError, TypeError)), (type(error), message)
    assert message.startswith(f"{op}: ") and "`" in message, message


def _check_conv2d(x, w, b, cfg, seed):
    try:
        z = jaxconv.conv2d(x, w, b, **cfg)
    except (ValueError, TypeError) as error:
        return _assert_named_error("conv2d", error)
    event("conv2d: computed" + (" (empty)" if z.size == 0 else ""))
    z_xla = jaxconv.conv2d_xla(x, w, b, **cfg)
    assert z.shape == z_xla.shape and rel_err(z, z_xla) <= TOL
    cot = _array(z.shape, seed)
    args = (x, w) if b is None else (x, w, b)

    def grads(conv):
        return jax.grad(lambda *a: jnp.vdot(cot, conv(*a[:2], *a[2:], **cfg)), range(len(args)))(
            *args
        )

    for got, expected in zip(grads(jaxconv.conv2d), grads(jaxconv.conv2d_xla)):
        assert got.shape == expected.shape and rel_err(got, expected) <= TOL


def _check_grad(fn, operand, g, shape, cfg):
    """conv2d_grad_input(g, w, x_shape) or conv2d_grad_kernel(x, g, w_shape) against jax.vjp
    of XLA's convolution with respect to its input or kernel, at zeros of `shape`."""
    op = fn.__name__
    by_input = fn is jaxconv.conv2d_grad_input

    def forward(a):
        return jaxconv.conv2d_xla(*((a, operand) if by_input else (operand, a)), **cfg)

    try:
        got = fn(*((g, operand) if by_input else (operand, g)), shape, **cfg)
    except (ValueError, TypeError) as error:
        return _assert_named_error(op, error)
    event(f"{op}: computed")
    expected = jax.vjp(forward, jnp.zeros(shape))[1](g)[0]
    assert got.shape == expected.shape and rel_err(got, expected) <= TOL


def _check_transpose(x, w, b, cfg):
    try:
        y = jaxconv.conv_transpose2d(x, w, b, **cfg)
    except (ValueError, TypeError) as error:
        return _assert_named_error("conv_transpose2d", error)
    event("conv_transpose2d: computed")
    # The input gradient of the conv whose input has y's shape, padding (p, p − op).
    p, op = cfg.pop("padding"), cfg.pop("output_padding")
    p = (p, p) if isinstance(p, int) else p
    conv_cfg = dict(cfg, padding=tuple((pi, pi - op) for pi in p))
    _, vjp = jax.vjp(lambda a: jaxconv.conv2d_xla(a, w, **conv_cfg), jnp.zeros(y.shape))
    expected = vjp(x)[0]
    if b is not None:
        nchw = cfg["layout"].upper() == "NCHW"
        expected = expected + (b[:, None, None] if nchw else b)
    assert y.shape == expected.shape and rel_err(y, expected) <= TOL


@pytest.mark.slow
@given(_calls(), st.integers(0, 2**31 - 1))
def test_every_call_raises_a_named_error_or_matches_xla(call, seed):
    fn, x_shape, w_shape, b_shape, cfg, extra = call
    x, w = _array(x_shape, seed), _array(w_shape, seed + 1)
    b = _array(b_shape, seed + 2) if isinstance(b_shape, tuple) else b_shape
    if fn == "conv2d":
        _check_conv2d(x, w, b, cfg, seed)
    elif fn == "transpose":
        _check_transpose(x, w, b, cfg)
    else:
        z_shape = _xla_output_shape(x_shape, w_shape, cfg)
        g = _array(z_shape if extra == "right" else (z_shape[0] + 1, *z_shape[1:]), seed + 3)
        shape = x_shape if fn == "conv2d_grad_input" else w_shape
        shape = shape if extra in ("right", "wrong") else extra
        if fn == "conv2d_grad_input":
            _check_grad(jaxconv.conv2d_grad_input, w, g, shape, cfg)
        else:
            _check_grad(jaxconv.conv2d_grad_kernel, x, g, shape, cfg)
