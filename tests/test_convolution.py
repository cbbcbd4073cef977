"""The public contract of conv2d and its gradient functions: against XLA, the naive reference
and finite differences, under every plan that `jaxconv.supported` lists."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxconv
from tests.helpers import (
    ALL_CASES,
    CASES,
    CHUNK_CASES,
    ND_CASES,
    case_operands,
    conv_configs,
    geometry_of,
    jit_fast_compile,
    lax_conv,
    lax_conv2d,
    loss_grads,
    nd_case_operands,
    nd_conv_configs,
    nd_geometry,
    random_operands,
    rel_err,
)

FWD_TOL = 1e-12
GRAD_TOL = 1e-10
_setup = case_operands


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_xla_and_reference(case, layout):
    x, w, b, cfg = _setup(case, layout)
    z = jaxconv.conv2d(x, w, b, **cfg)  # called as users call it, outside any jit
    z_lax = lax_conv2d(x, w, b, **cfg)
    assert z.shape == z_lax.shape and z.dtype == x.dtype
    assert rel_err(z, z_lax) <= FWD_TOL
    # One program for the naive loops: op by op, each of its slices would compile its own.
    reference = jit_fast_compile(functools.partial(jaxconv.conv2d_reference, **cfg))
    assert rel_err(reference(x, w, b), z_lax) <= FWD_TOL


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_autodiff_of_reference_and_xla(case, layout):
    x, w, b, cfg = _setup(case, layout)
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(lax_conv2d(x, w, b, **cfg).shape))
    convs = (jaxconv.conv2d, jaxconv.conv2d_reference, lax_conv2d)

    @jit_fast_compile  # one program: op by op, every operation would compile its own
    def all_grads(x, w, b, cot):
        return [loss_grads(conv, x, w, b, cot, **cfg) for conv in convs]

    manual, *autos = all_grads(x, w, b, cot)
    for reference, auto in zip(convs[1:], autos):
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


@pytest.mark.slow
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


def _assert_grad_of_grad_matches_xla(x, w, b, cfg, conv=jaxconv.conv2d):
    """Gradients of |∂/∂x Σ sin(conv(x, w, b))|² w.r.t. (x, w): jaxconv's rules vs XLA's,
    compiled together as one program."""

    def inner_norm(conv, x, w, b):
        def f(x, w):
            gx = jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w, b, **cfg))))(x)
            return jnp.sum(gx**2)

        return jax.grad(f, argnums=(0, 1))(x, w)

    @jit_fast_compile
    def both(x, w, b):
        return inner_norm(conv, x, w, b), inner_norm(lax_conv2d, x, w, b)

    manual, auto = both(x, w, b)
    for m, a in zip(manual, auto):
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


# --- Every plan jaxconv.supported lists, through the public functions. ----------------------


def _assert_every_supported_plan_matches_xla(x, w, b, cfg):
    """Value and x/w/b gradients of conv2d under each supported plan, and of
    conv2d_grad_input / conv2d_grad_kernel, against XLA's: one compiled program."""
    geom = geometry_of(x, w, cfg)
    plans = jaxconv.supported(geom)
    z_shape = jax.eval_shape(lambda: lax_conv2d(x, w, b, **cfg)).shape
    cot = jnp.asarray(np.random.default_rng(4).standard_normal(z_shape))

    @jit_fast_compile
    def everything(x, w, b, cot):
        xla = (lax_conv2d(x, w, b, **cfg), *loss_grads(lax_conv2d, x, w, b, cot, **cfg))
        ours = []
        for plan in plans:
            conv = functools.partial(jaxconv.conv2d, plan=plan)
            dx = jaxconv.conv2d_grad_input(cot, w, x.shape, plan=plan, **cfg)
            dw = jaxconv.conv2d_grad_kernel(x, cot, w.shape, plan=plan, **cfg)
            ours.append((conv(x, w, b, **cfg), *loss_grads(conv, x, w, b, cot, **cfg), dx, dw))
        return xla, ours

    xla, ours = everything(x, w, b, cot)
    expected = (*xla, xla[1], xla[2])
    for plan, values in zip(plans, ours):
        for name, got, want in zip(
            ("z", "dx", "dw", "db", "grad_input", "grad_kernel"), values, expected
        ):
            assert got.shape == want.shape, (str(plan), name)
            tol = FWD_TOL if name == "z" else GRAD_TOL
            assert rel_err(got, want) <= tol, (str(plan), name)
    return plans


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", ALL_CASES)
def test_every_supported_plan_matches_xla(case, layout):
    x, w, b, cfg = _setup(case, layout)
    plans = _assert_every_supported_plan_matches_xla(x, w, b, cfg)
    assert jaxconv.Plan() in plans and len(plans) >= 4


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_plans_match_xla(case, layout):
    # 5 images: the chunked plans of `supported` cut them into 3 and a remainder of 2.
    x, w, b, cfg = _setup(case, layout, table=CHUNK_CASES, seed=3)
    plans = _assert_every_supported_plan_matches_xla(x, w, b, cfg)
    assert any(p.forward_chunk == 3 for p in plans)


@pytest.mark.parametrize("case", ["gemm", "winograd-in-place"])
def test_chunked_plans_under_vmap_and_second_order(case):
    x, w, b, cfg = _setup(case, "NCHW", table=CHUNK_CASES, seed=3)
    chunked = [p for p in jaxconv.supported(geometry_of(x, w, cfg)) if p.forward_chunk == 3]
    assert chunked
    for plan in chunked:
        conv = functools.partial(jaxconv.conv2d, plan=plan)
        _assert_grad_of_grad_matches_xla(x, w, b, cfg, conv)

        @jit_fast_compile
        def batched(ws, xs, conv=conv):
            # Batched kernels, and batched images: chunks that enter the loop as its state
            # carry the vmapped axis.
            return [
                (
                    jax.vmap(jax.grad(lambda w, c=c: jnp.sum(c(x, w, b, **cfg) ** 2)))(ws),
                    jax.vmap(lambda x, c=c: c(x, w, b, **cfg))(xs),
                )
                for c in (conv, lax_conv2d)
            ]

        (grads, z), (expected, z_lax) = batched(jnp.stack([w, -w, 0.5 * w]), jnp.stack([x, 2 * x]))
        assert rel_err(grads, expected) <= GRAD_TOL
        assert rel_err(z, z_lax) <= FWD_TOL


def _transposes(jaxpr) -> tuple[int, int]:
    """(transposes outside any loop, transposes inside a loop body) of a jaxpr, nested jits
    and custom_vjp included."""
    outside, inside = 0, 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "transpose":
            outside += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    o, i = _transposes(sub)
                    if eqn.primitive.name == "scan":
                        inside += o + i
                    else:
                        outside, inside = outside + o, inside + i
    return outside, inside


def test_nchw_forward_alone_transposes_by_chunk_unless_a_backward_follows():
    x, w, b, cfg = _setup("gemm", "NCHW", table=CHUNK_CASES)
    plan = jaxconv.Plan(forward="gemm-rows", forward_chunk=2, transpose_by_chunk=True)
    whole = jaxconv.Plan(forward="gemm-rows", forward_chunk=2)
    conv = functools.partial(jaxconv.conv2d, **cfg)
    # The forward alone: X channels-last one chunk at a time (and the remainder), no
    # batch-sized copy; without transpose_by_chunk, once before the loop.
    alone = _transposes(jax.make_jaxpr(lambda x: conv(x, w, b, plan=plan))(x).jaxpr)
    assert alone[1] >= 1
    assert _transposes(jax.make_jaxpr(lambda x: conv(x, w, b, plan=whole))(x).jaxpr)[1] == 0
    # With a backward, X is transposed whole once for the forward and ∂L/∂W to share.
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w, b, plan=plan))))
    assert _transposes(jax.make_jaxpr(grad)(x).jaxpr)[1] == 0
    expected = jax.grad(lambda x: jnp.sum(jnp.sin(lax_conv2d(x, w, b, **cfg))))(x)
    assert rel_err(grad(x), expected) <= GRAD_TOL
    assert rel_err(conv(x, w, b, plan=plan), lax_conv2d(x, w, b, **cfg)) <= FWD_TOL


# --- Zero-size convolutions: XLA's shapes and values, gradients included. ------------------
# (x NCHW, w OIHW, config): every sum empty, so Z is the bias and ∂L/∂X, ∂L/∂W are zeros.
ZERO_SIZE_CASES = {
    "no-images-winograd": ((0, 16, 8, 8), (8, 16, 3, 3), {}),
    "no-images-depthwise": ((0, 4, 8, 8), (8, 1, 3, 3), dict(groups=4, stride=2)),
    "no-input-channels": ((2, 0, 7, 8), (12, 0, 3, 3), dict(groups=3)),  # PyTorch's test
    "no-output-channels": ((2, 4, 7, 8), (0, 4, 3, 3), {}),
    "no-rows": ((2, 4, 0, 8), (8, 4, 3, 3), dict(padding="SAME")),
    "input-smaller-than-kernel": ((2, 4, 2, 8), (8, 4, 3, 3), dict(stride=(2, 1))),
    "cropped-to-nothing": ((2, 5, 5, 8), (8, 5, 3, 3), dict(padding=((-3, 0), (1, 1)))),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", ZERO_SIZE_CASES)
def test_zero_size_convolutions_match_xla(case, layout):
    x_shape, w_shape, cfg = ZERO_SIZE_CASES[case]
    if layout == "NHWC":
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    x, w, b = random_operands(8, x_shape, w_shape, w_shape[0 if layout == "NCHW" else 3])
    cfg = dict(cfg, layout=layout)
    assert geometry_of(x, w, cfg).is_empty
    _assert_every_supported_plan_matches_xla(x, w, b, cfg)
    z = jaxconv.conv2d(x, w, b, **cfg)
    if z.size:  # no input channels: the bias alone, everywhere
        along = b[:, None, None] if layout == "NCHW" else b
        np.testing.assert_array_equal(z, jnp.broadcast_to(along, z.shape))


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


# --- Every rank: conv1d, conv3d and the rank-generic conv and gradient functions. ---------

RANK_FUNCTIONS = {1: jaxconv.conv1d, 2: jaxconv.conv2d, 3: jaxconv.conv3d}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", ND_CASES)
def test_every_rank_matches_xla_and_reference(case, channels_last):
    x, w, b, cfg = nd_case_operands(case, channels_last)
    rank = x.ndim - 2
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(lax_conv(x, w, b, **cfg).shape))
    convs = (RANK_FUNCTIONS[rank], jaxconv.conv, jaxconv.conv_reference, lax_conv)

    @jit_fast_compile
    def everything(x, w, b, cot):
        return [(conv(x, w, b, **cfg), loss_grads(conv, x, w, b, cot, **cfg)) for conv in convs]

    (z, grads), *others = everything(x, w, b, cot)
    z_lax = others[-1][0]
    assert z.shape == z_lax.shape and z.dtype == x.dtype
    for conv, (z_other, grads_other) in zip(convs[1:], others):
        assert rel_err(z, z_other) <= FWD_TOL, conv.__name__
        for name, m, a in zip("xwb", grads, grads_other):
            assert m.shape == a.shape and rel_err(m, a) <= GRAD_TOL, (name, conv.__name__)
    # Eager, as users call it, under the plan "auto" picks.
    assert rel_err(RANK_FUNCTIONS[rank](x, w, b, **cfg), z_lax) <= FWD_TOL


@pytest.mark.parametrize("case", ["1d-stride2-same", "3d-dil-groups2"])
def test_every_supported_plan_of_every_rank_matches_xla(case):
    x, w, b, cfg = nd_case_operands(case)
    plans = jaxconv.supported(nd_geometry(x, w, cfg))
    assert len(plans) >= 5 and not any("winograd" in str(p) for p in plans)
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(lax_conv(x, w, b, **cfg).shape))

    @jit_fast_compile
    def everything(x, w, b, cot):
        convs = [functools.partial(jaxconv.conv, plan=p) for p in plans] + [lax_conv]
        return [(c(x, w, b, **cfg), loss_grads(c, x, w, b, cot, **cfg)) for c in convs]

    *ours, (z_lax, grads_lax) = everything(x, w, b, cot)
    for plan, (z, grads) in zip(plans, ours):
        assert rel_err(z, z_lax) <= FWD_TOL, plan
        for name, m, a in zip("xwb", grads, grads_lax):
            assert rel_err(m, a) <= GRAD_TOL, (name, plan)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("batch_axes", [0, 1])  # spatial only (one channel), or one example
def test_unbatched_inputs_of_every_rank(rank, batch_axes):
    case = {1: "1d-negative-pad", 3: "3d-stride-same"}[rank]
    x, w, b, cfg = nd_case_operands(case)
    if batch_axes == 0:
        x, w, b = x[0, 0], w[0, 0], b[:1]
    else:
        x = x[0]
    z = RANK_FUNCTIONS[rank](x, w, None if batch_axes == 0 else b, **cfg)
    expected = lax_conv(x, w, None if batch_axes == 0 else b, **cfg)
    assert z.shape == expected.shape and z.ndim == rank + batch_axes
    assert rel_err(z, expected) <= FWD_TOL
    cot = jnp.ones_like(z)
    bias = None if batch_axes == 0 else b
    grads = loss_grads(RANK_FUNCTIONS[rank], x, w, bias, cot, **cfg)
    for m, a in zip(grads[:2], loss_grads(lax_conv, x, w, bias, cot, **cfg)[:2]):
        assert m.shape == a.shape and rel_err(m, a) <= GRAD_TOL


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", ["1d-same-lower-dil2-groups2", "3d-negative-pad"])
def test_generic_gradient_functions_are_the_vjp_of_xla(case, channels_last):
    x, w, _, cfg = nd_case_operands(case, channels_last)
    z, vjp = jax.vjp(lambda x, w: lax_conv(x, w, **cfg), x, w)
    g = jnp.asarray(np.random.default_rng(3).standard_normal(z.shape))
    dx, dw = vjp(g)
    assert rel_err(jaxconv.conv_grad_input(g, w, x.shape, **cfg), dx) <= GRAD_TOL
    assert rel_err(jaxconv.conv_grad_kernel(x, g, w.shape, **cfg), dw) <= GRAD_TOL
    channel_axis = g.ndim - 1 if channels_last else 1
    expected_db = jnp.sum(g, axis=tuple(a for a in range(g.ndim) if a != channel_axis))
    assert rel_err(jaxconv.conv_grad_bias(g, layout=cfg["layout"]), expected_db) <= GRAD_TOL
    if not channels_last:  # layout None: channels-first, the rank of the kernel
        no_layout = {k: v for k, v in cfg.items() if k != "layout"}
        assert rel_err(jaxconv.conv_grad_input(g, w, x.shape, **no_layout), dx) <= GRAD_TOL
        assert rel_err(jaxconv.conv_grad_kernel(x, g, w.shape, **no_layout), dw) <= GRAD_TOL
        assert rel_err(jaxconv.conv_grad_bias(g), expected_db) <= GRAD_TOL


# A third of the profile's examples (40 in CI): the fixed cases above cover every rank's
# boundary shapes; 2-D has its own sweep.
@settings(max_examples=settings.default.max_examples // 3)
@given(nd_conv_configs(ranks=(1, 3)), st.integers(0, 2**31 - 1))
def test_hypothesis_one_and_three_axes_match_xla(config, seed):
    (x_shape, w_shape), o, cfg = config
    x, w, b = random_operands(seed, x_shape, w_shape, o)
    cot = jnp.asarray(
        np.random.default_rng(seed + 1).standard_normal(
            jax.eval_shape(lambda: lax_conv(x, w, b, **cfg)).shape
        )
    )

    @jit_fast_compile
    def both(x, w, b, cot):
        return [
            (c(x, w, b, **cfg), loss_grads(c, x, w, b, cot, **cfg))
            for c in (jaxconv.conv, lax_conv)
        ]

    (z, grads), (z_lax, grads_lax) = both(x, w, b, cot)
    assert rel_err(z, z_lax) <= FWD_TOL
    for name, m, a in zip("xwb", grads, grads_lax):
        assert rel_err(m, a) <= GRAD_TOL, name


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: jaxconv.conv1d(jnp.ones((2, 3, 9)), jnp.ones((4, 3, 3, 3))),
            ValueError,
            "so `w` must be 3-D (O, C//groups, kw)",
        ),
        (
            lambda: jaxconv.conv1d(jnp.ones((2, 3, 9, 9)), jnp.ones((4, 3, 3))),
            ValueError,
            "`x` must be 1-D (W,), 2-D (one signal) or 3-D (a batch), got shape (2, 3, 9, 9)",
        ),
        (
            lambda: jaxconv.conv3d(
                jnp.ones((2, 3, 4, 4, 4)), jnp.ones((4, 3, 2, 2, 2)), stride=(1, 2)
            ),
            TypeError,
            "`stride` must be an int or a triple of ints, got (1, 2)",
        ),
        (
            lambda: jaxconv.conv3d(jnp.ones((4, 4, 4)), jnp.ones((2, 2))),
            ValueError,
            "so `w` must be 3-D (kd, kh, kw)",
        ),
        (
            lambda: jaxconv.conv1d(jnp.ones((2, 3, 9)), jnp.ones((4, 3, 3)), padding=(1, 2)),
            TypeError,
            "malformed `padding` (1, 2); expected one of ('VALID', 'SAME', 'SAME_LOWER'), "
            "an int, a tuple of one int or ((lo_w, hi_w),)",
        ),
        (
            lambda: jaxconv.conv1d(jnp.ones((2, 3, 9)), jnp.ones((4, 3, 3)), layout="NCHW"),
            ValueError,
            "`layout` must be one of ('NCW', 'NWC') (any case), got 'NCHW'",
        ),
        (
            lambda: jaxconv.conv(jnp.ones((2, 3, 9, 9, 9, 9)), jnp.ones((4, 3, 1, 1, 1, 1))),
            ValueError,
            "conv: `w` of shape (4, 3, 1, 1, 1, 1) has 4 spatial dimensions",
        ),
        (
            lambda: jaxconv.conv(jnp.ones((2, 3)), jnp.ones((4, 3))),
            ValueError,
            "has 0 spatial dimensions; jaxconv computes convolutions of 1, 2 or 3",
        ),
        (
            lambda: jaxconv.conv(jnp.ones((2, 9, 3)), jnp.ones((4, 3, 3)), layout="NWCX"),
            ValueError,
            "`layout` must be one of ('NCW', 'NWC', 'NCHW', 'NHWC', 'NCDHW', 'NDHWC')",
        ),
        (
            lambda: jaxconv.conv(jnp.ones((2, 3, 9)), jnp.ones((4, 3, 3, 3)), layout="NCW"),
            ValueError,
            "so `w` must be 3-D (O, C//groups, kw)",
        ),
        (
            lambda: jaxconv.conv3d(jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 5, 1, 1))),
            ValueError,
            None,
        ),
        (
            lambda: jaxconv.conv_grad_kernel(jnp.ones((2, 3, 9)), jnp.ones((2, 4, 7)), 3),
            TypeError,
            "`w_shape` must be a tuple of ints, got 3",
        ),
        (
            lambda: jaxconv.conv_grad_bias(jnp.ones((3,))),
            ValueError,
            "`g` of shape (3,) has -1 spatial dimensions",
        ),
    ],
)
def test_every_rank_names_bad_arguments(call, error, message):
    if message is None:  # a kernel taller than the padded input: an empty output, as in XLA
        assert call().shape == (1, 3, 0, 4, 4)
        return
    with pytest.raises(error, match=re.escape(message)):
        call()


@pytest.mark.parametrize("case", ["1d-causal-depthwise", "stride2-same", "3d-dil-groups2"])
def test_complex_operands_of_every_rank_match_xla(case):
    # complex128, values and the three VJPs (JAX's convention: transposes, no conjugation).
    if case in ND_CASES:
        x, w, b, cfg = nd_case_operands(case)
    else:
        x, w, b, cfg = case_operands(case, "NCHW")
    rng = np.random.default_rng(7)
    x, w, b = (a + 1j * rng.standard_normal(a.shape) for a in (x, w, b))
    cot = jnp.asarray(lax_conv(x, w, b, **cfg))
    cot = cot * (1 + 2j) - 0.5j

    @jit_fast_compile
    def both(x, w, b):
        out = []
        for conv in (jaxconv.conv, lax_conv):
            z, vjp = jax.vjp(lambda x, w, b, c=conv: c(x, w, b, **cfg), x, w, b)
            out.append((z, *vjp(cot)))
        return out

    ours, xla = both(x, w, b)
    for name, a, e in zip(("z", "dx", "dw", "db"), ours, xla):
        assert a.dtype == e.dtype == jnp.complex128, name
        assert rel_err(a, e) <= GRAD_TOL, name


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.int32])
@pytest.mark.parametrize("case", ["1d-same-lower-dil2-groups2", "basic", "3d-stride-same"])
def test_integer_operands_of_every_rank_are_exact(case, dtype):
    if case in ND_CASES:
        x, w, b, cfg = nd_case_operands(case)
    else:
        x, w, b, cfg = case_operands(case, "NHWC")
    x, w, b = (jnp.asarray(np.round(8 * a), dtype) for a in (x, w, b))
    z = jaxconv.conv(x, w, b, **cfg)
    expected = lax_conv(x, w, b, **cfg)
    assert z.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(np.asarray(z), np.asarray(expected))
