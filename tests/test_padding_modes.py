"""Padding modes of conv2d against naive numpy padding, PyTorch and the naive reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxconv
from jaxconv._src import geometry as geo
from jaxconv._src import padding_modes as pm
from tests.helpers import LAYOUTS, jit_fast_compile, operand_shapes, rel_err, value_and_grads

torch = pytest.importorskip("torch")
F = torch.nn.functional

FWD_TOL = 1e-12
GRAD_TOL = 1e-10
MODES = ("reflect", "replicate", "circular")


def naive_source(i: int, n: int, mode: str) -> int:
    """The input index that padded position i (input coordinates, −lo <= i < n + hi) copies."""
    if 0 <= i < n:
        return i
    if mode == "replicate":
        return 0 if i < 0 else n - 1
    if mode == "circular":  # wraps around at most once
        return i + n if i < 0 else i - n
    if mode == "reflect":  # mirror about the edge, which is not repeated
        return -i if i < 0 else 2 * (n - 1) - i
    raise AssertionError(mode)


def naive_pad(x: np.ndarray, pads, mode: str, axes) -> np.ndarray:
    """Pads `x` along `axes` by copying, one output row and then one column at a time."""
    for axis, (lo, hi) in zip(axes, pads):
        n = x.shape[axis]
        rows = [np.take(x, [naive_source(i, n, mode)], axis=axis) for i in range(-lo, n + hi)]
        x = np.concatenate(rows, axis=axis)
    return x


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def explicit_pads(padding, in_hw, khw, stride, dilation):
    """((lo_h, hi_h), (lo_w, hi_w)), with "SAME"/"SAME_LOWER" written out as in `jax.lax`."""
    if isinstance(padding, str):
        pads = []
        for n, k, s, d in zip(in_hw, khw, _pair(stride), _pair(dilation)):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if padding == "SAME" else (large, small))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    if isinstance(padding[0], int):
        return tuple((p, p) for p in padding)
    return tuple(tuple(p) for p in padding)


def torch_padded_conv(x, w, b, cot, *, stride, padding, dilation, groups, layout, padding_mode):
    """F.pad(mode) then F.conv2d, float64 on CPU, and autograd's gradients, in `layout`."""
    nchw = layout == "NCHW"
    x_t = torch.tensor(x if nchw else x.transpose(0, 3, 1, 2), requires_grad=True)
    w_t = torch.tensor(w if nchw else w.transpose(3, 2, 0, 1), requires_grad=True)
    b_t = torch.tensor(b, requires_grad=True)
    khw = tuple(w_t.shape[2:])
    (lo_h, hi_h), (lo_w, hi_w) = explicit_pads(padding, x_t.shape[2:], khw, stride, dilation)
    padded = F.pad(x_t, (lo_w, hi_w, lo_h, hi_h), mode=padding_mode)
    z = F.conv2d(padded, w_t, b_t, stride=stride, dilation=dilation, groups=groups)
    z.backward(torch.tensor(cot if nchw else cot.transpose(0, 3, 1, 2)))
    dx, dw, z = x_t.grad.numpy(), w_t.grad.numpy(), z.detach().numpy()
    if not nchw:
        dx, dw, z = dx.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0), z.transpose(0, 2, 3, 1)
    return z, (dx, dw, b_t.grad.numpy())


@functools.partial(jit_fast_compile, static_argnames=("cfg", "reference"))
def _jaxconv_and_reference(x, w, b, cot, cfg, reference=True):
    """conv2d's output and gradients (and the naive reference's): one compilation."""
    convs = (jaxconv.conv2d, jaxconv.conv2d_reference) if reference else (jaxconv.conv2d,)
    return [value_and_grads(conv, x, w, b, cot, dict(cfg)) for conv in convs]


def _operands(seed, x_shape, w_shape, o):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(o)


def _out_shape(x, w, cfg):
    """conv2d's output shape, traced, not computed."""
    return jax.eval_shape(lambda x, w: jaxconv.conv2d(x, w, **cfg), x, w).shape


def _check_against_torch(x, w, b, cot, cfg, z, grads):
    z_t, grads_t = torch_padded_conv(x, w, b, cot, **cfg)
    assert z.shape == z_t.shape
    assert rel_err(z, z_t) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_t):
        assert m.shape == a.shape, name
        assert rel_err(m, a) <= GRAD_TOL, name


# --- The padding itself. -----------------------------------------------------------------------


PAD_CASES = [
    ((3, 4), ((1, 0), (2, 3))),
    ((2, 3), ((1, 1), (0, 2))),  # reflect's limit: each side < the size
    ((2, 3), ((2, 2), (3, 0))),  # circular's limit: each side <= the size
    ((1, 2), ((4, 0), (1, 5))),  # replicate: no limit
    ((3, 3), ((0, 0), (0, 0))),
]
LIMIT = {"reflect": -1, "circular": 0, "replicate": 99}  # largest padding − input size


@pytest.mark.parametrize(
    "mode, hw, pads",
    [
        (mode, hw, pads)
        for mode in MODES
        for hw, pads in PAD_CASES
        if all(max(p) <= n + LIMIT[mode] for n, p in zip(hw, pads))
    ],
)
def test_padding_matches_naive_numpy_and_torch(mode, hw, pads):
    x = np.random.default_rng(0).standard_normal((2, 3, *hw))  # NCHW
    expected = naive_pad(x, pads, mode, axes=(2, 3))
    (lo_h, hi_h), (lo_w, hi_w) = pads
    by_torch = F.pad(torch.tensor(x), (lo_w, hi_w, lo_h, hi_h), mode=mode).numpy()
    np.testing.assert_array_equal(by_torch, expected)
    geom = geo.conv_geometry(
        "t", x.shape, (1, 3, 1, 1), stride=1, padding=pads, dilation=1, groups=1, layout="NCHW"
    )
    np.testing.assert_array_equal(pm.pad_input(jnp.asarray(x), geom, mode), expected)
    rows = pm.source_indices(hw[0], lo_h, hi_h, mode)
    cols = pm.source_indices(hw[1], lo_w, hi_w, mode)
    np.testing.assert_array_equal(x[:, :, rows[:, None], cols[None, :]], expected)


def test_padding_gradient_folds_back_onto_the_copied_positions():
    # Reflect-padding [a, b, c] by 2 on each side gives [c, b, a, b, c, b, a]: with ∂L/∂(padded)
    # = 1, 2, ..., 7, ∂L/∂a = 3 + 7, ∂L/∂b = 2 + 4 + 6, ∂L/∂c = 1 + 5.
    x = jnp.array([[1.0, 2.0, 3.0]])
    w = jnp.ones((1, 1))
    g = jnp.arange(1.0, 8.0)[None]
    for conv in (jaxconv.conv2d, jaxconv.conv2d_reference):
        dx = jax.grad(
            lambda x, conv=conv: jnp.vdot(
                g, conv(x, w, padding=((0, 0), (2, 2)), padding_mode="reflect")
            )
        )(x)
        np.testing.assert_array_equal(dx, [[10.0, 12.0, 6.0]])


# --- conv2d with a padding mode. ---------------------------------------------------------------

# (layout, batch, C, O, (H, W), (kh, kw), stride, padding, dilation, groups)
CASES = {
    "int-pad": ("NCHW", 2, 2, 3, (4, 5), (3, 3), 1, 1, 1, 1),
    "asym-stride2-dil": ("NHWC", 1, 2, 2, (5, 4), (2, 3), 2, ((2, 1), (0, 3)), (2, 1), 1),
    "same-groups2": ("NCHW", 2, 4, 2, (3, 4), (3, 2), 1, "SAME", (1, 2), 2),
    "same-lower-depthwise": ("NHWC", 1, 3, 3, (4, 4), (2, 2), 2, "SAME_LOWER", 1, 3),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_torch_and_reference(case, mode):
    layout, batch, c, o, hw, khw, stride, padding, dilation, groups = CASES[case]
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=khw, groups=groups, layout=layout
    )
    x, w, b = _operands(0, x_shape, w_shape, o)
    cfg = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        padding_mode=mode,
    )
    cot = np.random.default_rng(1).standard_normal(_out_shape(x, w, cfg))
    (z, grads), (z_ref, grads_ref) = _jaxconv_and_reference(x, w, b, cot, tuple(cfg.items()))
    assert rel_err(z, z_ref) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_ref):
        assert rel_err(m, a) <= GRAD_TOL, name
    _check_against_torch(x, w, b, cot, cfg, z, grads)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", ("zeros", *MODES))
def test_same_padding_matches_torch_conv2d_module(mode):
    # An even, dilated kernel: total padding 3 is split (1, 2), as both jax.lax and torch do.
    conv_t = torch.nn.Conv2d(2, 3, (4, 2), padding="same", dilation=(1, 2), padding_mode=mode)
    conv_t = conv_t.double()
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 6))
    x_t = torch.tensor(x, requires_grad=True)
    z_t = conv_t(x_t)
    z_t.sum().backward()
    w, b = conv_t.weight.detach().numpy(), conv_t.bias.detach().numpy()
    cfg = dict(padding="SAME", dilation=(1, 2), padding_mode=mode)
    z = jaxconv.conv2d(x, w, b, **cfg)
    dx, dw = jax.grad(lambda x, w: jnp.sum(jaxconv.conv2d(x, w, b, **cfg)), (0, 1))(x, w)
    assert rel_err(z, z_t.detach().numpy()) <= FWD_TOL
    assert rel_err(dx, x_t.grad.numpy()) <= GRAD_TOL
    assert rel_err(dw, conv_t.weight.grad.numpy()) <= GRAD_TOL


def test_zeros_is_the_default_and_may_crop():
    x, w, b = _operands(3, (1, 2, 4, 4), (2, 2, 2, 2), 2)
    cfg = dict(padding=((-1, 2), (1, 0)))
    expected = jaxconv.conv2d(x, w, b, **cfg)
    assert rel_err(jaxconv.conv2d(x, w, b, padding_mode="zeros", **cfg), expected) == 0.0
    assert rel_err(jaxconv.conv2d_reference(x, w, b, padding_mode="zeros", **cfg), expected) < 1e-12


# --- Limits and errors. ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_padding_limits_match_pytorch(mode, side):
    # The widest padding PyTorch accepts on one side works and agrees; one more is rejected
    # by both. replicate has no limit: a padding far wider than the input.
    x = np.random.default_rng(4).standard_normal((1, 1, 2, 3))
    w = np.ones((1, 1, 1, 1))
    axis, n = ("height", 2) if side in ("top", "bottom") else ("width", 3)
    widest = n + LIMIT[mode] if mode != "replicate" else n + 4

    def paddings(width):
        """The one-sided padding as jaxconv's ((lo_h, hi_h), (lo_w, hi_w)) and torch's."""
        ours = {
            "top": ((width, 0), (0, 0)),
            "bottom": ((0, width), (0, 0)),
            "left": ((0, 0), (width, 0)),
            "right": ((0, 0), (0, width)),
        }[side]
        (lo_h, hi_h), (lo_w, hi_w) = ours
        return ours, (lo_w, hi_w, lo_h, hi_h)

    ours, theirs = paddings(widest)
    expected = F.pad(torch.tensor(x), theirs, mode=mode).numpy()
    for conv in (jaxconv.conv2d, jaxconv.conv2d_reference):
        np.testing.assert_array_equal(conv(x, w, padding=ours, padding_mode=mode), expected)
    if mode == "replicate":
        return
    ours, theirs = paddings(widest + 1)
    with pytest.raises(RuntimeError, match="Padding"):
        F.pad(torch.tensor(x), theirs, mode=mode)
    match = {
        "reflect": rf"'reflect' needs padding smaller than the input on each side .* {axis}",
        "circular": rf"'circular' wraps around at most once.* {axis} padding",
    }[mode]
    for conv in (jaxconv.conv2d, jaxconv.conv2d_reference):
        with pytest.raises(ValueError, match=match):
            conv(x, w, padding=ours, padding_mode=mode)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_unbatched_input_matches_torch(layout):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 2, 2, 2))  # (C, H, W), OIHW
    expected = F.conv2d(
        F.pad(torch.tensor(x)[None], (2, 1, 1, 2), mode="circular"), torch.tensor(w)
    )
    if layout == "NHWC":
        x, w = x.transpose(1, 2, 0), w.transpose(2, 3, 1, 0)
    z = jaxconv.conv2d(x, w, padding=((1, 2), (2, 1)), layout=layout, padding_mode="circular")
    z = z if layout == "NCHW" else z.transpose(2, 0, 1)
    assert rel_err(z, expected[0].numpy()) <= FWD_TOL


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(padding=((1, -1), (0, 0)), padding_mode="reflect"),
            r"conv2d: `padding_mode`='reflect' needs non-negative padding, got height padding "
            r"\(1, -1\)",
        ),
        (
            dict(padding=((0, 0), (-2, 1)), padding_mode="circular"),
            r"`padding_mode`='circular' needs non-negative padding, got width padding \(-2, 1\)",
        ),
        (dict(padding_mode="wrap"), r"`padding_mode` must be one of \('zeros', 'reflect', "),
        (dict(padding_mode="Reflection"), r"`padding_mode` must be one of .* \(any case\), got"),
        (
            dict(padding=3, padding_mode="reflect"),
            r"'reflect' needs padding smaller than the input on each side \(as in PyTorch\); "
            r"height padding \(3, 3\) but input height 3",
        ),
        (
            dict(padding=((0, 0), (0, 5)), padding_mode="circular"),
            r"width padding \(0, 5\) but input width 4",
        ),
    ],
)
def test_invalid_padding_modes_raise_clear_errors(kwargs, match):
    x, w = np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 1, 1))
    for conv in (jaxconv.conv2d, jaxconv.conv2d_reference):
        with pytest.raises(ValueError, match=match.replace("conv2d:", f"{conv.__name__}:")):
            conv(x, w, **kwargs)


# --- The sweep. --------------------------------------------------------------------------------
# As in test_transpose: each geometry is a compilation (~0.3 s), each data draw milliseconds,
# so hypothesis picks from a pool of geometries (a tenth of the profile's examples, drawn
# over the whole space) and draws the data.


def _random_geometry(seed):
    rng = np.random.default_rng(seed)
    mode = str(rng.choice(MODES))
    layout = str(rng.choice(["NCHW", "NHWC"]))
    groups, c, o = [(1, 2, 3), (2, 4, 2), (3, 3, 6)][rng.integers(3)]
    khw = tuple(int(k) for k in rng.integers(1, 4, size=2))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
    form = str(rng.choice(["SAME", "SAME_LOWER", "int", "explicit"]))
    limit = min(LIMIT[mode], 2)
    hw = []
    for k, d in zip(khw, dilation):
        hw.append(int(rng.integers(max(1, d * (k - 1) + 1 - 4), 6)))
    if form == "int":
        padding = int(rng.integers(0, min(hw) + limit + 1))
    elif form == "explicit":
        padding = tuple(tuple(int(v) for v in rng.integers(0, n + limit + 1, size=2)) for n in hw)
    else:
        padding = form
    pads = explicit_pads(padding, hw, khw, stride, dilation)
    too_wide = any(max(p) > n + limit for n, p in zip(hw, pads))
    too_small = any(
        n + lo + hi < d * (k - 1) + 1 for n, (lo, hi), k, d in zip(hw, pads, khw, dilation)
    )
    if too_wide or too_small:
        return _random_geometry(seed + 10_000)
    cfg = (
        ("stride", stride),
        ("padding", padding),
        ("dilation", dilation),
        ("groups", groups),
        ("layout", layout),
        ("padding_mode", mode),
    )
    return (int(rng.integers(1, 3)), c, o, tuple(hw), khw), cfg


POOL = [_random_geometry(seed) for seed in range(max(3, settings().max_examples // 10))]


def test_sweep_pool_covers_the_space():
    if len(POOL) < 30:
        pytest.skip("a small profile's pool")
    cfgs = [dict(cfg) for _, cfg in POOL]
    assert {c["padding_mode"] for c in cfgs} == set(MODES)
    assert {c["layout"] for c in cfgs} == {"NCHW", "NHWC"}
    assert {c["groups"] for c in cfgs} == {1, 2, 3}
    assert {v for c in cfgs for v in c["stride"]} == {1, 2, 3}
    assert {c["padding"] for c in cfgs if isinstance(c["padding"], str)} == {"SAME", "SAME_LOWER"}


@given(st.sampled_from(POOL), st.booleans(), st.data())
def test_hypothesis_sweep_matches_torch(geometry, one_hot, data):
    (batch, c, o, hw, khw), cfg_items = geometry
    cfg = dict(cfg_items)
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=khw, groups=cfg["groups"], layout=cfg["layout"]
    )
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    x, w, b = _operands(seed, x_shape, w_shape, o)
    if one_hot:  # a single input pixel: where do its copies land?
        x = np.zeros_like(x)
        x.flat[data.draw(st.integers(0, x.size - 1), label="hot")] = 1.0
    cot = np.random.default_rng(seed + 1).standard_normal(_out_shape(x, w, cfg))
    [(z, grads)] = _jaxconv_and_reference(x, w, b, cot, cfg_items, reference=False)
    _check_against_torch(x, w, b, cot, cfg, z, grads)


# --- One and three spatial axes. -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "rank, size, k, padding, channels_last",
    [
        (1, (7,), (3,), 2, False),
        (1, (6,), (4,), ((3, 0),), True),  # a causal border
        (3, (4, 5, 3), (3, 2, 2), (1, 2, 1), False),
        (3, (3, 4, 4), (2, 3, 3), ((1, 0), (2, 1), (0, 2)), True),
    ],
)
def test_modes_of_one_and_three_axes_match_naive_padding_and_torch(
    rank, size, k, padding, channels_last, mode
):
    layout = LAYOUTS[rank][channels_last]
    rng = np.random.default_rng(rank)
    x_cf = rng.standard_normal((2, 3, *size))
    w_cf = rng.standard_normal((4, 3, *k))
    pads = geo.resolve_padding("t", padding, size, k, (1,) * rank)
    padded = naive_pad(x_cf, pads, mode, range(2, rank + 2))
    expected = F.conv1d if rank == 1 else F.conv3d
    z_torch = expected(torch.tensor(padded), torch.tensor(w_cf)).numpy()
    move = (0, *range(2, rank + 2), 1)
    x = x_cf.transpose(move) if channels_last else x_cf
    w = w_cf.transpose((*range(2, rank + 2), 1, 0)) if channels_last else w_cf
    fn = {1: jaxconv.conv1d, 3: jaxconv.conv3d}[rank]
    cfg = dict(padding=padding, layout=layout, padding_mode=mode)
    cot = rng.standard_normal(z_torch.shape)
    cot = jnp.asarray(cot.transpose(move) if channels_last else cot)
    reference = functools.partial(jaxconv.conv_reference, **cfg)

    @jit_fast_compile
    def both(x, w):
        return [
            (conv(x, w), jax.grad(lambda x, w, c=conv: jnp.vdot(cot, c(x, w)), (0, 1))(x, w))
            for conv in (functools.partial(fn, **cfg), reference)
        ]

    (z, grads), (_, naive) = both(jnp.asarray(x), jnp.asarray(w))
    assert rel_err(z, z_torch.transpose(move) if channels_last else z_torch) <= FWD_TOL
    for ours, expected in zip(grads, naive):
        assert rel_err(ours, expected) <= GRAD_TOL


def test_modes_of_every_rank_check_the_padding_per_axis():
    with pytest.raises(
        ValueError, match=r"'reflect' needs padding smaller .* depth padding \(3, 3\)"
    ):
        jaxconv.conv3d(
            jnp.ones((1, 1, 3, 5, 5)),
            jnp.ones((1, 1, 1, 1, 1)),
            padding=(3, 1, 1),
            padding_mode="reflect",
        )
