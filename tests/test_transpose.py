"""conv_transpose2d against a naive scatter-add, XLA's transposed convolution and PyTorch."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import jaxconv
from tests.helpers import LAYOUTS, jit_fast_compile, rel_err, value_and_grads

torch = pytest.importorskip("torch")
F = torch.nn.functional

FWD_TOL = 1e-12
GRAD_TOL = 1e-10


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _to_nchw(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


def _from_nchw(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 2, 3, 1)


def _kernel_to_torch(w, layout):
    """The kernel as PyTorch's (C_in, C_out//groups, kh, kw)."""
    return w if layout == "NCHW" else w.transpose(3, 2, 0, 1)


def _out_shape(x_shape, w_shape, cfg):
    """PyTorch's output shape: H_out = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1."""
    nchw = cfg["layout"] == "NCHW"
    n, _, *hw = x_shape if nchw else (x_shape[0], x_shape[3], *x_shape[1:3])
    _, c_out_g, *khw = w_shape if nchw else (w_shape[3], w_shape[2], *w_shape[:2])
    out_hw = [
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        for i, k, s, p, op, d in zip(
            hw,
            khw,
            *(_pair(cfg[name]) for name in ("stride", "padding", "output_padding", "dilation")),
        )
    ]
    c_out = c_out_g * cfg["groups"]
    return (n, c_out, *out_hw) if nchw else (n, *out_hw, c_out)


def naive_conv_transpose(x, w, b, *, stride, padding, output_padding, dilation, groups, layout):
    """Scatter-add: input pixel x[n, i, j, ci] adds x·w[ci, co, a, b] at output row
    i·sh + a·dh − ph and column j·sw + b·dw − pw, for every tap (a, b); rows past the
    scatter's reach (output_padding > padding) stay zero. Independent of jaxconv."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    (oh, ow), (dh, dw) = _pair(output_padding), _pair(dilation)
    x, w = _to_nchw(x, layout), _kernel_to_torch(w, layout)
    n, c_in, h, wd = x.shape
    _, c_out_g, kh, kw = w.shape
    h_out = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
    w_out = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
    # Canvas row r holds output row r − ph; it is large enough for every tap and for H_out.
    canvas = jnp.zeros(
        (
            n,
            groups * c_out_g,
            (h - 1) * sh + dh * (kh - 1) + 1 + oh,
            (wd - 1) * sw + dw * (kw - 1) + 1 + ow,
        ),
        x.dtype,
    )
    x_g = x.reshape(n, groups, c_in // groups, h, wd)
    w_g = w.reshape(groups, c_in // groups, c_out_g, kh, kw)
    for a in range(kh):
        for bb in range(kw):
            contribution = jnp.einsum("ngchw,gco->ngohw", x_g, w_g[..., a, bb], precision="highest")
            rows = slice(a * dh, a * dh + (h - 1) * sh + 1, sh)
            cols = slice(bb * dw, bb * dw + (wd - 1) * sw + 1, sw)
            canvas = canvas.at[:, :, rows, cols].add(contribution.reshape(n, -1, h, wd))
    y = canvas[:, :, ph : ph + h_out, pw : pw + w_out]
    if b is not None:
        y = y + b[:, None, None]
    return _from_nchw(y, layout)


def xla_conv_transpose(x, w, b, *, stride, padding, output_padding, dilation, groups, layout):
    """`lax.conv_general_dilated` with lhs_dilation = stride, the flipped kernel regrouped to
    (C_out, C_in//groups, kh, kw), and d·(k−1) − p (+ output_padding on the high side) padding."""
    stride, padding = _pair(stride), _pair(padding)
    output_padding, dilation = _pair(output_padding), _pair(dilation)
    wt = _kernel_to_torch(w, layout)
    c_in, c_out_g, kh, kw = wt.shape
    rhs = wt.reshape(groups, c_in // groups, c_out_g, kh, kw).transpose(0, 2, 1, 3, 4)
    rhs = rhs.reshape(groups * c_out_g, c_in // groups, kh, kw)[:, :, ::-1, ::-1]
    pads = [
        (d * (k - 1) - p, d * (k - 1) - p + op)
        for d, k, p, op in zip(dilation, (kh, kw), padding, output_padding)
    ]
    y = lax.conv_general_dilated(
        x,
        rhs,
        (1, 1),
        pads,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=(layout, "OIHW", layout),
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )
    if b is not None:
        y = y + (b[:, None, None] if layout == "NCHW" else b)
    return y


def lax_conv_transpose(x, w, b, *, stride, padding, output_padding, dilation, groups, layout):
    """`lax.conv_transpose(..., transpose_kernel=True)`: groups == 1 only."""
    assert groups == 1
    (kh, kw), dilation = _kernel_to_torch(w, layout).shape[2:], _pair(dilation)
    pads = [
        (d * (k - 1) - p, d * (k - 1) - p + op)
        for d, k, p, op in zip(dilation, (kh, kw), _pair(padding), _pair(output_padding))
    ]
    y = lax.conv_transpose(
        x,
        w,
        _pair(stride),
        pads,
        rhs_dilation=dilation,
        dimension_numbers=(layout, "OIHW" if layout == "NCHW" else "HWIO", layout),
        transpose_kernel=True,
        precision=lax.Precision.HIGHEST,
    )
    if b is not None:
        y = y + (b[:, None, None] if layout == "NCHW" else b)
    return y


def torch_conv_transpose(x, w, b, cot, *, layout, **cfg):
    """PyTorch's forward and autograd gradients (float64, CPU), in `layout`."""
    xt = torch.tensor(np.asarray(_to_nchw(x, layout)), requires_grad=True)
    wt = torch.tensor(np.asarray(_kernel_to_torch(w, layout)), requires_grad=True)
    bt = torch.tensor(np.asarray(b), requires_grad=True)
    y = F.conv_transpose2d(xt, wt, bt, **cfg)
    y.backward(torch.tensor(np.asarray(_to_nchw(cot, layout))))
    dw = wt.grad.numpy() if layout == "NCHW" else wt.grad.numpy().transpose(2, 3, 1, 0)
    grads = (_from_nchw(xt.grad.numpy(), layout), dw, bt.grad.numpy())
    return _from_nchw(y.detach().numpy(), layout), grads


@functools.partial(jit_fast_compile, static_argnames=("cfg", "naive"))
def _jaxconv_and_references(x, w, b, cot, cfg, naive=True):
    """Output and gradients of jaxconv, then of each JAX reference: one compilation."""
    cfg = dict(cfg)
    convs = [jaxconv.conv_transpose2d, xla_conv_transpose]
    if naive:
        convs.append(naive_conv_transpose)
    if naive and cfg["groups"] == 1:
        convs.append(lax_conv_transpose)
    return [value_and_grads(conv, x, w, b, cot, cfg) for conv in convs]


def _operands(seed, batch, c_in, c_out, hw, khw, groups, layout):
    """Normal x, w, b as float64 numpy arrays (no per-shape JAX compilation)."""
    rng = np.random.default_rng(seed)
    (h, wd), (kh, kw) = hw, khw
    if layout == "NCHW":
        x_shape, w_shape = (batch, c_in, h, wd), (c_in, c_out // groups, kh, kw)
    else:
        x_shape, w_shape = (batch, h, wd, c_in), (kh, kw, c_out // groups, c_in)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(c_out)


# (layout, batch, C_in, C_out, (H, W), (kh, kw), stride, padding, output_padding, dilation, groups)
CASES = {
    "basic": ("NCHW", 2, 3, 2, (3, 4), (3, 3), 1, 0, 0, 1, 1),
    "upsample-s2-p1-op1": ("NHWC", 1, 2, 3, (3, 3), (3, 3), 2, 1, 1, 1, 1),
    "stride32-asym": ("NCHW", 2, 2, 2, (2, 3), (2, 3), (3, 2), (1, 0), (2, 1), 1, 1),
    "op-allowed-by-dilation": ("NHWC", 1, 2, 2, (3, 3), (2, 3), 1, (0, 1), (1, 2), (2, 3), 1),
    "op-beyond-padding": ("NCHW", 1, 1, 2, (2, 3), (2, 2), 3, 0, 2, 1, 1),
    "pad-beyond-kernel": ("NHWC", 2, 2, 1, (4, 4), (2, 2), 2, 2, 0, 1, 1),
    "groups2": ("NCHW", 2, 4, 6, (3, 2), (3, 2), 2, 1, 1, (1, 2), 2),
    "depthwise": ("NHWC", 1, 3, 3, (3, 4), (3, 3), 2, 1, 1, 1, 3),
    "depthwise-mult2": ("NCHW", 2, 2, 4, (3, 3), (2, 2), (1, 2), 0, (0, 1), 2, 2),
    "kernel-1x1-stride3": ("NHWC", 1, 2, 3, (2, 2), (1, 1), 3, 0, 2, 1, 1),
    "dil3-stride3": ("NCHW", 1, 2, 2, (2, 2), (3, 2), 3, (2, 1), (2, 0), 3, 1),
}


def _setup(case, seed=0):
    layout, batch, c_in, c_out, hw, khw, stride, padding, op, dilation, groups = CASES[case]
    x, w, b = _operands(seed, batch, c_in, c_out, hw, khw, groups, layout)
    cfg = dict(
        stride=stride,
        padding=padding,
        output_padding=op,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    cot = np.random.default_rng(seed + 1).standard_normal(_out_shape(x.shape, w.shape, cfg))
    return x, w, b, cot, cfg


@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradients_match_naive_xla_and_torch(case):
    x, w, b, cot, cfg = _setup(case)
    (y, grads), *references = _jaxconv_and_references(x, w, b, cot, tuple(cfg.items()))
    assert y.shape == cot.shape and y.dtype == x.dtype
    assert len(references) == (3 if cfg["groups"] == 1 else 2)
    for y_ref, grads_ref in references:
        assert rel_err(y, y_ref) <= FWD_TOL
        for name, m, a in zip("xwb", grads, grads_ref):
            assert m.shape == a.shape, name
            assert rel_err(m, a) <= GRAD_TOL, name
    layout = cfg.pop("layout")
    y_t, grads_t = torch_conv_transpose(x, w, b, cot, layout=layout, **cfg)
    assert rel_err(y, y_t) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_t):
        assert rel_err(m, a) <= GRAD_TOL, name


def test_hand_computed_examples():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    # Stride 2, a 2×2 kernel of ones: every pixel becomes a 2×2 block.
    blocks = jaxconv.conv_transpose2d(x, jnp.ones((2, 2)), stride=2)
    np.testing.assert_array_equal(blocks, np.kron(x, np.ones((2, 2))))
    # One pixel scatters the kernel, (H−1)·s + k = 2 rows; output_padding adds a zero row and
    # column; padding 1 then crops one row/column from each side, leaving [[4]].
    w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    one = jnp.array([[1.0]])
    np.testing.assert_array_equal(jaxconv.conv_transpose2d(one, w, stride=2), w)
    padded = jaxconv.conv_transpose2d(one, w, stride=2, output_padding=1)
    np.testing.assert_array_equal(padded, [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    cropped = jaxconv.conv_transpose2d(one, w, stride=2, padding=1, output_padding=1)
    np.testing.assert_array_equal(cropped, [[4.0]])
    # Overlapping taps add: stride 1 is the full correlation with the rotated kernel.
    full = jaxconv.conv_transpose2d(x, w)
    np.testing.assert_array_equal(full, [[1.0, 4.0, 4.0], [6.0, 20.0, 16.0], [9.0, 24.0, 16.0]])


@pytest.mark.parametrize("case", ["upsample-s2-p1-op1", "op-beyond-padding", "groups2"])
def test_is_the_input_gradient_of_conv2d(case):
    # conv_transpose2d(x, w) = ∂/∂a <x, conv2d(a, w)> with conv2d padding (p, p − op).
    x, w, _, cot, cfg = _setup(case)
    p, op = _pair(cfg.pop("padding")), _pair(cfg.pop("output_padding"))
    conv_cfg = dict(cfg, padding=tuple((pi, pi - oi) for pi, oi in zip(p, op)))
    y = jaxconv.conv_transpose2d(x, w, padding=p, output_padding=op, **cfg)
    assert rel_err(y, jaxconv.conv2d_grad_input(x, w, cot.shape, **conv_cfg)) <= FWD_TOL
    _, vjp = jax.vjp(lambda a: jaxconv.conv2d_xla(a, w, **conv_cfg), jnp.zeros(cot.shape))
    assert rel_err(y, vjp(x)[0]) <= FWD_TOL


# (x, w (C_in, C_out/G, kh, kw), config): zero images, channels or rows.
ZERO_SIZE_CASES = {
    "no-images": ((0, 16, 8, 8), (16, 8, 3, 3), dict(stride=2, padding=1)),
    "no-input-channels": ((2, 0, 5, 5), (0, 4, 3, 3), {}),
    "no-output-channels": ((2, 6, 5, 5), (6, 0, 3, 3), dict(groups=2)),
    "no-rows": ((2, 6, 0, 5), (6, 4, 3, 3), dict(stride=2)),
}


@pytest.mark.parametrize("case", ZERO_SIZE_CASES)
def test_zero_size_is_the_input_gradient_of_xlas_conv(case):
    x_shape, w_shape, cfg = ZERO_SIZE_CASES[case]
    rng = np.random.default_rng(0)
    x, w = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, w_shape))
    b = jnp.asarray(rng.standard_normal(w_shape[1] * cfg.get("groups", 1)))
    y = jaxconv.conv_transpose2d(x, w, b, **cfg)
    p = _pair(cfg.pop("padding", 0))
    conv_cfg = dict(cfg, padding=tuple((pi, pi) for pi in p))
    a = jnp.zeros(y.shape)
    z, vjp = jax.vjp(lambda a, w: jaxconv.conv2d_xla(a, w, **conv_cfg), a, w)
    assert z.shape == x.shape  # y's shape is the input of the conv whose output x is
    along = b[:, None, None]
    np.testing.assert_array_equal(y, jnp.broadcast_to(along, y.shape) + vjp(x)[0])
    cot = jnp.ones(y.shape)
    grads = jax.grad(
        lambda x, w, b: jnp.vdot(cot, jaxconv.conv_transpose2d(x, w, b, **cfg)), (0, 1, 2)
    )(x, w, b)
    _, vjp_x = jax.vjp(lambda x: vjp(x)[0], x)
    assert grads[0].shape == x.shape and rel_err(grads[0], vjp_x(cot)[0]) == 0
    assert grads[1].shape == w.shape and not np.any(grads[1])  # every sum of eq. 30 is empty
    assert rel_err(grads[2], cot.sum(axis=(0, 2, 3))) == 0


@pytest.mark.parametrize("rank", [2, 3])
def test_unbatched_inputs_match_torch(rank):
    # Also the eager public path (no outer jit), gradients included.
    rng = np.random.default_rng(5)
    cfg = dict(stride=2, padding=1, output_padding=1, dilation=2)
    x_shape, w_shape = ((3, 4), (3, 2)) if rank == 2 else ((2, 3, 4), (2, 3, 3, 2))
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(1)
    b = b if rank == 2 else None
    lead = (None, None) if rank == 2 else (None,)
    xt = torch.tensor(x)[lead].requires_grad_()
    wt = torch.tensor(w)[(None, None) if rank == 2 else ()].requires_grad_()
    bt = None if b is None else torch.tensor(b)
    expected = F.conv_transpose2d(xt, wt, bt, **cfg)
    cot = rng.standard_normal(expected.shape)
    expected.backward(torch.tensor(cot))
    cot = cot[0, 0] if rank == 2 else cot[0]
    y, (dx, dw) = (
        jaxconv.conv_transpose2d(x, w, b, **cfg),
        jax.grad(lambda x, w: jnp.vdot(cot, jaxconv.conv_transpose2d(x, w, b, **cfg)), (0, 1))(
            x, w
        ),
    )
    assert y.shape == cot.shape
    assert rel_err(y, expected.detach().numpy().reshape(y.shape)) <= FWD_TOL
    assert rel_err(dx, xt.grad.numpy().reshape(x.shape)) <= GRAD_TOL
    assert rel_err(dw, wt.grad.numpy().reshape(w.shape)) <= GRAD_TOL


def test_second_order_gradients_numerically():
    x, w, b, _, cfg = _setup("upsample-s2-p1-op1")
    check_grads(
        lambda x, w, b: jnp.tanh(jaxconv.conv_transpose2d(x, w, b, **cfg)),
        (x, w, b),
        order=2,
        modes=["rev"],
        eps=1e-6,
        atol=1e-6,
        rtol=1e-6,
    )


def test_float32_matches_float64():
    x, w, b, cot, cfg = _setup("groups2")
    y64, grads64 = value_and_grads(jaxconv.conv_transpose2d, x, w, b, cot, cfg)
    as32 = [a.astype(jnp.float32) for a in (x, w, b, cot)]
    y32, grads32 = value_and_grads(jaxconv.conv_transpose2d, *as32, cfg)
    assert y32.dtype == jnp.float32 and rel_err(y32, y64) <= 1e-5
    for lo, hi in zip(grads32, grads64):
        assert lo.dtype == jnp.float32 and rel_err(lo, hi) <= 1e-5


def test_jit_and_vmap():
    x, w, b, _, cfg = _setup("depthwise-mult2")
    expected = jaxconv.conv_transpose2d(x, w, b, **cfg)
    jitted = jax.jit(lambda x, w, b: jaxconv.conv_transpose2d(x, w, b, **cfg))(x, w, b)
    per_image = jax.vmap(lambda xi: jaxconv.conv_transpose2d(xi[None], w, b, **cfg)[0])(x)
    assert rel_err(jitted, expected) <= FWD_TOL
    assert rel_err(per_image, expected) <= FWD_TOL


# --- The sweep. ----------------------------------------------------------------------------
# Every geometry costs a compilation (~0.3 s on 2 cores) while another data draw for a
# compiled geometry costs milliseconds. So the geometries come from a pool, as many as a
# sixth of the profile's examples (ci: 50, thorough: 500), drawn at random over the whole
# space; hypothesis picks from the pool and draws the data: normal values, or a one-hot
# input or cotangent that checks where each single pixel lands.

GROUP_KINDS = {"one": (1, 2, 3), "two": (2, 4, 2), "depthwise": (3, 3, 3)}  # groups, C_in, C_out


def _random_geometry(seed):
    rng = np.random.default_rng(seed)
    layout = str(rng.choice(["NCHW", "NHWC"]))
    group_kind = str(rng.choice(list(GROUP_KINDS)))
    groups, c_in, c_out = GROUP_KINDS[group_kind]
    if group_kind == "depthwise" and rng.integers(2):
        c_out = 2 * c_in  # a channel multiplier
    batch = int(rng.integers(1, 3))
    axes = []
    for _ in range(2):
        s, d, k, n = (int(v) for v in rng.integers(1, 4, size=4))
        op = int(rng.integers(0, max(s, d)))
        reach = (n - 1) * s + d * (k - 1) + op + 1  # output size with padding 0
        p = int(rng.integers(0, min(2, (reach - 1) // 2) + 1))
        axes.append((n, k, s, d, p, op))
    (h, kh, sh, dh, ph, oh), (wd, kw, sw, dw, pw, ow) = axes
    cfg = (
        ("stride", (sh, sw)),
        ("padding", (ph, pw)),
        ("output_padding", (oh, ow)),
        ("dilation", (dh, dw)),
        ("groups", groups),
        ("layout", layout),
    )
    return (batch, c_in, c_out, (h, wd), (kh, kw)), cfg


POOL = [_random_geometry(seed) for seed in range(max(4, settings().max_examples // 6))]


def test_sweep_pool_covers_the_space():
    if len(POOL) < 30:
        pytest.skip("a small profile's pool")
    cfgs = [dict(cfg) for _, cfg in POOL]
    for name in ("stride", "dilation"):
        assert {v for c in cfgs for v in c[name]} == {1, 2, 3}, name
    assert {v for c in cfgs for v in c["padding"]} == {0, 1, 2}
    assert {v for c in cfgs for v in c["output_padding"]} == {0, 1, 2}
    assert {c["groups"] for c in cfgs} == {1, 2, 3}
    assert {c["layout"] for c in cfgs} == {"NCHW", "NHWC"}
    assert {shapes[0] for shapes, _ in POOL} == {1, 2}


@given(st.sampled_from(POOL), st.sampled_from(["normal", "one-hot x", "one-hot g"]), st.data())
def test_hypothesis_sweep_matches_xla_and_torch(geometry, kind, data):
    (batch, c_in, c_out, hw, khw), cfg_items = geometry
    cfg = dict(cfg_items)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    x, w, b = _operands(seed, batch, c_in, c_out, hw, khw, cfg["groups"], cfg["layout"])
    cot = np.random.default_rng(seed + 1).standard_normal(_out_shape(x.shape, w.shape, cfg))
    if kind == "one-hot x":
        x = np.zeros_like(x)
        x.flat[data.draw(st.integers(0, x.size - 1), label="hot")] = 1.0
    elif kind == "one-hot g":
        cot = np.zeros_like(cot)
        cot.flat[data.draw(st.integers(0, cot.size - 1), label="hot")] = 1.0
    (y, grads), (y_ref, grads_ref) = _jaxconv_and_references(x, w, b, cot, cfg_items, naive=False)
    assert y.shape == y_ref.shape == cot.shape
    assert rel_err(y, y_ref) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_ref):
        assert rel_err(m, a) <= GRAD_TOL, name
    y_t, grads_t = torch_conv_transpose(x, w, b, cot, layout=cfg.pop("layout"), **cfg)
    assert rel_err(y, y_t) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_t):
        assert rel_err(m, a) <= GRAD_TOL, name


# --- Errors. -------------------------------------------------------------------------------

X4 = np.zeros((1, 4, 3, 3))
W4 = np.zeros((4, 2, 3, 3))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(output_padding=1),
            ValueError,
            r"`output_padding` \(1, 1\) must be smaller than "
            r"max\(`stride`, `dilation`\) on each axis; height: output_padding 1, stride 1, "
            r"dilation 1",
        ),
        (
            dict(stride=2, dilation=(1, 3), output_padding=(1, 3)),
            ValueError,
            r"width: output_padding 3, stride 2, dilation 3",
        ),
        (dict(output_padding=-1, stride=2), ValueError, r"`output_padding` must be >= 0, got -1"),
        (dict(padding=-1), ValueError, r"`padding` must be >= 0, got -1"),
        (dict(padding=(0, -2)), ValueError, r"`padding` must be >= 0, got \(0, -2\)"),
        (
            dict(padding="SAME"),
            TypeError,
            r"`padding` must be an int or a pair of ints, got 'SAME'",
        ),
        (
            dict(padding=3),
            ValueError,
            r"`padding` \(3, 3\) crops more than the output has: .* = -1",
        ),
        (dict(stride=0), ValueError, r"`stride` must be >= 1, got 0"),
        (dict(dilation=(1, 0)), ValueError, r"`dilation` must be >= 1, got \(1, 0\)"),
        (dict(groups=0), ValueError, r"`groups` must be >= 1, got 0"),
        (dict(groups=1.5), TypeError, r"`groups` must be an int, got 1.5"),
        (dict(groups=3), ValueError, r"`groups` \(=3\) must divide the input channels C_in \(=4\)"),
        (dict(layout="NCWH"), ValueError, r"`layout` must be one of \('NCHW', 'NHWC'\)"),
        (
            dict(padding_mode="reflect"),
            ValueError,
            r"only `padding_mode`='zeros' is supported .*\(as in PyTorch\), got 'reflect'",
        ),
        (
            dict(w=np.zeros((3, 2, 3, 3))),
            ValueError,
            r"channel mismatch: `x` of shape \(1, 4, 3, 3\) \(NCHW\) has C_in=4 channels, but `w` "
            r"of shape \(3, 2, 3, 3\) \(C_in, C_out//groups, kh, kw\) has C_in=3",
        ),
        (dict(w=np.zeros((4, 2, 3))), ValueError, r"so `w` must be 4-D \(C_in, C_out//groups"),
        (dict(x=np.zeros((1, 1, 4, 3, 3))), ValueError, r"`x` must be 2-D \(H, W\), 3-D"),
        (dict(w=np.zeros((4, 2, 0, 3))), ValueError, r"the kernel's spatial sizes must be >= 1"),
        (dict(b=np.zeros(4)), ValueError, r"`b` must have shape \(C_out,\) = \(2,\)"),
        (dict(w=W4.astype(np.float32)), TypeError, r"`x` and `w` must have the same dtype"),
        (
            dict(x=X4.astype(np.int32)),
            TypeError,
            r"`x` and `w` must have the same dtype, got int32",
        ),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, error, match):
    args = dict(x=X4, w=W4, b=None)
    for name in ("x", "w", "b"):
        if name in kwargs:
            args[name] = kwargs.pop(name)
    with pytest.raises(error, match=match):
        jaxconv.conv_transpose2d(args["x"], args["w"], args["b"], **kwargs)


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 3), (3, 2)])
def test_output_padding_limit_is_pytorchs(stride, dilation):
    x, w = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
    largest = max(stride, dilation) - 1
    cfg = dict(stride=stride, dilation=dilation)
    y = jaxconv.conv_transpose2d(x, w, output_padding=largest, **cfg)
    expected = F.conv_transpose2d(torch.tensor(x), torch.tensor(w), output_padding=largest, **cfg)
    assert rel_err(y, expected.numpy()) <= FWD_TOL
    with pytest.raises(RuntimeError, match="output padding must be smaller"):
        F.conv_transpose2d(torch.tensor(x), torch.tensor(w), output_padding=largest + 1, **cfg)
    with pytest.raises(ValueError, match="`output_padding`"):
        jaxconv.conv_transpose2d(x, w, output_padding=largest + 1, **cfg)


# --- One and three spatial axes: conv_transpose1d and conv_transpose3d against PyTorch. -----

TRANSPOSE_ND = {
    # (rank, batch, C_in, C_out//groups, in_size, k, stride, padding, output_padding,
    #  dilation, groups)
    "1d-upsample": (1, 2, 4, 3, (7,), (4,), 2, 1, 1, 1, 1),
    "1d-vocoder-like": (1, 1, 6, 2, (5,), (8,), 4, 2, 0, 1, 2),
    "1d-dilated-depthwise": (1, 2, 3, 1, (6,), (3,), 1, 2, 0, 2, 3),
    "3d-stride2": (3, 1, 4, 2, (3, 4, 3), (4, 2, 3), 2, 1, (1, 0, 1), 1, 1),
    "3d-mixed": (3, 2, 4, 1, (2, 3, 3), (2, 3, 2), (1, 2, 3), (0, 1, 1), (0, 1, 2), (2, 1, 1), 2),
}
TORCH_TRANSPOSE = {1: F.conv_transpose1d, 3: F.conv_transpose3d}
ND_FUNCTIONS = {1: jaxconv.conv_transpose1d, 3: jaxconv.conv_transpose3d}


def _torch_transpose_nd(x, w, b, cot, cfg, rank):
    """PyTorch's value and gradients (float64), channels-first operands as NumPy arrays."""
    tensors = [torch.tensor(np.asarray(a), requires_grad=True) for a in (x, w, b)]
    kwargs = {k: cfg[k] for k in ("stride", "padding", "output_padding", "dilation", "groups")}
    y = TORCH_TRANSPOSE[rank](*tensors, **kwargs)
    (y * torch.tensor(np.asarray(cot))).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", TRANSPOSE_ND)
def test_one_and_three_axes_match_torch(case, channels_last):
    rank, n, c_in, c_out_g, size, k, stride, padding, out_pad, dilation, groups = TRANSPOSE_ND[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal((n, c_in, *size))
    w = rng.standard_normal((c_in, c_out_g, *k))
    b = rng.standard_normal((c_out_g * groups,))
    cfg = dict(
        stride=stride, padding=padding, output_padding=out_pad, dilation=dilation, groups=groups
    )
    y_torch = TORCH_TRANSPOSE[rank](
        *(torch.tensor(a) for a in (x, w, b)),
        **{k_: v for k_, v in cfg.items()},
    ).numpy()
    cot = rng.standard_normal(y_torch.shape)
    y_expected, grads_expected = _torch_transpose_nd(x, w, b, cot, cfg, rank)
    move = (0, *range(2, rank + 2), 1)  # channels last
    kernel_move = (*range(2, rank + 2), 1, 0)
    if channels_last:
        x, cot = x.transpose(move), cot.transpose(move)
        w = w.transpose(kernel_move)
        y_expected = y_expected.transpose(move)
        grads_expected = [
            grads_expected[0].transpose(move),
            grads_expected[1].transpose(kernel_move),
            grads_expected[2],
        ]
    layout = LAYOUTS[rank][channels_last]
    fn = functools.partial(ND_FUNCTIONS[rank], layout=layout, **cfg)
    xs, ws, bs = (jnp.asarray(a) for a in (x, w, b))
    y, vjp = jax.vjp(fn, xs, ws, bs)
    assert y.shape == y_expected.shape
    assert rel_err(y, y_expected) <= FWD_TOL
    for name, got, expected in zip("xwb", vjp(jnp.asarray(cot)), grads_expected):
        assert rel_err(got, expected) <= GRAD_TOL, name


@pytest.mark.parametrize("rank, x_size, k", [(1, (11,), (3,)), (3, (5, 6, 4), (3, 2, 2))])
def test_one_and_three_axes_are_the_input_gradient_of_the_convolution(rank, x_size, k):
    # conv_transpose{1,3}d(g, w) = ∂L/∂X of conv{1,3}d with the same kernel, read OI*.
    rng = np.random.default_rng(rank)
    x = jnp.asarray(rng.standard_normal((2, 3, *x_size)))
    w = jnp.asarray(rng.standard_normal((4, 3, *k)))
    conv = {1: jaxconv.conv1d, 3: jaxconv.conv3d}[rank]
    z, vjp = jax.vjp(lambda x: conv(x, w, stride=2, padding=1), x)
    g = jnp.asarray(rng.standard_normal(z.shape))
    # The rows a strided conv never reaches come back as output_padding.
    extra = tuple(n + 2 - (kk - 1) - 1 - (m - 1) * 2 for n, kk, m in zip(x_size, k, z.shape[2:]))
    y = ND_FUNCTIONS[rank](g, w, stride=2, padding=1, output_padding=extra)
    assert rel_err(y, vjp(g)[0]) <= GRAD_TOL


def test_one_and_three_axes_name_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("so `w` must be 3-D (C_in, C_out//groups, kw)")):
        jaxconv.conv_transpose1d(jnp.ones((2, 3, 5)), jnp.ones((3, 2, 2, 2)))
    with pytest.raises(ValueError, match=re.escape("`output_padding` (2, 0, 0) must be smaller")):
        jaxconv.conv_transpose3d(
            jnp.ones((1, 2, 3, 3, 3)), jnp.ones((2, 1, 2, 2, 2)), stride=2, output_padding=(2, 0, 0)
        )
    with pytest.raises(ValueError, match=re.escape("`layout` must be one of ('NCDHW', 'NDHWC')")):
        jaxconv.conv_transpose3d(
            jnp.ones((1, 2, 3, 3, 3)), jnp.ones((2, 1, 2, 2, 2)), layout="NCHW"
        )
