"""The evaluation forms: each equals the plain rule of rules.py it replaces, on every case it
accepts; chunked equals unchunked; a plan runs exactly the form it names."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxconv
from jaxconv._src import rules
from jaxconv._src.evaluation import evaluate, gemm, shallow
from jaxconv._src.evaluation import winograd as wg
from jaxconv._src.evaluation.plan import (
    FORWARD_FORMS,
    GRAD_INPUT_FORMS,
    GRAD_KERNEL_FORMS,
    Plan,
)
from jaxconv._src.geometry import conv_geometry
from tests.helpers import (
    ALL_CASES,
    CHUNK_CASES,
    ND_CASES,
    before_argument,
    case_operands,
    geometry_of,
    jit_fast_compile,
    kernel_hwio,
    lax_conv2d,
    loss_grads,
    nd_case_operands,
    nd_geometry,
    random_operands,
    rel_err,
    to_nhwc,
    winograd_configs,
)

TOL = 1e-12
PASSES = {
    "forward": FORWARD_FORMS,
    "grad_input": GRAD_INPUT_FORMS,
    "grad_kernel": GRAD_KERNEL_FORMS,
}
LAYOUTS = ["NCHW", "NHWC"]


def _accepted(geom, passes=PASSES):
    """(pass, form) for every form that accepts `geom`, the plain ones excluded."""
    return [
        (name, form)
        for name, forms in passes.items()
        for form in forms
        if form != "plain" and Plan(**{name: form}).rejection(geom) is None
    ]


def _cotangent(geom, layout, dtype=np.float64, integers=False, seed=1):
    shape = geom.output_shape((geom.batch,))
    rng = np.random.default_rng(seed)
    values = rng.integers(-4, 5, shape) if integers else rng.standard_normal(shape)
    return jnp.asarray(values, dtype)


def _run(name, x, w, g, geom, plan):
    """One pass by `plan`, its result channels-last (NHWC, or HWIO for ∂L/∂W)."""
    if name == "forward":
        return to_nhwc(evaluate.forward(x, w, geom, plan), geom.layout)
    if name == "grad_input":
        return to_nhwc(evaluate.grad_input(g, w, geom, plan), geom.layout)
    return evaluate.grad_kernel(x, g, geom, plan)


def _plain(name, x, w, g, geom):
    """The plain rule of a pass on channels-last operands."""
    x, g = to_nhwc(x, geom.layout), to_nhwc(g, geom.layout)
    if name == "forward":
        return rules.forward(x, w, geom)
    if name == "grad_input":
        return rules.grad_input(g, w, geom)
    return rules.grad_kernel(x, g, geom)


def _forms_and_rules(geom, accepted):
    @jit_fast_compile
    def both(x, w, g):
        forms = {(n, f): _run(n, x, w, g, geom, Plan(**{n: f})) for n, f in accepted}
        plain = {n: _plain(n, x, w, g, geom) for n in PASSES}
        return forms, plain

    return both


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [*ALL_CASES, *(f"chunk-{c}" for c in CHUNK_CASES)])
def test_every_form_equals_the_plain_rule(case, layout):
    table = {**ALL_CASES, **{f"chunk-{c}": v for c, v in CHUNK_CASES.items()}}
    x, w, _, cfg = case_operands(case, layout, table=table)
    geom = geometry_of(x, w, cfg)
    accepted = _accepted(geom)
    assert ("forward", "gemm-rows") in accepted and ("grad_kernel", "shallow") in accepted
    forms, plain = _forms_and_rules(geom, tuple(accepted))(
        x, kernel_hwio(w, layout), _cotangent(geom, layout)
    )
    for (name, form), value in forms.items():
        assert value.shape == plain[name].shape, (name, form)
        assert rel_err(value, plain[name]) <= TOL, (name, form)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.startswith("winograd-")])
def test_winograd_forms_are_exact_on_small_integers(case, layout):
    # In float64 every intermediate of F(2×2, 3×3) on integers (its halves included) is exact,
    # and so are the plain sums: the two must agree bit for bit.
    x, w, _, cfg = case_operands(case, layout)
    x, w = jnp.round(4 * x).clip(-4, 4), jnp.round(4 * w).clip(-4, 4)
    geom = geometry_of(x, w, cfg)
    winograd = tuple((name, "winograd") for name in PASSES)
    forms, plain = _forms_and_rules(geom, winograd)(
        x, kernel_hwio(w, layout), _cotangent(geom, layout, integers=True)
    )
    for (name, _), value in forms.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(plain[name]), err_msg=name)


# Half the profile's examples (60 in CI): the fixed cases above cover the boundary shapes.
@pytest.mark.slow
@settings(max_examples=settings.default.max_examples // 2)
@given(winograd_configs(), st.integers(0, 2**31 - 1))
def test_hypothesis_winograd_forms_equal_the_plain_rule(config, seed):
    (x_shape, w_shape), o, cfg = config
    x, w, _ = random_operands(seed, x_shape, w_shape, o, bias=False)
    geom = geometry_of(x, w, cfg)
    winograd = tuple((name, "winograd") for name in PASSES)
    forms, plain = _forms_and_rules(geom, winograd)(
        x, kernel_hwio(w, cfg["layout"]), _cotangent(geom, cfg["layout"], seed=seed)
    )
    for (name, _), value in forms.items():
        assert rel_err(value, plain[name]) <= TOL, name


def _chunked(plan, size, as_state):
    return Plan(
        forward=plan.forward,
        grad_input=plan.grad_input,
        grad_kernel=plan.grad_kernel,
        forward_chunk=size,
        grad_input_chunk=size,
        grad_kernel_chunk=size,
        chunks_as_state=as_state,
        transpose_by_chunk=True,
    )


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_equals_unchunked(case, layout, size):
    # 5 images: chunks of 1 (five), 2 (two and a remainder of 1), 3 (one and a remainder of 2),
    # the forward's chunks as slices and as loop state, an NCHW forward transposed by chunk.
    x, w, _, cfg = case_operands(case, layout, table=CHUNK_CASES)
    geom = geometry_of(x, w, cfg)
    accepted = _accepted(geom)
    w_hwio, g = kernel_hwio(w, layout), _cotangent(geom, layout)

    def both(x, w, g):
        out = {}
        for name, form in accepted:
            whole = Plan(**{name: form})
            for as_state in (False, True) if name == "forward" else (False,):
                chunked = _chunked(whole, size, as_state)
                out[name, form, as_state] = (
                    _run(name, x, w, g, geom, chunked),
                    _run(name, x, w, g, geom, whole),
                )
        return out

    traced = jit_fast_compile(both).trace(x, w_hwio, g)  # traced once, for both uses
    assert "scan" in str(traced.jaxpr)  # chunked forms loop over chunks
    for key, (chunked, whole) in traced.lower().compile()(x, w_hwio, g).items():
        assert rel_err(chunked, whole) <= TOL, key


def test_the_plan_knows_exactly_the_forms_there_are():
    assert {name: tuple(forms) for name, forms in evaluate.FORMS.items()} == PASSES


@pytest.mark.parametrize(
    "name, form, function",
    [
        ("forward", "plain", rules.forward),
        ("forward", "gemm-rows", gemm.forward_rows),
        ("forward", "winograd", wg.forward),
        ("forward", "fused", shallow.forward_fused),
        ("grad_input", "plain", rules.grad_input),
        ("grad_input", "gemm-rows", gemm.grad_input_rows),
        ("grad_input", "winograd", wg.grad_input),
        ("grad_input", "shallow", shallow.grad_input_shallow),
        ("grad_input", "depthwise", shallow.grad_input_depthwise),
        ("grad_kernel", "plain", rules.grad_kernel),
        ("grad_kernel", "gemm-taps", gemm.grad_kernel_taps),
        ("grad_kernel", "gemm-rows", gemm.grad_kernel_rows),
        ("grad_kernel", "winograd", wg.grad_kernel),
        ("grad_kernel", "shallow", shallow.grad_kernel_shallow),
        ("grad_kernel", "depthwise", shallow.grad_kernel_depthwise),
    ],
)
def test_a_plan_runs_the_form_it_names(name, form, function):
    # Unchunked and channels-last, evaluating a pass by a plan traces exactly its form.
    case = "depthwise" if form == "depthwise" else "winograd"
    x, w, _, cfg = case_operands(case, "NHWC", table=CHUNK_CASES)
    geom = geometry_of(x, w, cfg)
    g = _cotangent(geom, "NHWC")
    assert evaluate.FORMS[name][form][0] is function
    planned = jax.make_jaxpr(lambda x, w, g: _run(name, x, w, g, geom, Plan(**{name: form})))
    args = {"forward": (x, w), "grad_input": (g, w), "grad_kernel": (x, g)}[name]
    direct = jax.make_jaxpr(functools.partial(function, geom=geom))
    assert str(planned(x, w, g)).count("dot_general") == str(direct(*args)).count("dot_general")
    assert rel_err(_run(name, x, w, g, geom, Plan(**{name: form})), function(*args, geom=geom)) == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bias_gradient_in_either_layout_is_the_rule(layout):
    g = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4, 5, 6)))
    expected = rules.grad_bias(to_nhwc(g, layout))
    assert rel_err(evaluate.grad_bias(g, layout), expected) <= TOL


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sum_over_positions(layout):
    p = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    got = shallow.sum_over_positions(jnp.asarray(p), layout)
    np.testing.assert_allclose(got, p.sum(axis=axes), rtol=1e-12)


def test_winograd_float32_error_is_that_of_the_gemm_forms():
    # Rounding of F(2×2, 3×3) in float32 against the float64 result, next to the GEMM forms'.
    x64, w64, _ = random_operands(6, (4, 10, 10, 64), (3, 3, 64, 32), 32, bias=False)
    cfg = dict(padding="SAME", layout="NHWC")
    cot64 = jnp.asarray(np.random.default_rng(7).standard_normal((4, 10, 10, 32)))
    truth = [lax_conv2d(x64, w64, **cfg), *loss_grads(lax_conv2d, x64, w64, None, cot64, **cfg)]
    x, w, cot = (a.astype(jnp.float32) for a in (x64, w64, cot64))

    def errors(plan):
        conv = functools.partial(jaxconv.conv2d, plan=plan)
        got = [conv(x, w, **cfg), *loss_grads(conv, x, w, None, cot, **cfg)]
        return [rel_err(a, t) for a, t in zip(got[:3], truth[:3])]

    winograd = errors(Plan(forward="winograd", grad_input="winograd", grad_kernel="winograd"))
    gemm_ = errors(Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps"))
    for name, e_winograd, e_gemm in zip(["z", "dx", "dw"], winograd, gemm_):
        assert e_winograd <= 4 * e_gemm, (name, e_winograd, e_gemm)


# (x NHWC, w HWIO, stride, padding, kernel dilation, groups, input dilation): the geometries of
# conv_general_dilated's lhs_dilation (derivation eq. 38), which Winograd does not take.
INPUT_DILATION_CASES = [
    ((2, 5, 6, 4), (3, 3, 4, 6), (1, 1), ((2, 2), (1, 1)), (1, 1), 1, (2, 2)),
    ((1, 4, 5, 6), (2, 3, 3, 4), (2, 1), ((1, 0), (-1, 2)), (2, 1), 2, (3, 2)),
    ((3, 6, 4, 2), (3, 2, 1, 4), (1, 3), ((0, 0), (2, 2)), (1, 2), 2, (1, 3)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(INPUT_DILATION_CASES)))
def test_every_form_with_an_input_dilation_equals_the_plain_rule(case, layout):
    x_shape, w_shape, stride, padding, dilation, groups, input_dilation = INPUT_DILATION_CASES[case]
    if layout == "NCHW":
        x_shape = (x_shape[0], x_shape[3], *x_shape[1:3])
    rng = np.random.default_rng(case)
    x, w = jnp.asarray(rng.standard_normal(x_shape)), jnp.asarray(rng.standard_normal(w_shape))
    geom = conv_geometry(
        "test",
        x.shape,
        w_shape if layout == "NHWC" else (w_shape[3], w_shape[2], *w_shape[:2]),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
        input_dilation=input_dilation,
    )
    accepted = _accepted(geom)
    assert not any(form == "winograd" for _, form in accepted)
    forms, plain = _forms_and_rules(geom, tuple(accepted))(x, w, _cotangent(geom, layout))
    for (name, form), value in forms.items():
        assert rel_err(value, plain[name]) <= TOL, (name, form)


# --- Every rank. ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", ND_CASES)
def test_every_form_of_every_rank_equals_the_plain_rule(case, channels_last):
    x, w, _, cfg = nd_case_operands(case, channels_last)
    geom = nd_geometry(x, w, cfg)
    accepted = _accepted(geom)
    assert not any(form == "winograd" for _, form in accepted)  # Winograd is 2-D
    assert ("forward", "fused") in accepted and ("grad_kernel", "gemm-taps") in accepted
    forms, plain = _forms_and_rules(geom, tuple(accepted))(
        x, kernel_hwio(w, cfg["layout"]), _cotangent(geom, cfg["layout"])
    )
    for (name, form), value in forms.items():
        assert value.shape == plain[name].shape, (name, form)
        assert rel_err(value, plain[name]) <= TOL, (name, form)


def _channels_last_case(case):
    """(x, w, geom) of an ND_CASES or 2-D case, channels-last."""
    if case in ND_CASES:
        x, w, _, cfg = nd_case_operands(case, channels_last=True)
        return x, w, nd_geometry(x, w, cfg)
    x, w, _, cfg = case_operands(case, "NHWC")
    return x, w, geometry_of(x, w, cfg)


PADDED_COTANGENT_CASES = [
    *("basic", "int-pad-dil3", "kernel-fills-padded"),
    *("winograd-negative", "winograd-wider-than-kernel", "winograd-dilated-negative"),
    *("1d-basic", "1d-causal-depthwise", "1d-kernel-fills-padded", "3d-dil-groups2"),
]


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", PADDED_COTANGENT_CASES)
def test_grad_input_on_the_padded_cotangent_equals_the_plain_rule(case, channels_last, chunk):
    # Each tap's share a slice of its row's product on the padded ∂L/∂Z: the same sums as the
    # shares placed by pads, with asymmetric, negative and wider-than-kernel padding,
    # dilation and groups, on every rank and layout, in chunks of images too.
    if case in ND_CASES:
        x, w, _, cfg = nd_case_operands(case, channels_last)
    else:
        x, w, _, cfg = case_operands(case, LAYOUTS[channels_last], table=ALL_CASES)
    geom = nd_geometry(x, w, cfg)
    assert gemm.accepts_padded_cotangent(geom)
    w, g = kernel_hwio(w, cfg["layout"]), _cotangent(geom, cfg["layout"])
    plan = Plan(grad_input="gemm-rows", grad_input_chunk=chunk, grad_input_padded=True)
    got, plain = _run("grad_input", x, w, g, geom, plan), _plain("grad_input", x, w, g, geom)
    assert got.shape == plain.shape and rel_err(got, plain) <= TOL
    unpadded = dataclasses.replace(plan, grad_input_padded=False)

    def pads(plan):
        run = functools.partial(_run, "grad_input", geom=geom, plan=plan)
        return str(jax.make_jaxpr(run)(x, w, g)).count(" pad[")

    # One pad of ∂L/∂Z where each of the ∏k shares had its own.
    assert pads(plan) == 1 and pads(unpadded) >= math.prod(geom.kernel_size)


def test_grad_input_on_the_padded_cotangent_needs_stride_one_and_unrolled_rows():
    x, w, _, cfg = case_operands("stride2-same", "NHWC")
    plan = Plan(grad_input="gemm-rows", grad_input_padded=True)
    with pytest.raises(ValueError, match=r"grad_input_padded.*stride 1.*stride \(2, 2\)"):
        jaxconv.conv2d(x, w, plan=plan, **cfg)
    with pytest.raises(ValueError, match="rows_in_loop"):
        dataclasses.replace(plan, rows_in_loop=True)


@pytest.mark.parametrize("fold", [1, 2, 3, 4])
@pytest.mark.parametrize("case", ["1d-stride2-same", "stride2-same", "3d-dil-groups2"])
def test_gemm_rows_fold_any_number_of_kernel_axes(case, fold):
    # fold = 1: a kernel row per GEMM; 2: a (kh, kw) plane in 3-D; at least the rank: every tap.
    # Odd folds join the windows by pads, even ones by concatenation: both ways on every rank.
    x, w, geom = _channels_last_case(case)
    plan = Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-rows")
    folded = dataclasses.replace(plan, fold_axes=fold, rows_by_pads=fold % 2 == 1)
    g = _cotangent(geom, "NHWC")
    rows = gemm.kernel_rows(geom, fold)
    assert len(rows) == math.prod(geom.kernel_size[: max(0, geom.spatial_rank - fold)])
    assert [tap for _, taps in rows for tap in taps] == rules.taps(geom)
    for name in PASSES:
        got, plain = _run(name, x, w, g, geom, folded), _plain(name, x, w, g, geom)
        assert rel_err(got, plain) <= TOL, name
    jaxpr = str(jax.make_jaxpr(lambda x, w: evaluate.forward(x, w, geom, folded))(x, w))
    assert jaxpr.count("dot_general") == len(rows)  # one GEMM per row, over its folded taps


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", ["1d-chunks", "3d-chunks"])
def test_chunked_equals_unchunked_in_every_rank(case, channels_last):
    x, w, _, cfg = nd_case_operands(case, channels_last)
    geom = nd_geometry(x, w, cfg)
    w_hwio, g = kernel_hwio(w, cfg["layout"]), _cotangent(geom, cfg["layout"])

    @jit_fast_compile
    def both(x, w, g):
        out = {}
        for name, form in _accepted(geom):
            whole = Plan(**{name: form})
            for as_state in (False, True) if name == "forward" else (False,):
                chunked = _chunked(whole, 2, as_state)
                out[name, form, as_state] = (
                    _run(name, x, w, g, geom, chunked),
                    _run(name, x, w, g, geom, whole),
                )
        return out

    for key, (chunked, whole) in both(x, w_hwio, g).items():
        assert rel_err(chunked, whole) <= TOL, key


# --- Complex operands by three real evaluations (Gauss's product). ------------------------


def _complex_case(case):
    """(x, w, g, geom) of a 2-D or n-D case with complex128 operands and cotangent."""
    if case in ND_CASES:
        parts = [nd_case_operands(case, channels_last=False, seed=s) for s in (0, 1)]
        geom = nd_geometry(parts[0][0], parts[0][1], parts[0][3])
        layout = parts[0][3]["layout"]
    else:
        parts = [case_operands(case, "NCHW", seed=s) for s in (0, 1)]
        geom, layout = geometry_of(parts[0][0], parts[0][1], parts[0][3]), "NCHW"
    x, w = (a + 1j * b for a, b in zip(parts[0][:2], parts[1][:2]))
    g = _cotangent(geom, layout) + 1j * _cotangent(geom, layout, seed=2)
    return x, kernel_hwio(w, layout), g, geom


@pytest.mark.parametrize(
    "case", ["1d-same-lower-dil2-groups2", "winograd-same-odd", "stride2-same", "3d-dil-groups2"]
)
def test_complex_operands_by_three_real_evaluations_equal_the_plain_rule(case):
    x, w, g, geom = _complex_case(case)
    plans = list(jaxconv.supported(geom, jnp.complex128))
    assert any(p.complex_as_real for p in plans)  # the CPU's own plan takes the real route
    both_routes = dict.fromkeys(
        dataclasses.replace(p, complex_as_real=real) for p in plans for real in (False, True)
    )

    @jit_fast_compile
    def both(x, w, g):
        forms = {(n, str(p)): _run(n, x, w, g, geom, p) for n in PASSES for p in both_routes}
        return forms, {n: _plain(n, x, w, g, geom) for n in PASSES}

    forms, plain = both(x, w, g)
    assert len(forms) == len(PASSES) * len(both_routes)  # str names each plan apart
    for (name, plan), value in forms.items():
        assert value.dtype == jnp.complex128, (name, plan)
        assert rel_err(value, plain[name]) <= TOL, (name, plan)


def test_complex_as_real_contracts_real_operands_only():
    # Each pass: three real GEMMs where the complex route has one, and no complex GEMM left.
    x, w, g, geom = _complex_case("stride2-same")
    native = Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
    by_real = dataclasses.replace(native, complex_as_real=True)

    def dots(name, plan):
        jaxpr = jax.make_jaxpr(lambda x, w, g: _run(name, x, w, g, geom, plan))(x, w, g)
        found = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        return [jnp.issubdtype(e.invars[0].aval.dtype, jnp.complexfloating) for e in found]

    for name in PASSES:
        complex_dots, real_dots = dots(name, native), dots(name, by_real)
        assert complex_dots and all(complex_dots), name
        assert len(real_dots) == 3 * len(complex_dots) and not any(real_dots), name


# --- Kernel rows in a loop. ----------------------------------------------------------------


@pytest.mark.parametrize("fold", [1, 2])
@pytest.mark.parametrize(
    "case", ["1d-stride2-same", "stride3-same-lower-dil2", "3d-dil-groups2", "3d-chunks"]
)
def test_gemm_rows_in_a_loop_equal_the_plain_rule(case, fold):
    # One row's GEMM per iteration, its leading offsets traced: the same sums as the rows
    # written out, on every rank, with strides, dilation, padding and groups; the windows
    # joined by pads on fold 1, by concatenation on fold 2.
    x, w, geom = _channels_last_case(case)
    plan = Plan(
        forward="gemm-rows",
        grad_input="gemm-rows",
        grad_kernel="gemm-rows",
        fold_axes=fold,
        rows_in_loop=True,
        rows_by_pads=fold == 1,
    )
    g = _cotangent(geom, "NHWC")
    rows = len(gemm.kernel_rows(geom, fold))
    for name in PASSES:
        got, plain = _run(name, x, w, g, geom, plan), _plain(name, x, w, g, geom)
        assert got.shape == plain.shape and rel_err(got, plain) <= TOL, name
        traced = functools.partial(_run, name, geom=geom, plan=plan)
        jaxpr = jax.make_jaxpr(traced)(x, w, g).jaxpr
        # fori_loop with a static trip count is a scan.
        loops = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        if rows == 1:  # nothing to loop over: the rows written out, which is one
            assert not loops, name
            continue
        assert len(loops) == 1 and loops[0].params["length"] == rows, name
        body = loops[0].params["jaxpr"].jaxpr
        assert [e.primitive.name for e in body.eqns].count("dot_general") == 1, name
        assert "dot_general" not in [e.primitive.name for e in jaxpr.eqns], name


# --- Depthwise taps in a loop. -------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "case", ["1d-causal-depthwise", "1d-depthwise-mult2", "3d-depthwise", "depthwise-dil3"]
)
@pytest.mark.parametrize("chunk", [None, 1])
def test_depthwise_kernel_gradient_taps_in_a_loop_equal_the_plain_rule(case, channels_last, chunk):
    # One tap's product and sum per iteration, its window a dynamic slice: the same sums as
    # the taps written out, on every rank and layout, with strides, dilation, a channel
    # multiplier, and inside the loop over chunks of images.
    if case in ND_CASES:
        x, w, _, cfg = nd_case_operands(case, channels_last)
    else:
        x, w, _, cfg = case_operands(case, LAYOUTS[channels_last])
    geom = nd_geometry(x, w, cfg)
    w, g = kernel_hwio(w, cfg["layout"]), _cotangent(geom, cfg["layout"])
    plan = Plan(grad_kernel="depthwise", grad_kernel_chunk=chunk, taps_in_loop=True)
    got, plain = _run("grad_kernel", x, w, g, geom, plan), _plain("grad_kernel", x, w, g, geom)
    assert got.shape == plain.shape and rel_err(got, plain) <= TOL
    jaxpr = jax.make_jaxpr(functools.partial(_run, "grad_kernel", geom=geom, plan=plan))
    loops = [e for e in jaxpr(x, w, g).jaxpr.eqns if e.primitive.name == "scan"]
    if chunk is not None and chunk < geom.batch:  # the loop over chunks holds the taps' loop
        (chunk_loop,) = loops
        loops = [e for e in chunk_loop.params["jaxpr"].jaxpr.eqns if e.primitive.name == "scan"]
    # fori_loop with a static trip count is a scan, here over the taps.
    (tap_loop,) = loops
    assert tap_loop.params["length"] == math.prod(geom.kernel_size)
    body = tap_loop.params["jaxpr"].jaxpr.eqns
    windows = [
        e for e in body if e.primitive.name == "dynamic_slice" and e.outvars[0].aval.ndim == x.ndim
    ]
    assert len(windows) == 1 and [e.primitive.name for e in body].count("dot_general") == 1


@pytest.mark.parametrize("chunk", [None, 2])
def test_winograd_grad_input_reads_a_kernel_made_after_the_cotangent(chunk):
    # Its kernel tiles come from W alone: unless W is tied to ∂L/∂Z, XLA makes every layer's
    # tiles in the forward and holds them to the backward (docs/performance.md, "Memory").
    geom = conv_geometry(
        "t",
        (4, 6, 6, 3),
        (3, 3, 3, 5),
        stride=1,
        padding="SAME",
        dilation=1,
        groups=1,
        layout="NHWC",
    )
    plan = Plan(forward="winograd", grad_input="winograd", grad_input_chunk=chunk)
    g, w = jnp.ones((4, 6, 6, 5)), jnp.ones((3, 3, 3, 5))
    fn = lambda g, w: evaluate.grad_input(g, w, geom, plan)  # noqa: E731
    assert not before_argument(fn, (g, w), 0, "dot_general", [w.shape])
    plain = evaluate.grad_input(g, w, geom, Plan())
    np.testing.assert_allclose(fn(g, w), plain, rtol=1e-6)


@pytest.mark.parametrize("pass_name", ["forward", "grad_kernel"])
def test_a_kernel_rows_windows_are_joined_without_a_copy_of_each(pass_name):
    # Joined by pads (Plan.rows_by_pads), the row's windows side by side are made in one
    # pass from the padded input: the compiled pass holds no copy of each window besides
    # them (docs/performance.md, "Memory").
    geom = conv_geometry(
        "t",
        (8, 12, 12, 64),
        (1, 5, 64, 32),
        stride=1,
        padding="SAME",
        dilation=1,
        groups=1,
        layout="NHWC",
    )
    x, w, g = jnp.ones((8, 12, 12, 64)), jnp.ones((1, 5, 64, 32)), jnp.ones((8, 12, 12, 32))
    form = {"forward": gemm.forward_rows, "grad_kernel": gemm.grad_kernel_rows}[pass_name]
    args, out_bytes = ((x, w), g.nbytes) if pass_name == "forward" else ((x, g), w.nbytes)
    fn = functools.partial(form, geom=geom, by_pads=True)
    side_by_side = x.nbytes * 5
    padded = x.nbytes * 16 // 12
    temp = jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp <= side_by_side + padded + out_bytes, (temp, side_by_side)
