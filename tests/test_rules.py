"""rules.py, the hand-derived rules as written: the seed's worked example by hand, XLA's own
convolution differentiated by JAX, and the adjoint identities that make them gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from jaxconv._src import rules
from jaxconv._src.geometry import conv_geometry
from tests.helpers import (
    ALL_CASES,
    LAYOUTS,
    ND_CASES,
    case_operands,
    conv_configs,
    geometry_of,
    jit_fast_compile,
    lax_conv,
    lax_conv2d,
    loops,
    nd_case_operands,
    nd_conv_configs,
    nd_geometry,
    random_operands,
    rel_err,
)

TOL = 1e-12


def _seed_geometry(x_hw, k_hw):
    return geometry_of(jnp.zeros(x_hw), jnp.zeros(k_hw), dict(layout="NHWC"))


def _as_nhwc(a):
    return jnp.asarray(a, jnp.float64)[None, :, :, None]


def _as_hwio(w):
    return jnp.asarray(w, jnp.float64)[:, :, None, None]


def test_seed_worked_example_forward_exactly():
    # Eqs. 2–5: W 2×2, X 3×3, Z 2×2, z[r, c] = Σ_{a, b} x[r + a, c + b]·w[a, b]; with the
    # integers x[i, j] = 3i + j and w = [[1, 2], [3, 4]]:
    # z00 = 1·0 + 2·1 + 3·3 + 4·4 = 27, z01 = 1·1 + 2·2 + 3·4 + 4·5 = 37 (eq. 3:
    # w00·x01 + w01·x02 + w10·x11 + w11·x12), z10 = 1·3 + 2·4 + 3·6 + 4·7 = 57, z11 = 67.
    x = np.arange(9.0).reshape(3, 3)
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    z = rules.forward(_as_nhwc(x), _as_hwio(w), _seed_geometry((3, 3), (2, 2)))
    np.testing.assert_array_equal(z[0, :, :, 0], [[27, 37], [57, 67]])


def test_seed_worked_example_gradients_exactly():
    # ∂L/∂Z = g = [[1, 2], [3, 4]]. Eq. 10: ∂L/∂w00 = g00·x00 + g01·x01 + g10·x10 + g11·x11
    # = 0 + 2 + 9 + 16 = 27; eq. 8 for each (a', b'): ∂L/∂w[a', b'] = Σ_{r, c} g[r, c]·x[r + a',
    # c + b'] = 27 + 10·(3a' + b') (Σ g = 10): [[27, 37], [57, 67]].
    # ∂L/∂x[i, j] = Σ_{a, b} g[i − a, j − b]·w[a, b] (the full correlation with rot180(W)):
    # x00: g00·w00 = 1; x01: g01·w00 + g00·w01 = 2 + 2 = 4; x02: g01·w01 = 4;
    # x10: g10·w00 + g00·w10 = 3 + 3 = 6; x11: g11·w00 + g10·w01 + g01·w10 + g00·w11 =
    # 4 + 6 + 6 + 4 = 20; x12: g11·w01 + g01·w11 = 8 + 8 = 16; x20: g10·w10 = 9;
    # x21: g11·w10 + g10·w11 = 12 + 12 = 24; x22: g11·w11 = 16.
    x = np.arange(9.0).reshape(3, 3)
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = np.array([[1.0, 2.0], [3.0, 4.0]])
    geom = _seed_geometry((3, 3), (2, 2))
    dw = rules.grad_kernel(_as_nhwc(x), _as_nhwc(g), geom)
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[27, 37], [57, 67]])
    dx = rules.grad_input(_as_nhwc(g), _as_hwio(w), geom)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 4, 4], [6, 20, 16], [9, 24, 16]])
    np.testing.assert_array_equal(rules.grad_bias(_as_nhwc(g)), [10.0])


def test_kernel_gradient_sums_over_outputs_not_over_the_kernel():
    # X 4×4 (x[i, j] = 4i + j), W 2×2: Z is 3×3, so the sums of eq. 8 run over 3×3 outputs;
    # the seed's printed bounds (r, c < k = 2) would sum a 2×2 corner. With g = ones:
    # ∂L/∂w[a, b] = Σ_{r, c < 3} 4(r + a) + (c + b) = 9(4a + b) + 45, where the slip gives
    # 4(4a + b) + 10.
    x = np.arange(16.0).reshape(4, 4)
    dw = rules.grad_kernel(_as_nhwc(x), _as_nhwc(np.ones((3, 3))), _seed_geometry((4, 4), (2, 2)))
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[45, 54], [81, 90]])


def test_window_and_its_adjoint_by_hand():
    # One axis of eqs. 19–20: H = 10, a tap at 1, stride 3, Ho = 3: S x = (x1, x4, x7) and
    # Sᵀ g = (0, g0, 0, 0, g1, 0, 0, g2, 0, 0).
    x = jnp.arange(10.0).reshape(1, 10, 1, 1)
    geom = geometry_of(x, jnp.zeros((2, 1, 1, 1)), dict(stride=(3, 1), layout="NHWC"))
    assert geom.out_hw == (3, 1)
    x_pad = rules.pad(x, geom.padding)
    np.testing.assert_array_equal(rules.window(x_pad, (1, 0), geom)[0, :, 0, 0], [1, 4, 7])
    g = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    placed = rules.windows_adjoint([((1, 0), g)], geom)
    np.testing.assert_array_equal(placed[0, :, 0, 0], [0, 1, 0, 0, 2, 0, 0, 3, 0, 0])


@functools.cache
def _rules_and_xla(geom):
    """One compiled program: the rules and `jax.vjp` of XLA's convolution, channels-last."""
    cfg = dict(
        stride=geom.stride,
        padding=geom.padding,
        dilation=geom.dilation,
        groups=geom.groups,
        layout="NHWC",
    )

    @jit_fast_compile
    def both(x, w, g):
        z, vjp = jax.vjp(lambda x, w: lax_conv2d(x, w, **cfg), x, w)
        ours = (
            rules.forward(x, w, geom),
            rules.grad_input(g, w, geom),
            rules.grad_kernel(x, g, geom),
            rules.grad_bias(g),
        )
        return ours, (z, *vjp(g), jnp.sum(g, axis=(0, 1, 2)))

    return both


def _assert_rules_match_xla(x, w, geom, seed=1):
    z_shape = (geom.batch, *geom.out_hw, geom.out_channels)
    g = jnp.asarray(np.random.default_rng(seed).standard_normal(z_shape))
    ours, xla = _rules_and_xla(geom)(x, w, g)
    for name, a, e in zip(("Z", "dX", "dW", "db"), ours, xla):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert rel_err(a, e) <= TOL, name


@pytest.mark.parametrize("case", ALL_CASES)
def test_rules_match_vjp_of_xla(case):
    x, w, _, cfg = case_operands(case, "NHWC")
    _assert_rules_match_xla(x, w, geometry_of(x, w, cfg))


@pytest.mark.slow
@given(conv_configs(), st.integers(0, 2**31 - 1))
def test_hypothesis_rules_match_vjp_of_xla(config, seed):
    (x_shape, w_shape), o, cfg = config
    if cfg["layout"] == "NCHW":  # the rules are channels-last: the same sizes, moved
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    x, w, _ = random_operands(seed, x_shape, w_shape, o, bias=False)
    _assert_rules_match_xla(x, w, geometry_of(x, w, dict(cfg, layout="NHWC")), seed + 1)


@pytest.mark.parametrize("case", ALL_CASES)
def test_adjoint_identities(case):
    # The rules are the adjoints of the forward, linear in X and in W:
    # ⟨G, F_W(X)⟩ = ⟨∂X-rule(G, W), X⟩ = ⟨∂W-rule(X, G), W⟩.
    x, w, _, cfg = case_operands(case, "NHWC", seed=2)
    geom = geometry_of(x, w, cfg)
    z_shape = (geom.batch, *geom.out_hw, geom.out_channels)
    g = jnp.asarray(np.random.default_rng(3).standard_normal(z_shape))
    b = jnp.arange(1.0, geom.out_channels + 1)

    @jit_fast_compile
    def products(x, w, g, b):
        z = rules.forward(x, w, geom)
        return (
            jnp.vdot(g, z),
            jnp.vdot(rules.grad_input(g, w, geom), x),
            jnp.vdot(rules.grad_kernel(x, g, geom), w),
            jnp.vdot(g, z + b) - jnp.vdot(g, z),  # the bias: ⟨G, Z + b⟩ − ⟨G, Z⟩ = ⟨∂b-rule(G), b⟩
            jnp.vdot(rules.grad_bias(g), b),
            jnp.linalg.norm(g) * jnp.linalg.norm(z),  # |⟨G, Z⟩| ≤ ‖G‖‖Z‖
        )

    forward, by_input, by_kernel, by_bias, bias_rule, scale = products(x, w, g, b)
    assert abs(forward - by_input) <= TOL * scale
    assert abs(forward - by_kernel) <= TOL * scale
    assert abs(by_bias - bias_rule) <= TOL * scale


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    x, w, _, cfg = case_operands("basic", "NHWC", dtype=np.float32)
    geom = geometry_of(x, w, cfg)
    g = jnp.ones((geom.batch, *geom.out_hw, geom.out_channels), dtype)
    low = x.astype(dtype), w.astype(dtype)
    assert rules.accumulation_dtype(dtype) == jnp.float32
    assert rules.forward(*low, geom).dtype == jnp.float32
    assert rules.grad_input(g, low[1], geom).dtype == jnp.float32
    assert rules.grad_kernel(low[0], g, geom).dtype == jnp.float32
    assert rules.grad_bias(g).dtype == jnp.float32
    expected = rules.forward(*(a.astype(jnp.float32) for a in low), geom)
    assert rel_err(rules.forward(*low, geom), expected) <= 1e-6  # the same products, in f32


@pytest.mark.parametrize("input_dilation", [(2, 2), (3, 1), (1, 2)])
def test_rules_with_an_input_dilation_match_vjp_of_xla(input_dilation):
    # Eq. 38: the padding operator dilates the input first; its adjoint keeps every l-th entry.
    rng = np.random.default_rng(sum(input_dilation))
    x, w = (
        jnp.asarray(rng.standard_normal((2, 5, 4, 3))),
        jnp.asarray(rng.standard_normal((3, 2, 3, 4))),
    )
    padding = ((1, 2), (-1, 1))
    geom = conv_geometry(
        "t",
        x.shape,
        w.shape,
        stride=(2, 1),
        padding=padding,
        dilation=(1, 2),
        groups=1,
        layout="NHWC",
        input_dilation=input_dilation,
    )
    dims = ("NHWC", "HWIO", "NHWC")

    def xla(x, w):
        return lax.conv_general_dilated(
            x, w, (2, 1), padding, input_dilation, (1, 2), dims, precision="highest"
        )

    z, vjp = jax.vjp(xla, x, w)
    g = jnp.asarray(rng.standard_normal(z.shape))
    dx, dw = vjp(g)
    assert rel_err(rules.forward(x, w, geom), z) <= TOL
    assert rel_err(rules.grad_input(g, w, geom), dx) <= TOL
    assert rel_err(rules.grad_kernel(x, g, geom), dw) <= TOL


# --- Every rank: the same rules for 1, 2 and 3 spatial axes. --------------------------------


def test_one_dimensional_example_by_hand():
    # x = (0, 1, 2, 3), w = (1, 2): z_r = x_r + 2·x_{r+1} = (2, 5, 8). With g = ones:
    # ∂L/∂w_a = Σ_r x_{r+a} = (0+1+2, 1+2+3) = (3, 6); ∂L/∂x_j = Σ_a w_a [0 <= j − a < 3]
    # = (1, 1 + 2, 1 + 2, 2) = (1, 3, 3, 2).
    x = jnp.arange(4.0).reshape(1, 4, 1)
    w = jnp.array([1.0, 2.0]).reshape(2, 1, 1)
    geom = nd_geometry(x, w, dict(layout="NWC"))
    np.testing.assert_array_equal(rules.forward(x, w, geom)[0, :, 0], [2, 5, 8])
    g = jnp.ones((1, 3, 1))
    np.testing.assert_array_equal(rules.grad_kernel(x, g, geom)[:, 0, 0], [3, 6])
    np.testing.assert_array_equal(rules.grad_input(g, w, geom)[0, :, 0], [1, 3, 3, 2])


def test_three_dimensional_example_by_hand():
    # x[i, j, l] = 4·(2i + j) + l on a 2×2×4 grid, a 2×2×2 kernel of ones, stride 2 along the
    # last axis: one output depth and row, z_c = Σ_{a,b,e} x[a, b, 2c + e]
    # = Σ_{a,b} (8(2a + b) + 4c + 1) = 8·6 + 16c + 4 = (52, 68). With g = ones,
    # ∂L/∂w[a, b, e] = Σ_c x[a, b, 2c + e] = 8(2a + b) + 2e + 2.
    x = jnp.arange(16.0).reshape(1, 2, 2, 4, 1)
    w = jnp.ones((2, 2, 2, 1, 1))
    geom = nd_geometry(x, w, dict(stride=(1, 1, 2), layout="NDHWC"))
    assert geom.out_size == (1, 1, 2)
    np.testing.assert_array_equal(rules.forward(x, w, geom)[0, 0, 0, :, 0], [52, 68])
    dw = rules.grad_kernel(x, jnp.ones((1, 1, 1, 2, 1)), geom)[..., 0, 0]
    a, b, e = np.meshgrid(*map(np.arange, (2, 2, 2)), indexing="ij")
    np.testing.assert_array_equal(dw, 8 * (2 * a + b) + 2 * e + 2)


@functools.cache
def _rules_and_xla_nd(geom):
    """`_rules_and_xla` for any rank: the rules and `jax.vjp` of lax, channels-last."""
    cfg = dict(
        stride=geom.stride,
        padding=geom.padding,
        dilation=geom.dilation,
        groups=geom.groups,
        layout=geom.layout,
    )

    @jit_fast_compile
    def both(x, w, g):
        z, vjp = jax.vjp(lambda x, w: lax_conv(x, w, **cfg), x, w)
        ours = (
            rules.forward(x, w, geom),
            rules.grad_input(g, w, geom),
            rules.grad_kernel(x, g, geom),
            rules.grad_bias(g),
        )
        return ours, (z, *vjp(g), jnp.sum(g, axis=tuple(range(g.ndim - 1))))

    return both


def _channels_last_operands(case, seed=0):
    x, w, _, cfg = nd_case_operands(case, channels_last=True, seed=seed)
    return x, w, nd_geometry(x, w, cfg)


def _assert_nd_rules_match_xla(x, w, geom, seed=1, rules_=rules):
    z_shape = (geom.batch, *geom.out_size, geom.out_channels)
    g = jnp.asarray(np.random.default_rng(seed).standard_normal(z_shape))
    if rules_ is rules:
        ours, xla = _rules_and_xla_nd(geom)(x, w, g)
    else:  # a mutant of the rules, traced op by op
        ours = (rules_.forward(x, w, geom), rules_.grad_input(g, w, geom))
        ours += (rules_.grad_kernel(x, g, geom), rules.grad_bias(g))
        xla = _rules_and_xla_nd(geom)(x, w, g)[1]
    for name, a, e in zip(("Z", "dX", "dW", "db"), ours, xla):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert rel_err(a, e) <= TOL, name


@pytest.mark.parametrize("case", ND_CASES)
def test_rules_of_every_rank_match_vjp_of_xla(case):
    _assert_nd_rules_match_xla(*_channels_last_operands(case))


@pytest.mark.parametrize("case", [c for c in ND_CASES if not c.endswith("chunks")])
def test_rules_of_one_and_three_axes_equal_naive_loops(case):
    x, w, geom = _channels_last_operands(case, seed=4)
    z_shape = (geom.batch, *geom.out_size, geom.out_channels)
    g = np.random.default_rng(5).standard_normal(z_shape)
    z, dx, dw = loops(x, w, g, geom.stride, geom.padding, geom.dilation, geom.groups)
    assert rel_err(rules.forward(x, w, geom), z) <= TOL
    assert rel_err(rules.grad_input(jnp.asarray(g), w, geom), dx) <= TOL
    assert rel_err(rules.grad_kernel(x, jnp.asarray(g), geom), dw) <= TOL


# A third of the profile's examples (40 in CI): a 3-D draw compiles its k³ taps; the fixed
# cases above cover the boundary shapes of every rank.
@settings(max_examples=settings.default.max_examples // 3)
@given(nd_conv_configs(), st.integers(0, 2**31 - 1))
def test_hypothesis_rules_of_a_drawn_rank_match_vjp_of_xla(config, seed):
    (x_shape, w_shape), o, cfg = config
    layout = LAYOUTS[len(x_shape) - 2][1]  # the rules are channels-last: the same sizes, moved
    if cfg["layout"] != layout:
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    x, w, _ = random_operands(seed, x_shape, w_shape, o, bias=False)
    _assert_nd_rules_match_xla(x, w, nd_geometry(x, w, dict(cfg, layout=layout)), seed + 1)


@pytest.mark.parametrize("case", ["1d-basic", "3d-dil-groups2"])
def test_adjoint_identities_of_every_rank(case):
    x, w, geom = _channels_last_operands(case, seed=2)
    z = rules.forward(x, w, geom)
    g = jnp.asarray(np.random.default_rng(3).standard_normal(z.shape))
    scale = jnp.linalg.norm(g) * jnp.linalg.norm(z)
    assert abs(jnp.vdot(g, z) - jnp.vdot(rules.grad_input(g, w, geom), x)) <= TOL * scale
    assert abs(jnp.vdot(g, z) - jnp.vdot(rules.grad_kernel(x, g, geom), w)) <= TOL * scale


def _dropped_last_tap(w):
    """The kernel with its last tap zero: what each rule computes if its sum skips that tap."""
    return w.at[(-1,) * (w.ndim - 2)].set(0)


def _tap_axes_swapped(w):
    """The kernel read along the wrong axes: its last two spatial axes exchanged (in 1-D, its
    one axis mirrored: a convolution where the rule is a correlation)."""
    return jnp.flip(w, 0) if w.ndim == 3 else jnp.swapaxes(w, w.ndim - 4, w.ndim - 3)


class _Mutant:
    """rules.py's rules with one mistake: `mistake` applied to the kernel each rule reads
    (forward, ∂L/∂X) or to the kernel gradient it returns."""

    def __init__(self, mistake):
        self.forward = lambda x, w, geom: rules.forward(x, mistake(w), geom)
        self.grad_input = lambda g, w, geom: rules.grad_input(g, mistake(w), geom)
        self.grad_kernel = lambda x, g, geom: mistake(rules.grad_kernel(x, g, geom))


@pytest.mark.parametrize("mistake", [_dropped_last_tap, _tap_axes_swapped])
@pytest.mark.parametrize("case", ["1d-basic", "basic", "3d-basic"])
def test_a_dropped_tap_or_a_wrong_axis_fails_in_every_rank(case, mistake):
    # The checks above are not blind: the rules with one tap missing, or with taps read along
    # the wrong axis, disagree with XLA in every rank, in every one of the three rules.
    if case in ND_CASES:
        x, w, geom = _channels_last_operands(case)
    else:
        x, w, _, cfg = case_operands(case, "NHWC")
        geom = geometry_of(x, w, cfg)
    assert geom.kernel_size[-2:] in ((3,), (3, 3), (2, 2))  # swapped axes keep the shape
    with pytest.raises(AssertionError, match="Z"):
        _assert_nd_rules_match_xla(x, w, geom, rules_=_Mutant(mistake))
    for name in ("grad_input", "grad_kernel"):
        one_wrong = _Mutant(lambda w: w)
        setattr(one_wrong, name, getattr(_Mutant(mistake), name))
        with pytest.raises(AssertionError, match={"grad_input": "dX", "grad_kernel": "dW"}[name]):
            _assert_nd_rules_match_xla(x, w, geom, rules_=one_wrong)
