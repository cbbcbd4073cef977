"""conv2d and its hand-derived rules against XLA, the naive reference and finite differences."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxconv
from jaxconv._src import conv as conv_impl
from jaxconv._src import geometry
from tests.helpers import (
    jit_fast_compile,
    lax_conv2d,
    loss_grads,
    operand_shapes,
    random_operands,
    rel_err,
)

FWD_TOL = 1e-12
GRAD_TOL = 1e-10

# (batch, C, O, (H, W), (kh, kw), stride, padding, dilation, groups)
CASES = {
    "basic": (2, 3, 4, (7, 6), (3, 3), 1, "VALID", 1, 1),
    "stride2-same": (1, 2, 3, (8, 7), (3, 2), 2, "SAME", 1, 1),
    "stride3-same-lower-dil2": (3, 2, 2, (9, 10), (2, 3), (3, 1), "SAME_LOWER", (2, 1), 1),
    "int-pad-dil3": (1, 1, 2, (5, 6), (3, 3), 1, 2, 3, 1),
    "pair-pad-stride13": (2, 2, 2, (6, 9), (2, 2), (1, 3), (1, 2), 1, 1),
    "asym-pad-groups2": (2, 4, 6, (5, 7), (3, 3), 2, ((2, 0), (0, 3)), 1, 2),
    "negative-pad": (2, 2, 3, (8, 8), (3, 2), 2, ((-1, 2), (1, -2)), (1, 2), 1),
    "depthwise-mult2": (2, 4, 8, (9, 8), (3, 3), 2, "SAME", 1, 4),
    "depthwise-dil3": (1, 3, 3, (11, 13), (3, 3), 3, "SAME", 3, 3),
    "kernel-fills-padded": (2, 2, 3, (4, 5), (6, 5), 1, ((1, 1), (0, 0)), 1, 1),
    "kernel-1x1-stride3": (3, 5, 2, (7, 4), (1, 1), 3, "VALID", 2, 1),
    "tall-kernel-dil2-stride2": (1, 2, 4, (12, 5), (4, 1), 2, ((0, 1), (2, 2)), (2, 3), 2),
}


def _setup(case, layout, rank=4, dtype=np.float64, seed=0):
    batch, c, o, hw, khw, stride, padding, dilation, groups = CASES[case]
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=khw, groups=groups, layout=layout, rank=rank
    )
    x, w, b = random_operands(seed, x_shape, w_shape, o if rank > 2 else 1, dtype)
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    return x, w, b, cfg


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_xla_and_reference(case, layout):
    x, w, b, cfg = _setup(case, layout)
    z = jaxconv.conv2d(x, w, b, **cfg)
    z_lax = lax_conv2d(x, w, b, **cfg)
    assert z.shape == z_lax.shape and z.dtype == x.dtype
    assert rel_err(z, z_lax) <= FWD_TOL
    assert rel_err(jaxconv.conv2d_reference(x, w, b, **cfg), z_lax) <= FWD_TOL


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_autodiff_of_reference_and_xla(case, layout):
    x, w, b, cfg = _setup(case, layout)
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(lax_conv2d(x, w, b, **cfg).shape))
    manual = loss_grads(jaxconv.conv2d, x, w, b, cot, **cfg)
    for reference in (jaxconv.conv2d_reference, lax_conv2d):
        auto = loss_grads(reference, x, w, b, cot, **cfg)
        for name, m, a in zip("xwb", manual, auto):
            assert m.shape == a.shape, name
            assert rel_err(m, a) <= GRAD_TOL, (name, reference.__name__)


@pytest.mark.parametrize("rank", [2, 3])
def test_unbatched_inputs(rank):
    # rank 2: the seed's single image, single channel case; rank 3: one image.
    case = "pair-pad-stride13" if rank == 3 else "int-pad-dil3"
    x, w, b, cfg = _setup(case, "NCHW", rank=rank)
    z = jaxconv.conv2d(x, w, b, **cfg)
    assert z.ndim == rank
    assert rel_err(z, lax_conv2d(x, w, b, **cfg)) <= FWD_TOL
    cot = jnp.ones_like(z)
    for m, a in zip(
        loss_grads(jaxconv.conv2d, x, w, b, cot, **cfg), loss_grads(lax_conv2d, x, w, b, cot, **cfg)
    ):
        assert m.shape == a.shape
        assert rel_err(m, a) <= GRAD_TOL


@st.composite
def conv_configs(draw):
    """A valid configuration: every padding form, stride/dilation 1–3, groups, layouts."""
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    group_kind = draw(st.sampled_from(["one", "two", "depthwise"]))
    c_per_group = draw(st.integers(1, 2))
    groups = {"one": 1, "two": 2, "depthwise": draw(st.integers(2, 3))}[group_kind]
    c = c_per_group * groups if group_kind != "depthwise" else groups
    o = draw(st.integers(1, 2)) * groups
    khw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilated = [d * (k - 1) + 1 for d, k in zip(dilation, khw)]
    form = draw(st.sampled_from(["VALID", "SAME", "SAME_LOWER", "int", "pair", "explicit"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
        pads = [(padding, padding)] * 2
    elif form == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pads = [(p, p) for p in padding]
    elif form == "explicit":
        padding = tuple((draw(st.integers(-2, 3)), draw(st.integers(-2, 3))) for _ in range(2))
        pads = list(padding)
    else:
        padding, pads = form, [(0, 0)] * 2  # SAME never empties the output
    hw = []
    for k_dil, (lo, hi) in zip(dilated, pads):
        smallest = 1 if form.startswith("SAME") else max(1, k_dil - lo - hi, -lo - hi + 1)
        hw.append(draw(st.integers(smallest, smallest + 6)))
    batch = draw(st.integers(1, 3))
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    shapes = operand_shapes(
        batch=batch, c=c, o=o, hw=tuple(hw), khw=khw, groups=groups, layout=layout
    )
    return shapes, o, cfg


@given(conv_configs(), st.integers(0, 2**31 - 1))
def test_hypothesis_gradients_match_xla(config, seed):
    _assert_example_matches_xla(config, seed)


def _assert_example_matches_xla(config, seed):
    """A drawn configuration: value and gradients of jaxconv and XLA."""
    (x_shape, w_shape), o, cfg = config
    x, w, b = random_operands(seed, x_shape, w_shape, o)
    _assert_value_and_grads_match_xla(x, w, b, cfg, cot_seed=seed + 1)


@pytest.mark.parametrize("case", ["stride3-same-lower-dil2", "negative-pad", "depthwise-mult2"])
def test_second_order_gradients_numerically(case):
    x, w, b, cfg = _setup(case, "NHWC")
    check_grads(
        lambda x, w, b: jnp.tanh(jaxconv.conv2d(x, w, b, **cfg)),
        (x, w, b),
        order=2,
        modes=["rev"],
        eps=1e-6,
        atol=1e-6,
        rtol=1e-6,
    )


@pytest.mark.parametrize("case", ["asym-pad-groups2", "tall-kernel-dil2-stride2"])
def test_float32_matches_float64(case):
    x, w, b, cfg = _setup(case, "NCHW")
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(lax_conv2d(x, w, b, **cfg).shape))
    exact = loss_grads(lax_conv2d, x, w, b, cot, **cfg)
    as32 = [a.astype(jnp.float32) for a in (x, w, b, cot)]
    single = loss_grads(jaxconv.conv2d, *as32[:3], as32[3], **cfg)
    assert rel_err(jaxconv.conv2d(*as32[:3], **cfg), lax_conv2d(x, w, b, **cfg)) <= 1e-5
    for s, e in zip(single, exact):
        assert s.dtype == jnp.float32
        assert rel_err(s, e) <= 1e-5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", ["stride3-same-lower-dil2", "negative-pad", "depthwise-mult2"])
def test_public_grad_functions_match_vjp_of_xla(case, layout):
    x, w, b, cfg = _setup(case, layout)
    z, vjp = jax.vjp(lambda x, w, b: lax_conv2d(x, w, b, **cfg), x, w, b)
    g = jnp.asarray(np.random.default_rng(3).standard_normal(z.shape))
    dx, dw, db = vjp(g)
    assert rel_err(jaxconv.conv2d_grad_input(g, w, x.shape, **cfg), dx) <= GRAD_TOL
    assert rel_err(jaxconv.conv2d_grad_kernel(x, g, w.shape, **cfg), dw) <= GRAD_TOL
    assert rel_err(jaxconv.conv2d_grad_bias(g, layout=layout), db) <= GRAD_TOL


def _assert_grad_of_grad_matches_xla(x, w, b, cfg):
    """Gradients of |∂/∂x Σ sin(conv(x, w, b))|² w.r.t. (x, w): jaxconv's rules vs XLA's."""

    def inner_norm(conv):
        def f(x, w):
            gx = jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w, b, **cfg))))(x)
            return jnp.sum(gx**2)

        return jax.grad(f, argnums=(0, 1))(x, w)

    for m, a in zip(inner_norm(jaxconv.conv2d), inner_norm(lax_conv2d)):
        assert rel_err(m, a) <= GRAD_TOL


def _assert_value_and_grads_match_xla(x, w, b, cfg, cot_seed=4):
    """Value and x/w/b gradients of jaxconv and XLA, compiled together as one program."""
    z_shape = jax.eval_shape(lambda: lax_conv2d(x, w, b, **cfg)).shape
    cot = jnp.asarray(np.random.default_rng(cot_seed).standard_normal(z_shape))

    @jit_fast_compile  # one compilation per call instead of one per primitive
    def forward_and_grads(x, w, b, cot):
        return [
            (conv(x, w, b, **cfg), loss_grads(conv, x, w, b, cot, **cfg))
            for conv in (jaxconv.conv2d, lax_conv2d)
        ]

    (z, manual), (z_lax, auto) = forward_and_grads(x, w, b, cot)
    assert z.shape == z_lax.shape and rel_err(z, z_lax) <= FWD_TOL
    for name, m, a in zip("xwb", manual, auto):
        assert m.shape == a.shape and rel_err(m, a) <= GRAD_TOL, name


# --- The two evaluations of each rule (conv._is_shallow) ----------------------------------
# Most CASES are shallow (kh·kw·C/G <= 36) and take the fused / whole-batch forms; these
# force every case through the GEMM forms (their ∂L/∂W as one contraction over all taps, as
# these depths take it, and per kernel row, as deeper ones do), and every one through the
# shallow forms. (Cases with C/G = 1 are always shallow or depthwise.)
@pytest.fixture(params=["gemm", "gemm-by-rows", "shallow"])
def forced_form(request, monkeypatch):
    depth = 10**6 if request.param == "shallow" else 0
    monkeypatch.setattr(conv_impl, "_SHALLOW_MAX_DEPTH", depth)
    if request.param == "gemm-by-rows":
        monkeypatch.setattr(conv_impl, "_KERNEL_GRAD_ONE_GEMM_MAX_DEPTH", 0)
    jax.clear_caches()  # the depths are read when a program is traced
    yield request.param
    jax.clear_caches()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_both_forms_match_xla(case, layout, forced_form):
    _assert_value_and_grads_match_xla(*_setup(case, layout))


def test_forms_are_chosen_by_depth():
    def geom(c, o, groups, khw=(3, 3), stride=1, dilation=1):
        return geometry.conv_geometry(
            "test",
            (1, c, 9, 9),
            (o, c // groups, *khw),
            stride=stride,
            padding="VALID",
            dilation=dilation,
            groups=groups,
            layout="NCHW",
        )

    assert conv_impl._is_shallow(geom(4, 8, 1))  # 36 terms
    assert not conv_impl._is_shallow(geom(5, 8, 1))  # 45
    assert conv_impl._is_shallow(geom(8, 8, 2))  # 36 per group
    assert conv_impl._is_shallow(geom(8, 8, 8, khw=(7, 7)))  # depthwise, 49 terms
    assert conv_impl._is_depthwise(geom(8, 16, 8))
    assert not conv_impl._is_depthwise(geom(1, 16, 1))  # one group: a contraction over O
    assert conv_impl._is_winograd(geom(5, 8, 1))
    assert conv_impl._is_winograd(geom(5, 8, 1, dilation=(2, 3)))  # by phases
    assert not conv_impl._is_winograd(geom(8, 8, 2))
    assert not conv_impl._is_winograd(geom(5, 8, 1, khw=(3, 2)))
    assert not conv_impl._is_winograd(geom(5, 8, 1, stride=(1, 2)))


# --- The Winograd forms (conv._is_winograd): deep, 3×3, stride 1, ungrouped. ---------------
# Their tiles cover 2×2 outputs, so odd output sizes overhang; ∂L/∂X pads ∂L/∂Z by
# (2d − lo, 2d − hi), a crop when the forward padding is wider than 2d. Dilation d splits
# each axis into d phases (eq. 37), each rounded up to whole tiles: outputs to a multiple of 2d.
# (batch, C, O, (H, W), padding, dilation)
WINOGRAD_CASES = {
    "valid-even-outputs": (2, 5, 4, (8, 6), "VALID", 1),  # 6×4: whole tiles
    "valid-odd-outputs": (2, 6, 3, (7, 8), "VALID", 1),  # 5×6: an overhanging tile row
    "same-odd": (1, 5, 4, (5, 7), "SAME", 1),
    "asymmetric": (2, 5, 2, (6, 5), ((2, 0), (0, 3)), 1),
    "negative": (1, 5, 3, (9, 8), ((-1, 2), (1, -2)), 1),
    "wider-than-kernel": (1, 5, 2, (4, 3), ((4, 1), (3, 5)), 1),
    "one-output": (3, 7, 2, (3, 3), "VALID", 1),
    "dilated-whole-tiles": (2, 5, 3, (12, 8), "SAME", 2),  # 12×8: whole tiles in each phase
    "dilated-same": (1, 5, 3, (9, 10), "SAME", 2),  # phases of 5 and 4 rows: overhang
    "dilated-asymmetric": (2, 6, 2, (11, 8), ((3, 0), (1, 2)), (2, 3)),
    "dilated-negative": (1, 5, 3, (13, 12), ((-1, 5), (2, -1)), (3, 2)),  # ∂L/∂Z cropped
    "dilated-one-output": (2, 5, 2, (5, 7), "VALID", (2, 3)),
}


def _set_winograd_kernel_grad(monkeypatch, on: bool) -> None:
    """Makes ∂L/∂W of every Winograd geometry go by Winograd (on) or by GEMMs (off), whatever
    the size of its GEMMs, and clears the compiled programs (the choice is made when one is
    traced)."""
    monkeypatch.setattr(conv_impl, "_WINOGRAD_KERNEL_GRAD_MIN_MACS", 0 if on else 2**62)
    jax.clear_caches()


@pytest.fixture(params=["winograd", "gemm"])
def kernel_grad_form(request, monkeypatch):
    """∂L/∂W of the Winograd geometries by Winograd or by GEMMs (these cases are small
    enough to take the GEMMs unforced)."""
    _set_winograd_kernel_grad(monkeypatch, request.param == "winograd")
    yield request.param
    jax.clear_caches()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_forms_match_xla(case, layout, kernel_grad_form):
    batch, c, o, hw, padding, dilation = WINOGRAD_CASES[case]
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=(3, 3), groups=1, layout=layout
    )
    x, w, b = random_operands(5, x_shape, w_shape, o)
    cfg = dict(stride=1, padding=padding, dilation=dilation, groups=1, layout=layout)
    geom = conv_impl.resolve_call("test", x, w, b, **cfg)
    assert conv_impl._is_winograd(geom) and not conv_impl._is_shallow(geom)
    assert conv_impl._is_winograd_kernel_grad(geom, batch) == (kernel_grad_form == "winograd")
    _assert_value_and_grads_match_xla(x, w, b, cfg)


@st.composite
def winograd_configs(draw):
    """A configuration the Winograd forms take: deep, 3×3, stride 1, any dilation and padding
    form."""
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    c, o = draw(st.integers(5, 8)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    form = draw(st.sampled_from(["SAME", "explicit"]))
    if form == "SAME":
        padding, pads = "SAME", [(d, d) for d in dilation]
    else:
        padding = tuple((draw(st.integers(-2, 5)), draw(st.integers(-2, 5))) for _ in range(2))
        pads = list(padding)
    # At least one output: the padded size reaches the dilated kernel's 2d + 1.
    hw = [draw(st.integers(max(1, 2 * d + 1 - lo - hi), 13)) for (lo, hi), d in zip(pads, dilation)]
    shapes = operand_shapes(
        batch=draw(st.integers(1, 2)), c=c, o=o, hw=tuple(hw), khw=(3, 3), groups=1, layout=layout
    )
    return shapes, o, dict(padding=padding, dilation=dilation, layout=layout)


# Half the profile's examples (100 in CI): each compiles its own program, and the fixed
# cases above cover the boundary shapes.
@settings(max_examples=settings.default.max_examples // 2)
@given(winograd_configs(), st.booleans(), st.integers(0, 2**31 - 1))
def test_hypothesis_winograd_matches_xla(config, winograd_kernel_grad, seed):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _set_winograd_kernel_grad(monkeypatch, winograd_kernel_grad)
        _assert_example_matches_xla(config, seed)
    jax.clear_caches()


def test_winograd_float32_error_is_that_of_the_gemm_forms(monkeypatch):
    # Rounding of F(2×2, 3×3) in float32 against the float64 result, next to the GEMM forms'.
    x64, w64, _ = random_operands(6, (4, 10, 10, 64), (3, 3, 64, 32), 32, bias=False)
    cfg = dict(padding="SAME", layout="NHWC")
    cot64 = jnp.asarray(np.random.default_rng(7).standard_normal((4, 10, 10, 32)))
    truth = [lax_conv2d(x64, w64, **cfg), *loss_grads(lax_conv2d, x64, w64, None, cot64, **cfg)]
    x, w, cot = (a.astype(jnp.float32) for a in (x64, w64, cot64))

    def errors():
        jax.clear_caches()  # the form is chosen when a program is traced
        got = [jaxconv.conv2d(x, w, **cfg), *loss_grads(jaxconv.conv2d, x, w, None, cot, **cfg)]
        return [rel_err(a, t) for a, t in zip(got[:3], truth[:3])]

    _set_winograd_kernel_grad(monkeypatch, True)  # this size would take the GEMM ∂L/∂W
    winograd = errors()
    monkeypatch.setattr(conv_impl, "_is_winograd", lambda geom: False)
    gemm = errors()
    jax.clear_caches()
    for name, e_winograd, e_gemm in zip(["z", "dx", "dw"], winograd, gemm):
        assert e_winograd <= 4 * e_gemm, (name, e_winograd, e_gemm)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_sum_over_positions(layout):
    p = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    got = conv_impl._sum_over_positions(jnp.asarray(p), layout)
    np.testing.assert_allclose(got, p.sum(axis=axes), rtol=1e-12)


def test_split_phases_is_strided_slicing_and_merge_phases_inverts_it():
    a = jnp.arange(2 * 6 * 6 * 3).reshape(2, 6, 6, 3)
    phases = conv_impl._split_phases(a, (2, 3))
    assert phases.shape == (12, 3, 2, 3)
    for n, rho, sigma in itertools.product(range(2), range(2), range(3)):
        np.testing.assert_array_equal(phases[n * 6 + rho * 3 + sigma], a[n, rho::2, sigma::3])
    np.testing.assert_array_equal(conv_impl._merge_phases(phases, (2, 3)), a)
    assert conv_impl._split_phases(a, (1, 1)) is a


# --- Evaluation a few images at a time (conv._map_over_images / _sum_over_images). ----------
# The cases above are too small to be split; these force chunks by shrinking the chunk size.
# (batch, C, O, (H, W), (kh, kw), stride, padding, dilation, groups)
CHUNK_CASES = {
    "gemm": (5, 8, 6, (9, 8), (3, 3), 2, "SAME", 1, 1),  # C·kh·kw = 72: one GEMM per row
    "grouped-gemm": (5, 12, 6, (7, 7), (3, 3), 1, ((1, 0), (2, 1)), (1, 2), 2),
    "depthwise": (5, 4, 8, (9, 8), (3, 3), 1, "SAME", 2, 4),  # ∂L/∂W by chunks
    "winograd": (5, 8, 6, (9, 8), (3, 3), 1, "SAME", 1, 1),
    "winograd-dilated": (5, 8, 6, (9, 8), (3, 3), 1, "SAME", (2, 1), 1),
    # Nothing to pad (8×6 outputs, whole tiles): the forward takes its chunks as loop state.
    "winograd-in-place": (5, 8, 6, (10, 8), (3, 3), 1, "VALID", 1, 1),
}


@pytest.fixture
def images_per_chunk(request, monkeypatch):
    """Sets the chunk size to `request.param` images of the case's output and clears the
    compiled programs (the size is read when a program is traced). The Winograd cases take
    Winograd's ∂L/∂W too, whatever the size of its GEMMs."""

    def set_for(out_hw):
        monkeypatch.setattr(conv_impl, "_CHUNK_POSITIONS", request.param * out_hw[0] * out_hw[1])
        monkeypatch.setattr(conv_impl, "_WINOGRAD_CHUNK_VALUES", 0)
        _set_winograd_kernel_grad(monkeypatch, True)

    yield set_for
    jax.clear_caches()


def _chunk_setup(case, layout):
    batch, c, o, hw, khw, stride, padding, dilation, groups = CHUNK_CASES[case]
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=khw, groups=groups, layout=layout
    )
    x, w, b = random_operands(3, x_shape, w_shape, o)
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    return x, w, b, cfg


@pytest.mark.parametrize("images_per_chunk", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_evaluation_matches_xla(case, layout, images_per_chunk):
    # 5 images: chunks of 1 (five), 2 (two and a remainder of 1), 3 (one and a remainder of 2).
    x, w, b, cfg = _chunk_setup(case, layout)
    z_lax = lax_conv2d(x, w, b, **cfg)
    out_hw = z_lax.shape[1:3] if layout == "NHWC" else z_lax.shape[2:]
    images_per_chunk(out_hw)
    # The chunked forms are the ones traced: a loop over chunks (scan) appears.
    loss = lambda x, w: jnp.sum(jaxconv.conv2d(x, w, **cfg))  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w))
    assert "scan" in jaxpr
    _assert_value_and_grads_match_xla(x, w, b, cfg)


@pytest.mark.parametrize("images_per_chunk", [2], indirect=True)
@pytest.mark.parametrize("case", ["gemm", "winograd-in-place"])
def test_chunked_evaluation_under_vmap_and_second_order(case, images_per_chunk):
    x, w, b, cfg = _chunk_setup(case, "NCHW")
    images_per_chunk(lax_conv2d(x, w, b, **cfg).shape[2:])

    _assert_grad_of_grad_matches_xla(x, w, b, cfg)
    ws = jnp.stack([w, -w, 0.5 * w])
    grads = jax.vmap(jax.grad(lambda w: jnp.sum(jaxconv.conv2d(x, w, b, **cfg) ** 2)))(ws)
    expected = jax.vmap(jax.grad(lambda w: jnp.sum(lax_conv2d(x, w, b, **cfg) ** 2)))(ws)
    assert rel_err(grads, expected) <= GRAD_TOL
    # Batched images too: the chunks that enter the loop as its state carry the vmapped axis.
    xs = jnp.stack([x, 2 * x])
    z = jax.vmap(lambda x: jaxconv.conv2d(x, w, b, **cfg))(xs)
    assert rel_err(z, jax.vmap(lambda x: lax_conv2d(x, w, b, **cfg))(xs)) <= FWD_TOL


@pytest.mark.parametrize("images_per_chunk", [2], indirect=True)
@pytest.mark.parametrize(
    "case, as_state", [("winograd-in-place", True), ("winograd", False), ("gemm", False)]
)
def test_only_a_forward_with_nothing_to_pad_takes_chunks_as_state(
    case, as_state, images_per_chunk, monkeypatch
):
    x, w, b, cfg = _chunk_setup(case, "NHWC")
    images_per_chunk(lax_conv2d(x, w, b, **cfg).shape[1:3])
    calls = []
    original = conv_impl._map_chunks_as_state
    monkeypatch.setattr(
        conv_impl, "_map_chunks_as_state", lambda *a: calls.append(1) or original(*a)
    )
    z = jaxconv.conv2d(x, w, b, **cfg)
    assert bool(calls) == as_state
    assert rel_err(z, lax_conv2d(x, w, b, **cfg)) <= FWD_TOL


@pytest.mark.parametrize("images_per_chunk", [2], indirect=True)
@pytest.mark.parametrize("case", ["gemm", "winograd", "winograd-in-place"])
def test_nchw_forward_transposes_by_chunk_unless_a_backward_follows(
    case, images_per_chunk, monkeypatch
):
    x, w, b, cfg = _chunk_setup(case, "NCHW")
    images_per_chunk(lax_conv2d(x, w, b, **cfg).shape[2:])
    by_chunk = []
    original = conv_impl._map_channels_last

    def spy(*args, **kwargs):
        by_chunk.append(kwargs.get("transpose_by_chunk", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(conv_impl, "_map_channels_last", spy)
    z = jaxconv.conv2d(x, w, b, **cfg)
    assert by_chunk == [True]  # the forward alone: no batch-sized transposed copy
    assert rel_err(z, lax_conv2d(x, w, b, **cfg)) <= FWD_TOL
    by_chunk.clear()
    loss = lambda conv, x: jnp.sum(jnp.sin(conv(x, w, b, **cfg)))  # noqa: E731
    dx = jax.grad(functools.partial(loss, jaxconv.conv2d))(x)
    assert by_chunk == [False, False]  # forward and ∂L/∂X; ∂L/∂W shares the forward's X
    assert rel_err(dx, jax.grad(functools.partial(loss, lax_conv2d))(x)) <= GRAD_TOL


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_map_over_images_with_chunks_as_state_matches_one_pass(size):
    a, b = (jnp.arange(5 * 4 * 3, dtype=jnp.float32).reshape(5, 4, 3) + k for k in (0, 7))
    fn = lambda a, b: jnp.cumsum(a, axis=1) * b[:, ::-1]  # noqa: E731  per image, not per element
    expected = np.asarray(fn(a, b))
    for as_state in (False, True):
        got = conv_impl._map_over_images(fn, (a, b), size, chunk_as_state=as_state)
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize(
    "n, positions, out_hw, expected",
    [
        (128, 6144, (24, 24), 8),  # 10.7 images nearest 11; 8 is the largest divisor >= 6
        (32, 6144, (56, 56), 2),  # 1.96 -> 2
        (5, 30, (2, 5), 3),  # no divisor of 5 in [2, 3]: chunks of 3 and a remainder
        (4, 6144, (8, 8), 4),  # the whole batch fits: no chunks
        (7, 10, (56, 56), 1),  # one image is more than the target: still one image
        (0, 6144, (8, 8), 1),
    ],
)
def test_images_per_chunk(monkeypatch, n, positions, out_hw, expected):
    monkeypatch.setattr(conv_impl, "_CHUNK_POSITIONS", positions)
    geom = geometry.conv_geometry(
        "test",
        (n, *out_hw, 1),
        (1, 1, 1, 1),
        stride=1,
        padding="VALID",
        dilation=1,
        groups=1,
        layout="NHWC",
    )
    assert conv_impl._images_per_chunk(n, geom) == expected


# The Winograd ∂L/∂W's GEMMs per chunk: (2×2 tiles per image · images) · C · O multiply-adds
# against 2^22. E: 16·16 tiles (4 phases of 8·8) · 16 images · 32 · 32 = 2^22 exactly;
# D: 28·28 · 2 · 64 · 64 = 2^22.6; B: 12·12 · 8 · 32 · 64 = 2^21.2, by GEMMs (6144 / 576 =
# 10.7 -> 8 images, a divisor >= 6, as for any GEMM form); C is not a Winograd geometry.
@pytest.mark.parametrize(
    "n, c, o, hw, stride, padding, dilation, expected, winograd_dw, gemm_dw_chunk",
    [
        (32, 32, 32, (32, 32), 1, "SAME", 2, 16, True, 4),  # E: 2^19 / 32 = 16384 positions
        (32, 64, 64, (56, 56), 1, "SAME", 1, 2, True, 2),  # D: 8192 positions, 2.6 images
        (128, 32, 64, (26, 26), 1, "VALID", 1, 8, False, 8),  # B: 8192 / 576 = 14.2 -> 8
        (64, 64, 128, (32, 32), 2, "SAME", 1, 16, False, 16),  # C, stride 2: 6144 / 256 = 24
    ],
)
def test_images_per_chunk_of_the_winograd_forms(
    n, c, o, hw, stride, padding, dilation, expected, winograd_dw, gemm_dw_chunk
):
    geom = geometry.conv_geometry(
        "test",
        (n, c, *hw),
        (o, c, 3, 3),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=1,
        layout="NCHW",
    )
    assert conv_impl._is_winograd(geom) == (stride == 1)
    assert conv_impl._images_per_chunk(n, geom) == expected
    assert conv_impl._is_winograd_kernel_grad(geom, expected) == winograd_dw
    assert conv_impl._images_per_chunk(n, geom, winograd=False) == gemm_dw_chunk


@pytest.mark.parametrize("winograd", [True, False])
def test_kernel_grad_rule_takes_the_form_chosen(winograd, monkeypatch):
    x, w, b, cfg = _chunk_setup("winograd", "NHWC")
    _set_winograd_kernel_grad(monkeypatch, winograd)
    calls = []

    def recording(name):
        original = getattr(conv_impl, name)

        def form(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return form

    for name in ("_grad_kernel_winograd", "_grad_kernel_gemm"):
        monkeypatch.setattr(conv_impl, name, recording(name))
    g = jnp.ones(lax_conv2d(x, w, b, **cfg).shape)
    dw = jaxconv.conv2d_grad_kernel(x, g, w.shape, **cfg)
    assert calls == ["_grad_kernel_winograd" if winograd else "_grad_kernel_gemm"]
    _, vjp = jax.vjp(lambda w: lax_conv2d(x, w, b, **cfg), w)
    assert rel_err(dw, vjp(g)[0]) <= GRAD_TOL
    jax.clear_caches()


def test_jit_does_not_retrace_for_same_shapes():
    traces = []

    @jax.jit
    def step(x, w):
        traces.append(1)
        return jax.grad(
            lambda x, w: jnp.sum(jaxconv.conv2d(x, w, stride=2, padding="SAME")), (0, 1)
        )(x, w)

    x, w, _, _ = _setup("basic", "NCHW")
    step(x, w)
    step(x + 1.0, w * 2.0)
    step(np.asarray(x), np.asarray(w))
    assert len(traces) == 1


def test_vmap_matches_batched_call():
    x, w, b, cfg = _setup("asym-pad-groups2", "NCHW")
    per_image = jax.vmap(lambda xi: jaxconv.conv2d(xi, w, b, **cfg))(x)
    assert rel_err(per_image, lax_conv2d(x, w, b, **cfg)) <= FWD_TOL
    # vmap over kernels too, with gradients inside.
    ws = jnp.stack([w, 2 * w])
    grads = jax.vmap(jax.grad(lambda w: jnp.sum(jaxconv.conv2d(x, w, b, **cfg) ** 2)))(ws)
    expected = jax.vmap(jax.grad(lambda w: jnp.sum(lax_conv2d(x, w, b, **cfg) ** 2)))(ws)
    assert rel_err(grads, expected) <= GRAD_TOL


def test_grad_of_grad_matches_xla():
    x, w, b, cfg = _setup("stride3-same-lower-dil2", "NCHW")

    _assert_grad_of_grad_matches_xla(x, w, b, cfg)


def test_hessian_matches_xla():
    x, w, b, cfg = _setup("stride2-same", "NCHW")
    x = x[:, :, :5, :4]

    def loss(conv):
        return lambda w: jnp.sum(jnp.tanh(conv(x, w, b, **cfg)))

    h = jax.hessian(loss(jaxconv.conv2d))(w)
    assert h.shape == w.shape * 2
    assert rel_err(h, jax.hessian(loss(lax_conv2d))(w)) <= GRAD_TOL


def test_forward_mode_is_rejected_with_a_clear_error():
    x, w, _, cfg = _setup("basic", "NCHW")
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda x: jaxconv.conv2d(x, w, **cfg), (x,), (x,))


@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_half_precision_stays_close_to_float32(dtype, tol):
    x, w, b, cfg = _setup("depthwise-mult2", "NHWC", dtype=np.float32)
    cot = jnp.ones(lax_conv2d(x, w, b, **cfg).shape, jnp.float32)
    z32 = jaxconv.conv2d(x, w, b, **cfg)
    g32 = loss_grads(jaxconv.conv2d, x, w, b, cot, **cfg)
    low = [a.astype(dtype) for a in (x, w, b)]
    z = jaxconv.conv2d(*low, **cfg)
    grads = loss_grads(jaxconv.conv2d, *low, cot.astype(dtype), **cfg)
    assert z.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert rel_err(z, z32) <= tol
    for lo, hi in zip(grads, g32):
        assert rel_err(lo, hi) <= tol


def test_nan_and_inf_propagate_like_xla():
    x, w, b, cfg = _setup("stride2-same", "NCHW")
    x = x.at[0, 0, 3, 3].set(jnp.nan).at[0, 1, 0, 0].set(jnp.inf)
    z, z_lax = jaxconv.conv2d(x, w, b, **cfg), lax_conv2d(x, w, b, **cfg)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(z_lax))
    np.testing.assert_array_equal(np.isinf(z), np.isinf(z_lax))
    finite = np.isfinite(z_lax)
    assert rel_err(np.where(finite, z, 0), np.where(finite, z_lax, 0)) <= FWD_TOL
