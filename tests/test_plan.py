"""plan.py: the plans `choose` returns, as data; what `supported` lists; `Plan` as a value.

The expected choices are worked out by hand from the thresholds in each comment, not read
back from the code.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src import convolution
from jaxconv._src.evaluation import plan as plans
from jaxconv._src.evaluation.plan import PLAIN, Plan
from jaxconv._src.geometry import conv_geometry
from tests.helpers import ALL_CASES, CHUNK_CASES, case_operands, geometry_of


def _geom(n, c, o, hw, khw=(3, 3), stride=1, padding="VALID", dilation=1, groups=1):
    return jaxconv.conv2d_geometry(
        (n, c, *hw),
        (o, c // groups, *khw),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )


# The benchmark's workloads A–F on the CPU. Chunks: the images nearest 6144 output positions
# (Winograd: at least 2^19 / O), a divisor of N if one is at least half that. Winograd's ∂L/∂W
# needs 2^22 multiply-adds per GEMM: (2×2 tiles per image over all phases) · images · C · O.
# A: 1 channel, shallow. B: 24×24 outputs; Winograd chunk max(6144, 2^19/64 = 8192) / 576 =
#   14.2 -> 8 (divides 128); nothing to pad (24×24 is whole tiles) so the forward takes its
#   chunks as state; ∂L/∂W 12·12·8·32·64 = 2^21.2 < 2^22 -> GEMM over all taps (depth 288),
#   chunk 6144 / 576 = 10.7 -> 8. C: stride 2, GEMMs, 16×16 outputs, 6144 / 256 = 24 -> 16;
#   depth 576 -> all taps; a 2-D row of 3 taps, so the forward joins its windows by pads.
#   D: 56×56, 8192 / 3136 = 2.6 -> 2 (divides 32);
#   28·28·2·64·64 = 2^22.6 -> Winograd ∂L/∂W; SAME pads. E: dilation 2, 32×32 outputs, 2^19 / 32
#   = 16384 / 1024 = 16; 4 phases of 8·8 tiles · 16 · 32 · 32 = 2^22 exactly -> Winograd;
#   ∂L/∂W. F: depthwise, the forward and ∂L/∂W in chunks of about 6144·64 = 393216 output values:
#   393216 / (56·56·64 = 200704 per image) = 1.96 -> 2; its ∂L/∂W runs the 9 taps in a loop.
WORKLOADS = {
    "A": (
        _geom(128, 1, 32, (28, 28)),
        Plan(forward="fused", grad_input="shallow", grad_kernel="shallow"),
    ),
    "B": (
        _geom(128, 32, 64, (26, 26)),
        Plan("winograd", "winograd", "gemm-taps", 8, 8, 8, True, True),
    ),
    "C": (
        _geom(64, 64, 128, (32, 32), stride=2, padding="SAME"),
        Plan("gemm-rows", "gemm-rows", "gemm-taps", 16, 16, 16, False, True, rows_by_pads=True),
    ),
    "D": (
        _geom(32, 64, 64, (56, 56), padding="SAME"),
        Plan("winograd", "winograd", "winograd", 2, 2, 2, False, True),
    ),
    "E": (
        _geom(32, 32, 32, (32, 32), padding="SAME", dilation=2),
        Plan("winograd", "winograd", "winograd", 16, 16, 16, False, True),
    ),
    "F": (
        _geom(32, 64, 64, (56, 56), padding="SAME", groups=64),
        Plan(
            forward="fused",
            grad_input="depthwise",
            grad_kernel="depthwise",
            forward_chunk=2,
            grad_kernel_chunk=2,
            taps_in_loop=True,
        ),
    ),
}


@pytest.mark.parametrize("workload", WORKLOADS)
def test_cpu_plans_of_the_workloads(workload):
    geom, expected = WORKLOADS[workload]
    assert jaxconv.choose(geom, "cpu") == expected
    assert jaxconv.choose(geom) == expected  # the CPU by default


def test_grad_input_on_the_padded_cotangent_for_2d_channels_last_rows():
    # Layer J, 5×5 SAME: its ∂L/∂X by kernel rows on the padded ∂L/∂Z in NHWC only; the
    # rule leaves channels-first, strided, pointwise and other ranks' layers as they were.
    def padded(x_shape, w_shape, layout, **cfg):
        make = jaxconv.conv1d_geometry if len(x_shape) == 3 else jaxconv.conv2d_geometry
        geom = make(x_shape, w_shape, layout=layout, **cfg)
        return jaxconv.choose(geom, "cpu").grad_input_padded

    assert padded((32, 28, 28, 32), (5, 5, 32, 64), "NHWC", padding="SAME")
    assert not padded((32, 32, 28, 28), (64, 32, 5, 5), "NCHW", padding="SAME")
    assert not padded((32, 28, 28, 32), (5, 5, 32, 64), "NHWC", padding="SAME", stride=2)
    assert not padded((32, 28, 28, 64), (1, 1, 64, 64), "NHWC")
    assert not padded((16, 2048, 128), (9, 128, 128), "NWC", padding="SAME")


def test_shallow_depth_threshold():
    # kh·kw·C/G terms per output: up to 36 fused / one contraction, deeper by GEMMs.
    shallow = ("fused", "shallow", "shallow")

    def forms(geom):
        p = jaxconv.choose(geom)
        return p.forward, p.grad_input, p.grad_kernel

    assert forms(_geom(2, 4, 8, (9, 9), stride=2)) == shallow  # 36 terms
    assert forms(_geom(2, 5, 8, (9, 9), stride=2))[0] == "gemm-rows"  # 45
    assert forms(_geom(2, 8, 8, (9, 9), groups=2)) == shallow  # 36 per group
    assert forms(_geom(2, 8, 8, (9, 9), khw=(7, 7), groups=8)) == (
        "fused",
        "depthwise",
        "depthwise",
    )
    # One input channel in one group: a contraction over O, not depthwise.
    assert forms(_geom(2, 1, 16, (9, 9))) == shallow


def test_pointwise_convolutions_are_one_gemm_on_the_whole_batch():
    # A 1×1 kernel at stride 1 with no padding: GEMM forms, no chunks, however shallow (4 or
    # 32 terms per output would be shallow for any other kernel).
    gemm = Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
    assert jaxconv.choose(_geom(2, 4, 8, (9, 9), khw=(1, 1))) == gemm
    assert jaxconv.choose(_geom(128, 32, 16, (32, 32), khw=(1, 1))) == gemm
    assert jaxconv.choose(_geom(64, 256, 64, (14, 14), khw=(1, 1))) == gemm  # bench G
    assert jaxconv.choose(_geom(8, 8, 8, (9, 9), khw=(1, 1), groups=2)) == gemm  # 2 groups
    # Strided or padded, a 1×1 kernel's windows are copies: the usual rules (depth 4: shallow).
    shallow = ("fused", "shallow", "shallow")
    for geom in (
        _geom(2, 4, 8, (9, 9), khw=(1, 1), stride=2),
        _geom(2, 4, 8, (9, 9), (1, 1), 1, 1),
    ):
        p = jaxconv.choose(geom)
        assert (p.forward, p.grad_input, p.grad_kernel) == shallow
    # One input channel per group is depthwise, 1×1 or not.
    assert jaxconv.choose(_geom(2, 8, 8, (9, 9), khw=(1, 1), groups=8)).grad_input == "depthwise"


@pytest.mark.parametrize(
    "n, c, hw, stride, expected",
    [
        # 393216 output values a chunk: 4×4×960 = 15360 per image, 25.6 -> 26, and 16 is the
        # largest divisor of 128 in [13, 26]; 16×16×144 = 36864 (stride 2), 10.7 -> 11 -> 8;
        # 56×56×64 = 200704, 1.96 -> 2 (F); 7 images of 4×4×8 = 128 values: the whole batch.
        (128, 960, (4, 4), 1, 16),
        (128, 144, (32, 32), 2, 8),
        (32, 64, (56, 56), 1, 2),
        (7, 8, (4, 4), 1, 7),
    ],
)
def test_depthwise_forward_and_kernel_gradient_chunk_by_output_values(n, c, hw, stride, expected):
    geom = _geom(n, c, c, hw, stride=stride, padding=1, groups=c)
    p = jaxconv.choose(geom)
    assert (p.forward, p.grad_input, p.grad_kernel) == ("fused", "depthwise", "depthwise")
    assert (p.forward_chunk, p.grad_input_chunk, p.grad_kernel_chunk) == (expected, None, expected)


def test_kernel_gradient_gemm_over_all_taps_up_to_576_rows():
    # Stride 2 keeps Winograd out; 3·3·64 = 576 rows over all taps, 3·3·65 = 585 by rows.
    assert jaxconv.choose(_geom(2, 64, 8, (9, 9), stride=2)).grad_kernel == "gemm-taps"
    assert jaxconv.choose(_geom(2, 65, 8, (9, 9), stride=2)).grad_kernel == "gemm-rows"


def test_winograd_takes_ungrouped_3x3_at_stride_1():
    assert jaxconv.choose(_geom(2, 5, 8, (9, 9))).forward == "winograd"
    assert jaxconv.choose(_geom(2, 5, 8, (9, 9), dilation=(2, 3))).forward == "winograd"
    assert jaxconv.choose(_geom(2, 16, 8, (9, 9), groups=2)).forward == "gemm-rows"
    assert jaxconv.choose(_geom(2, 8, 8, (9, 9), khw=(3, 2))).forward == "gemm-rows"
    assert jaxconv.choose(_geom(2, 5, 8, (9, 9), stride=(1, 2))).forward == "gemm-rows"
    # Outputs of 4×4 make 4 tiles, too few: the GEMM forms (docs/performance.md); 5×5, 9.
    assert jaxconv.choose(_geom(2, 5, 8, (6, 6))).forward == "gemm-rows"
    assert jaxconv.choose(_geom(2, 5, 8, (7, 7))).forward == "winograd"
    assert jaxconv.choose(_geom(2, 5, 8, (6, 12))).forward == "winograd"  # 2×5 tiles
    # Small: the chunk is the whole batch and its GEMMs are far below 2^22: ∂L/∂W by GEMM.
    small = jaxconv.choose(_geom(2, 5, 8, (9, 9)))
    assert small.grad_kernel == "gemm-taps" and small.grad_kernel_chunk == 2


@pytest.mark.parametrize(
    "n, out_hw, expected",
    [
        (128, (24, 24), 8),  # 10.7 images nearest 11; 8 is the largest divisor >= 6
        (32, (56, 56), 2),  # 1.96 -> 2
        (5, (32, 64), 3),  # 3 images; no divisor of 5 in [2, 3]: chunks of 3 and a remainder
        (4, (8, 8), 4),  # the whole batch fits: no chunks
        (7, (100, 100), 1),  # one image is more than the target: still one image
        (0, (8, 8), 1),
    ],
)
def test_images_per_chunk(n, out_hw, expected):
    geom = jaxconv.conv2d_geometry((n, *out_hw, 1), (1, 1, 1, 1), layout="NHWC")
    assert plans.images_per_chunk(geom, winograd=False) == expected


@pytest.mark.parametrize("platform", ["gpu", "cuda", "rocm", "tpu", "TPU"])
def test_accelerator_plans_have_no_chunks_and_no_fused_contractions(platform):
    for workload, (geom, _) in WORKLOADS.items():
        p = jaxconv.choose(geom, platform)
        assert (p.forward_chunk, p.grad_input_chunk, p.grad_kernel_chunk) == (None,) * 3
        assert not p.chunks_as_state and not p.transpose_by_chunk
        if workload == "F":  # depthwise: no contraction to give the matrix units
            assert (p.forward, p.grad_input, p.grad_kernel) == ("fused", "depthwise", "depthwise")
        else:  # contractions as GEMMs, the shallow A's too
            assert (p.forward, p.grad_input, p.grad_kernel) == (
                "gemm-rows",
                "gemm-rows",
                "gemm-taps",
            )


def test_unknown_platform_is_named():
    with pytest.raises(ValueError, match="unknown `platform` 'metal'"):
        jaxconv.choose(WORKLOADS["A"][0], "metal")


def _case_geometries():
    for table in (ALL_CASES, CHUNK_CASES):
        for case in table:
            for layout in ("NCHW", "NHWC"):
                x, w, _, cfg = case_operands(case, layout, table=table)
                yield geometry_of(x, w, cfg)
    for geom, _ in WORKLOADS.values():
        yield geom


def test_supported_plans_accept_their_geometry_and_cover_every_form():
    seen = set()
    for geom in _case_geometries():
        listed = jaxconv.supported(geom)
        assert listed[0] == PLAIN and len(set(listed)) == len(listed)
        for p in listed:
            assert p.rejection(geom) is None, (p, geom)
            seen |= {("forward", p.forward), ("grad_input", p.grad_input)}
            seen |= {("grad_kernel", p.grad_kernel), ("chunked", p.grad_kernel_chunk is not None)}
            seen.add(("state", p.chunks_as_state))
        for platform in plans.PLATFORMS:
            assert jaxconv.choose(geom, platform) in listed
        families = {(p.forward, p.grad_input, p.grad_kernel) for p in listed}
        winograd = geom.kernel_hw == (3, 3) and geom.stride == (1, 1) and geom.groups == 1
        assert (("winograd",) * 3 in families) == winograd
        assert (("fused", "depthwise", "depthwise") in families) == (
            geom.in_channels == geom.groups
        )
        # Chunks smaller than the batch, i.e. a loop: only with two images or more.
        chunked = [p for p in listed if (p.forward_chunk or geom.batch) < geom.batch]
        if geom.batch == 1:
            assert not chunked
        else:
            assert any(p.forward == "gemm-rows" for p in chunked)
    every_form = {
        *(("forward", f) for f in plans.FORWARD_FORMS),
        *(("grad_input", f) for f in plans.GRAD_INPUT_FORMS),
        *(("grad_kernel", f) for f in plans.GRAD_KERNEL_FORMS),
    }
    assert every_form | {("chunked", True), ("chunked", False), ("state", True)} <= seen


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(forward="gemm"), ValueError, "`forward` must be one of"),
        (dict(grad_input="fused"), ValueError, "`grad_input` must be one of"),
        (dict(grad_kernel="winograd2"), ValueError, "`grad_kernel` must be one of"),
        (dict(forward_chunk=0), ValueError, "`forward_chunk` must be >= 1"),
        (dict(grad_kernel_chunk=1.5), TypeError, "`grad_kernel_chunk` must be an int or None"),
        (dict(grad_input_chunk=True), TypeError, "`grad_input_chunk` must be an int or None"),
        (dict(chunks_as_state=1), TypeError, "`chunks_as_state` must be a bool"),
        (dict(complex_as_real=1), TypeError, "`complex_as_real` must be a bool"),
        (dict(rows_in_loop="yes"), TypeError, "`rows_in_loop` must be a bool"),
    ],
)
def test_plan_validates_its_fields(kwargs, error, message):
    with pytest.raises(error, match=message):
        Plan(**kwargs)


@pytest.mark.parametrize(
    "complex_dtype, real_dtype", [("complex64", "float32"), ("complex128", "float64")]
)
def test_complex_operands_take_the_real_plan_three_times_on_the_whole_batch(
    complex_dtype, real_dtype
):
    # docs/performance.md#complex-operands: workload P, chunks against the whole batch.
    geom = jaxconv.conv2d_geometry((32, 32, 32, 32), (32, 32, 3, 3), padding="SAME")
    real, cplx = plans.choose(geom, "cpu", real_dtype), plans.choose(geom, "cpu", complex_dtype)
    assert real.forward == "winograd" and real.forward_chunk is not None
    assert not real.complex_as_real and cplx.complex_as_real
    forms = ("forward", "grad_input", "grad_kernel")
    assert [getattr(cplx, f) for f in forms] == [getattr(real, f) for f in forms]
    assert {cplx.forward_chunk, cplx.grad_input_chunk, cplx.grad_kernel_chunk} == {None}
    assert cplx.real == dataclasses.replace(cplx, complex_as_real=False)
    assert str(cplx).endswith(", complex by 3 real")
    assert plans.choose(geom, "gpu", complex_dtype) == plans.choose(geom, "gpu", real_dtype)


def test_3d_kernels_of_64_taps_loop_over_their_rows():
    # docs/performance.md#every-rank-plans: O (4×4×4) faster and quicker to compile in a
    # loop, N (3×3×3) slower in one.
    cases = {
        (1, 16): ((2, 8, 40), (8, 8, 16), False),  # 1-D: one row, nothing to loop
        (2, 64): ((2, 8, 20, 20), (8, 8, 8, 8), False),
        (3, 27): ((2, 8, 12, 12, 12), (8, 8, 3, 3, 3), False),
        (3, 64): ((2, 8, 12, 12, 12), (8, 8, 4, 4, 4), True),
        (3, 48): ((2, 8, 12, 12, 12), (8, 8, 3, 4, 4), False),
    }
    for (rank, taps), (x_shape, w_shape, looped) in cases.items():
        geom = conv_geometry(
            "test",
            x_shape,
            w_shape,
            rank=rank,
            stride=2,
            padding="VALID",
            dilation=1,
            groups=1,
            layout="NC" + "DHW"[3 - rank :],
        )
        plan = plans.choose(geom, "cpu")
        assert plan.forward == "gemm-rows" and plan.fold_axes == 1, (rank, taps)
        assert plan.rows_in_loop is looped, (rank, taps)
        assert plans.choose(geom, "gpu").rows_in_loop is False
    assert str(Plan(rows_in_loop=True)).endswith(", rows in a loop")


def test_small_images_loop_over_their_kernel_rows():
    # docs/performance.md#memory: at most 16 output positions an image, the kernel rows run
    # in a loop, so the forward's windows are not held for ∂L/∂W; one row has no loop.
    cases = {
        "2-D, 4×4 outputs": ((8, 32, 4, 4), (32, 32, 3, 3), 1, True),
        "2-D, 5×4 outputs": ((8, 32, 5, 4), (32, 32, 3, 3), 1, False),
        "3-D, 2×2×2 outputs": ((8, 32, 2, 2, 2), (32, 32, 3, 3, 3), 1, True),
        "1-D, one row": ((8, 32, 16), (32, 32, 3), 1, False),
        "1×1 kernel, one row": ((8, 32, 4, 4), (32, 32, 1, 1), 1, False),
    }
    for name, (x_shape, w_shape, stride, looped) in cases.items():
        rank = len(x_shape) - 2
        geom = conv_geometry(
            "test",
            x_shape,
            w_shape,
            rank=rank,
            stride=stride,
            padding="SAME",
            dilation=1,
            groups=1,
            layout="NC" + "DHW"[3 - rank :],
        )
        assert plans.choose(geom, "cpu").rows_in_loop is looped, name
        assert plans.choose(geom, "gpu").rows_in_loop is False, name


def test_shallow_kernel_gradient_of_a_large_batch_runs_in_chunks():
    # docs/performance.md#memory: the stacked windows of a network's stem would be held at
    # the step's peak; those of a small layer are faster on the whole batch.
    stem = _geom(128, 3, 64, (32, 32), padding="SAME")
    small = _geom(128, 1, 32, (28, 28))
    windows = 128 * 32 * 32 * 27
    assert windows > plans.SHALLOW_KERNEL_GRAD_MAX_WINDOWS >= 128 * 26 * 26 * 9
    chunked, whole = plans.choose(stem, "cpu"), plans.choose(small, "cpu")
    assert chunked.grad_kernel == "shallow" and 1 <= (chunked.grad_kernel_chunk or 128) < 128
    assert whole.grad_kernel == "shallow" and whole.grad_kernel_chunk is None


def test_plans_are_frozen_values():
    p = Plan(forward="winograd", forward_chunk=4)
    assert p == Plan(forward="winograd", forward_chunk=4) and hash(p) == hash(
        Plan(forward="winograd", forward_chunk=4)
    )
    assert p != dataclasses.replace(p, forward_chunk=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.forward = "plain"  # type: ignore[misc]
    assert str(p) == "fwd winograd/4, dX plain, dW plain"


def test_a_plan_that_does_not_fit_is_refused_before_computing():
    x, w = jnp.ones((2, 4, 9, 9)), jnp.ones((8, 2, 3, 3))  # groups 2: no Winograd, C/G = 2
    with pytest.raises(ValueError, match=r"conv2d: `plan` .* 'winograd' needs a 3×3 kernel"):
        jaxconv.conv2d(x, w, groups=2, plan=Plan(forward="winograd"))
    with pytest.raises(ValueError, match=r"conv2d_grad_kernel: `plan` .* 'depthwise' needs one"):
        jaxconv.conv2d_grad_kernel(
            x, jnp.ones((2, 8, 7, 7)), w.shape, groups=2, plan=Plan(grad_kernel="depthwise")
        )
    with pytest.raises(TypeError, match=r'`plan` must be "auto", "plain" or a jaxconv\.Plan'):
        jaxconv.conv2d(x, w, groups=2, plan="fast")
    with pytest.raises(TypeError, match="`plan` must be"):
        jaxconv.conv_transpose2d(jnp.ones((2, 8, 5, 5)), w, groups=2, plan=None)


def test_plans_key_the_jit_cache():
    x, w = jnp.ones((2, 5, 8, 8)), jnp.ones((4, 5, 3, 3))
    cache = convolution._conv_jit
    gemm = Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
    jaxconv.conv2d(x, w, plan=gemm)
    size = cache._cache_size()
    jaxconv.conv2d(
        x, w, plan=Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
    )
    assert cache._cache_size() == size  # an equal plan: the same program
    jaxconv.conv2d(x, w, plan=dataclasses.replace(gemm, forward="winograd"))
    assert cache._cache_size() == size + 1  # another plan: a program of its own

    traces = []

    @functools.partial(jax.jit, static_argnames="plan")
    def step(x, w, plan):
        traces.append(plan)
        return jax.grad(lambda w: jnp.sum(jaxconv.conv2d(x, w, plan=plan)))(w)

    step(x, w, plan=gemm)
    step(x, w, plan=dataclasses.replace(gemm))
    step(x, w, plan="plain")
    step(x, w, plan="plain")
    assert traces == [gemm, "plain"]


def test_auto_lowers_the_plan_of_each_platform():
    # 16 images of 24×24 outputs: the CPU plan loops over two chunks of 8 by Winograd (16
    # GEMMs, and 2 for the kernel's tiles); the GPU and TPU plans take the whole batch as three
    # kernel-row GEMMs. Exported for another platform inside `plans_for`, nothing of the CPU
    # plan is left.
    x, w = jnp.ones((16, 32, 26, 26)), jnp.ones((64, 32, 3, 3))
    forward = jax.jit(lambda x, w: jaxconv.conv2d(x, w))
    with jaxconv.plans_for("cuda", "tpu"):
        for platform, loops, dots in (("cpu", 1, 18), ("cuda", 0, 3), ("tpu", 0, 3)):
            text = jax.export.export(forward, platforms=[platform])(x, w).mlir_module()
            assert text.count("stablehlo.while") == loops, platform
            assert text.count("stablehlo.dot_general") == dots, platform
        both = jax.export.export(forward, platforms=["cpu", "cuda"])(x, w).mlir_module()
        assert "stablehlo.case" in both  # both plans, chosen by the platform it runs on
    plain = jax.jit(lambda x, w: jaxconv.conv2d(x, w, plan="plain"))
    text = jax.export.export(plain, platforms=["cpu"])(x, w).mlir_module()
    assert text.count("stablehlo.dot_general") == 9  # one contraction per tap
    assert "stablehlo.case" not in text  # one plan: no choice by platform
    np.testing.assert_allclose(forward(x, w), plain(x, w), rtol=1e-5)


def test_auto_traces_the_plans_of_this_processes_platforms_only():
    # Outside `plans_for`, "auto" traces the plans of the backends this process has: on a
    # CPU-only process the CPU's plan alone, with no choice by platform, whatever the export
    # is for; the same values either way.
    from jaxconv._src.evaluation import evaluate

    backends = set(jax.extend.backend.backends())
    if backends != {"cpu"}:
        pytest.skip(f"this process has backends {sorted(backends)}, not the CPU's alone")
    assert evaluate.traced_platforms() == ("cpu",)
    x, w = jnp.ones((16, 32, 26, 26)), jnp.ones((64, 32, 3, 3))
    forward = jax.jit(lambda x, w: jaxconv.conv2d(x, w))
    for platform in ("cpu", "cuda"):
        text = jax.export.export(forward, platforms=[platform])(x, w).mlir_module()
        assert "stablehlo.case" not in text, platform
        assert text.count("stablehlo.while") == 1, platform
        assert text.count("stablehlo.dot_general") == 18, platform
    with jaxconv.plans_for("gpu"):
        assert evaluate.traced_platforms() == ("cpu", "gpu")
        with jaxconv.plans_for("tpu"):
            assert evaluate.traced_platforms() == ("cpu", "gpu", "tpu")
        assert evaluate.traced_platforms() == ("cpu", "gpu")
    assert evaluate.traced_platforms() == ("cpu",)


def test_plans_for_names_an_unknown_platform():
    context = jaxconv.plans_for("metal")
    with pytest.raises(ValueError, match=r"plans_for: unknown `platform` 'metal'"):
        context.__enter__()
