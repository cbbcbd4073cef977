"""conv_general_dilated: lax.conv_general_dilated's contract, values and gradients, by
jaxconv's rules; a named error where it cannot follow lax."""

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

import jaxconv
from tests.helpers import jit_fast_compile, rel_err

TOL = 1e-10


def _shape(spec: str, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[c] for c in spec)


def _assert_matches_lax(lhs, rhs, cot_seed=0, **kwargs):
    """Value and both gradients of jaxconv's and lax's, compiled as one program."""

    @jit_fast_compile
    def both(lhs, rhs):
        out = []
        for conv in (jaxconv.conv_general_dilated, lax.conv_general_dilated):
            z, vjp = jax.vjp(lambda a, b, conv=conv: conv(a, b, **kwargs), lhs, rhs)
            cot = jnp.asarray(np.random.default_rng(cot_seed).standard_normal(z.shape), z.dtype)
            out.append((z, *vjp(cot)))
        return out

    ours, theirs = both(lhs, rhs)
    for name, a, b in zip(("out", "d_lhs", "d_rhs"), ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert rel_err(a, b) <= TOL, name


def _operands(lhs_spec, rhs_spec, n=2, c=4, o=6, hw=(9, 8), khw=(3, 2), groups=1, seed=0):
    rng = np.random.default_rng(seed)
    sizes = dict(N=n, C=c, H=hw[0], W=hw[1])
    lhs = rng.standard_normal(_shape(lhs_spec, sizes))
    rhs = rng.standard_normal(_shape(rhs_spec, dict(O=o, I=c // groups, H=khw[0], W=khw[1])))
    return jnp.asarray(lhs), jnp.asarray(rhs)


DIMENSION_NUMBERS = [
    None,
    ("NCHW", "OIHW", "NCHW"),
    ("NHWC", "HWIO", "NHWC"),
    ("NCHW", "HWIO", "NHWC"),  # mixed, as in JAX's own tests
    ("NHWC", "OIHW", "NCHW"),
    ("CHWN", "IOWH", "HNWC"),  # spatial axes in the kernel's order (W before H here)
    ("WNCH", "HWOI", "CWNH"),
]


@pytest.mark.parametrize("dims", DIMENSION_NUMBERS)
def test_dimension_numbers(dims):
    specs = dims or ("NCHW", "OIHW", "NCHW")
    lhs, rhs = _operands(specs[0], specs[1])
    _assert_matches_lax(
        lhs, rhs, window_strides=(2, 1), padding="SAME", rhs_dilation=(1, 2), dimension_numbers=dims
    )


def test_conv_dimension_numbers_objects():
    lhs, rhs = _operands("NHWC", "HWIO")
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    _assert_matches_lax(lhs, rhs, window_strides=(1, 1), padding="VALID", dimension_numbers=dims)


# (lhs_dilation, window_strides, padding, rhs_dilation): the input gradient of a strided conv is
# a conv with input dilation (derivation eq. 38); strides and negative paddings beside it.
LHS_DILATION_CASES = [
    ((2, 2), (1, 1), ((2, 2), (1, 1)), (1, 1)),
    ((2, 3), (2, 1), ((1, 2), (0, 1)), (1, 2)),
    ((3, 1), (1, 3), ((-1, 2), (2, -1)), (2, 1)),
    ((1, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((4, 2), (3, 1), ((3, -2), (1, 1)), (2, 3)),
]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("lhs_dilation, strides, padding, rhs_dilation", LHS_DILATION_CASES)
def test_lhs_dilation(lhs_dilation, strides, padding, rhs_dilation, groups):
    lhs, rhs = _operands("NCHW", "OIHW", groups=groups)
    _assert_matches_lax(
        lhs,
        rhs,
        window_strides=strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        feature_group_count=groups,
    )


def test_the_input_gradient_of_a_strided_conv_is_a_conv_with_input_dilation():
    # ∂L/∂X of a stride-2 conv = the full correlation of the 2-dilated ∂L/∂Z with the rotated,
    # channel-swapped kernel (eq. 25, derivation §13): conv_general_dilated computes it.
    rng = np.random.default_rng(1)
    x, w = (
        jnp.asarray(rng.standard_normal((2, 3, 9, 9))),
        jnp.asarray(rng.standard_normal((4, 3, 3, 3))),
    )
    g = jnp.asarray(rng.standard_normal((2, 4, 4, 4)))
    expected = jaxconv.conv2d_grad_input(g, w, x.shape, stride=2)
    rotated = jnp.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    got = jaxconv.conv_general_dilated(g, rotated, (1, 1), [(2, 2), (2, 2)], lhs_dilation=(2, 2))
    assert rel_err(got, expected) <= 1e-12


@pytest.mark.parametrize("batch_groups, n, o", [(2, 4, 6), (3, 6, 3), (4, 4, 8)])
@pytest.mark.parametrize("dims", [None, ("NHWC", "HWIO", "NHWC")])
def test_batch_group_count(batch_groups, n, o, dims):
    specs = dims or ("NCHW", "OIHW", "NCHW")
    lhs, rhs = _operands(specs[0], specs[1], n=n, o=o)
    _assert_matches_lax(
        lhs,
        rhs,
        window_strides=(1, 2),
        padding=[(1, 0), (2, 1)],
        batch_group_count=batch_groups,
        dimension_numbers=dims,
    )


@pytest.mark.parametrize(
    "dtype, preferred",
    [(jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float32), (jnp.float32, jnp.float64)],
)
def test_preferred_element_type_accumulates_and_returns_that_type(dtype, preferred):
    lhs, rhs = (a.astype(dtype) for a in _operands("NCHW", "OIHW"))
    kwargs = dict(window_strides=(1, 1), padding="SAME", preferred_element_type=preferred)
    z = jaxconv.conv_general_dilated(lhs, rhs, **kwargs)
    expected = lax.conv_general_dilated(lhs, rhs, precision="highest", **kwargs)
    assert z.dtype == expected.dtype == preferred
    # Products of half-precision numbers are exact in float32: only the sums' order differs.
    assert rel_err(z, expected) <= (1e-6 if preferred == jnp.float32 else 1e-14)
    grads = jax.grad(lambda a, b: jaxconv.conv_general_dilated(a, b, **kwargs).sum(), (0, 1))
    assert [g.dtype for g in grads(lhs, rhs)] == [dtype, dtype]


@pytest.mark.parametrize(
    "precision",
    [
        None,
        "highest",
        "HIGH",
        "default",
        "float32",
        lax.Precision.HIGHEST,
        (lax.Precision.HIGH, lax.Precision.HIGH),
    ],
)
def test_precision_reaches_the_contractions(precision):
    lhs, rhs = (a.astype(jnp.float32) for a in _operands("NCHW", "OIHW"))
    conv = functools.partial(
        jaxconv.conv_general_dilated, window_strides=(1, 1), padding="SAME", precision=precision
    )
    z = conv(lhs, rhs)
    assert (
        rel_err(z, lax.conv_general_dilated(lhs, rhs, (1, 1), "SAME", precision="highest")) <= 1e-5
    )
    if precision is not None:  # forward and backward both traced at that precision
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda a: conv(a, rhs).sum()))(lhs))
        name = precision[0] if isinstance(precision, tuple) else precision
        name = name.name if isinstance(name, lax.Precision) else name.upper()
        assert f"Precision.{name}" in jaxpr or name in ("FLOAT32",)


def test_gradients_are_the_hand_rules():
    lhs, rhs = _operands("NHWC", "HWIO")
    conv = functools.partial(
        jaxconv.conv_general_dilated,
        window_strides=(2, 1),
        padding=[(1, 1), (0, 2)],
        lhs_dilation=(2, 1),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda a, b: conv(a, b).sum(), (0, 1)))(lhs, rhs))
    assert "conv_general_dilated" not in jaxpr  # slices and contractions only


def test_out_sharding_places_the_result():
    lhs, rhs = _operands("NCHW", "OIHW")
    mesh = jax.make_mesh((1,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    z = jaxconv.conv_general_dilated(lhs, rhs, (1, 1), "SAME", out_sharding=sharding)
    assert z.sharding.is_equivalent_to(sharding, z.ndim)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(lhs=np.zeros((2, 4, 9))),
            ValueError,
            "`lhs` of shape (2, 4, 9) and `rhs` of shape (6, 4, 3, 3) must have the same number",
        ),
        (dict(rhs=np.zeros((6, 4, 3, 3, 1))), ValueError, "`rhs` of shape (6, 4, 3, 3, 1) must"),
        # lax takes 0 and more than 3 spatial dimensions; jaxconv says it does not.
        (
            dict(lhs=np.zeros((2, 4)), rhs=np.zeros((6, 4))),
            ValueError,
            "`lhs` of shape (2, 4) has 0 spatial dimensions; jaxconv computes convolutions of "
            "1, 2 or 3 spatial dimensions",
        ),
        (
            dict(lhs=np.zeros((2, 4, 3, 3, 3, 3)), rhs=np.zeros((6, 4, 1, 1, 1, 1))),
            ValueError,
            "has 4 spatial dimensions",
        ),
        (
            dict(lhs=np.zeros((2, 4, 9, 8), bool), rhs=np.zeros((6, 4, 3, 3), bool)),
            TypeError,
            "`lhs` must have a floating, complex or integer dtype, got bool",
        ),
        (
            dict(rhs=np.zeros((6, 4, 3, 3), np.float32)),
            TypeError,
            "`lhs` and `rhs` must have the same dtype, got float64 and float32",
        ),
        (
            dict(preferred_element_type=jnp.int32),
            TypeError,
            "`preferred_element_type` int32 does not fit operands of dtype float64",
        ),
        (dict(preferred_element_type=jnp.float32), TypeError, "is narrower than the operands'"),
        (dict(preferred_element_type="cake"), TypeError, "`preferred_element_type` is not a dtype"),
        (dict(padding="SAME", lhs_dilation=(2, 1)), ValueError, "`padding` 'SAME' is a string"),
        (dict(feature_group_count=2, batch_group_count=2), ValueError, "at most one of"),
        (dict(batch_group_count=4), ValueError, "`batch_group_count` (4) must divide the output"),
        (
            dict(batch_group_count=3, rhs=np.zeros((3, 4, 3, 3))),
            ValueError,
            "must divide the batch N = 2",
        ),
        (dict(rhs=np.zeros((6, 3, 3, 3))), ValueError, "the input features C = 4 must be"),
        (dict(window_strides=2), TypeError, "`window_strides` must be a sequence of two ints"),
        (dict(window_strides=(0, 1)), ValueError, "`window_strides` must be >= 1"),
        (dict(lhs_dilation=(1, 1, 1)), TypeError, "`lhs_dilation` must be a sequence of two"),
        (dict(dimension_numbers=("NCH", "OIH", "NCH")), ValueError, "two spatial letters"),
        (dict(dimension_numbers=("NCHW", "OIHW", "NCWD")), ValueError, "same spatial letters"),
        (dict(dimension_numbers="NCHW"), TypeError, "`dimension_numbers` must be None, three"),
        (dict(feature_group_count=0), ValueError, "`feature_group_count` must be >= 1"),
        (dict(precision="fast"), ValueError, "`precision` must be one of"),
        (dict(precision=("high", "highest")), ValueError, "one precision for both operands"),
        (dict(padding=[(1, 1), (-9, 0)]), ValueError, "`padding` ((1, 1), (-9, 0)) crops more"),
    ],
)
def test_where_it_cannot_follow_lax_the_error_names_the_argument(kwargs, error, message):
    args = dict(
        lhs=np.zeros((2, 4, 9, 8)),
        rhs=np.zeros((6, 4, 3, 3)),
        window_strides=(1, 1),
        padding="VALID",
    )
    args.update(kwargs)
    with pytest.raises(error, match="^conv_general_dilated: .*" + re.escape(message)):
        jaxconv.conv_general_dilated(**args)


SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


@st.composite
def _calls(draw, ranks=(2,)):
    """A valid call of a rank drawn from `ranks`: any dimension numbers, input and kernel
    dilation, strides, explicit or string padding, feature or batch groups."""
    rank = draw(st.sampled_from(ranks))
    letters = SPATIAL[rank]
    perm = lambda s: "".join(draw(st.permutations(s)))  # noqa: E731
    dims = (perm("NC" + letters), perm("OI" + letters), perm("NC" + letters))
    kind = draw(st.sampled_from(["plain", "features", "batch"]))
    groups = 1 if kind == "plain" else draw(st.integers(2, 3))
    n = groups * draw(st.integers(1, 2)) if kind == "batch" else draw(st.integers(1, 3))
    c_per_group = draw(st.integers(1, 3))
    c = c_per_group * (groups if kind == "features" else 1)
    o = groups * draw(st.integers(1, 2))
    small = rank == 3  # k³ taps: each example is a program of its own
    khw = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(rank))
    lhs_dilation = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(rank))
    rhs_dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    hw = tuple(draw(st.integers(1, 4 if small else 6)) for _ in range(rank))
    if lhs_dilation == (1,) * rank and draw(st.booleans()):
        padding = draw(st.sampled_from(["VALID", "SAME", "SAME_LOWER"]))
    else:
        padding = [(draw(st.integers(-1, 3)), draw(st.integers(-1, 3))) for _ in range(rank)]
    # Per-axis arguments follow the kernel's order of the spatial letters (as lax pairs them);
    # the padded, dilated input must hold the dilated kernel at least once.
    order = [letter for letter in dims[1] if letter in letters]
    for axis in range(rank):
        if isinstance(padding, str):
            break
        need = rhs_dilation[axis] * (khw[axis] - 1) + 1 - sum(padding[axis])
        dilated = (hw[axis] - 1) * lhs_dilation[axis] + 1
        if dilated < need:
            padding[axis] = (padding[axis][0] + need - dilated, padding[axis][1])
    sizes = dict(N=n, C=c, **dict(zip(order, hw)))
    kernel = dict(O=o, I=c_per_group, **dict(zip(order, khw)))
    return (
        _shape(dims[0], sizes),
        _shape(dims[1], kernel),
        dict(
            window_strides=strides,
            padding=padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dims,
            feature_group_count=groups if kind == "features" else 1,
            batch_group_count=groups if kind == "batch" else 1,
        ),
    )


@pytest.mark.slow
@settings(max_examples=settings.default.max_examples // 2)
@given(_calls(), st.integers(0, 2**31 - 1))
def test_hypothesis_matches_lax(call, seed):
    lhs_shape, rhs_shape, kwargs = call
    rng = np.random.default_rng(seed)
    lhs, rhs = (jnp.asarray(rng.standard_normal(s)) for s in (lhs_shape, rhs_shape))
    _assert_matches_lax(lhs, rhs, cot_seed=seed, **kwargs)


def test_every_supported_plan_matches_lax():
    lhs, rhs = _operands("NHWC", "HWIO", n=3)
    kwargs = dict(
        window_strides=(2, 1),
        padding=[(2, 1), (1, 1)],
        lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    # The geometry of the NCHW conv2d it becomes: 3 images, 4 channels, dilated 17×15 input.
    geom = jaxconv.ConvGeometry(
        layout="NCHW",
        input_rank=4,
        batch=3,
        in_channels=4,
        out_channels=6,
        groups=1,
        in_size=(9, 8),
        kernel_size=(3, 2),
        stride=(2, 1),
        dilation=(1, 1),
        padding=((2, 1), (1, 1)),
        out_size=(9, 16),
        input_dilation=(2, 2),
    )
    plans = jaxconv.supported(geom)
    assert len(plans) >= 5 and not any(p.forward == "winograd" for p in plans)
    expected = lax.conv_general_dilated(lhs, rhs, **kwargs)
    for plan in plans:
        assert rel_err(jaxconv.conv_general_dilated(lhs, rhs, plan=plan, **kwargs), expected) <= TOL


# --- One and three spatial dimensions. ------------------------------------------------------

ND_DIMENSION_NUMBERS = [
    None,
    ("NWC", "WIO", "NWC"),
    ("NCW", "WIO", "NWC"),  # mixed
    ("WNC", "OWI", "CWN"),
    ("NCDHW", "OIDHW", "NCDHW"),
    ("NDHWC", "DHWIO", "NDHWC"),
    ("NDHWC", "OIDHW", "NCDHW"),  # mixed
    ("CDWHN", "IOWHD", "WNDCH"),  # spatial axes in the kernel's order (W, H, D here)
]


@pytest.mark.parametrize("dims", ND_DIMENSION_NUMBERS)
@pytest.mark.parametrize("groups", ["features", "batch"])
def test_dimension_numbers_and_groups_of_one_and_three_axes(dims, groups):
    rank = 1 if dims is None or len(dims[0]) == 3 else 3
    specs = dims or ("NCW", "OIW", "NCW")
    letters = SPATIAL[rank]
    rng = np.random.default_rng(rank)
    size = dict(zip(letters, (5, 6, 4)[-rank:] if rank == 3 else (11,)))
    k = dict(zip(letters, (2, 3, 2)[-rank:] if rank == 3 else (3,)))
    n, c, o = (4, 3, 4) if groups == "batch" else (2, 4, 6)
    lhs = jnp.asarray(rng.standard_normal(_shape(specs[0], dict(N=n, C=c, **size))))
    i = c if groups == "batch" else c // 2
    rhs = jnp.asarray(rng.standard_normal(_shape(specs[1], dict(O=o, I=i, **k))))
    _assert_matches_lax(
        lhs,
        rhs,
        window_strides=(2,) * rank,
        padding=[(1, 2)] * rank,
        lhs_dilation=(1,) * (rank - 1) + (2,),
        rhs_dilation=(2,) + (1,) * (rank - 1),
        dimension_numbers=dims,
        feature_group_count=2 if groups == "features" else 1,
        batch_group_count=2 if groups == "batch" else 1,
    )


# A third of the profile's examples (40 in CI), as for the rules' sweep of every rank.
@settings(max_examples=settings.default.max_examples // 3)
@given(_calls(ranks=(1, 3)), st.integers(0, 2**31 - 1))
def test_hypothesis_one_and_three_axes_match_lax(call, seed):
    lhs_shape, rhs_shape, kwargs = call
    rng = np.random.default_rng(seed)
    lhs, rhs = (jnp.asarray(rng.standard_normal(s)) for s in (lhs_shape, rhs_shape))
    _assert_matches_lax(lhs, rhs, cot_seed=seed, **kwargs)


# --- Dtypes as lax has them: complex and integer operands. ---------------------------------

DTYPE_CALLS = {
    # (lhs spec, rhs spec, out spec, lhs shape sizes, rhs sizes, keyword arguments)
    "1d-mixed-dims-features": (
        ("NWC", "OIW", "NCW"),
        dict(N=2, C=4, W=11),
        dict(O=6, I=2, W=3),
        dict(window_strides=(2,), padding=[(1, 2)], rhs_dilation=(2,), feature_group_count=2),
    ),
    "2d-input-dilation-batch-groups": (
        ("NCHW", "HWIO", "NHWC"),
        dict(N=4, C=3, H=6, W=5),
        dict(O=4, I=3, H=2, W=3),
        dict(
            window_strides=(1, 2),
            padding=[(1, 1), (2, 0)],
            lhs_dilation=(2, 1),
            batch_group_count=2,
        ),
    ),
    "3d-same-strided": (
        ("NDHWC", "DHWIO", "NDHWC"),
        dict(N=2, C=3, D=4, H=5, W=4),
        dict(O=2, I=3, D=2, H=3, W=2),
        dict(window_strides=(1, 2, 1), padding="SAME"),
    ),
}


def _dtype_call(case, dtype, seed=0):
    dims, lhs_sizes, rhs_sizes, kwargs = DTYPE_CALLS[case]
    rng = np.random.default_rng(seed)
    shapes = _shape(dims[0], lhs_sizes), _shape(dims[1], rhs_sizes)
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        lo, hi = max(info.min, -100), min(info.max, 100)
        operands = [rng.integers(lo, hi, s, endpoint=True) for s in shapes]
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        operands = [rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in shapes]
    else:
        operands = [rng.standard_normal(s) for s in shapes]
    lhs, rhs = (jnp.asarray(a, dtype) for a in operands)
    return lhs, rhs, dict(kwargs, dimension_numbers=dims)


@pytest.mark.parametrize("dtype", [jnp.complex128, jnp.complex64])
@pytest.mark.parametrize("case", DTYPE_CALLS)
def test_complex_values_and_vjps_equal_lax(case, dtype):
    # JAX's convention: the VJP is the transpose of the linear map, with no conjugation.
    lhs, rhs, kwargs = _dtype_call(case, dtype)
    tol = TOL if dtype == jnp.complex128 else 1e-5

    @jit_fast_compile
    def both(lhs, rhs):
        out = []
        for conv in (jaxconv.conv_general_dilated, lax.conv_general_dilated):
            z, vjp = jax.vjp(lambda a, b, conv=conv: conv(a, b, **kwargs), lhs, rhs)
            rng = np.random.default_rng(5)
            cot = rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape)
            out.append((z, *vjp(jnp.asarray(cot, z.dtype))))
        return out

    ours, theirs = both(lhs, rhs)
    for name, a, b in zip(("out", "d_lhs", "d_rhs"), ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype, name
        assert rel_err(a, b) <= tol, name


@pytest.mark.parametrize(
    "dtype, preferred",
    [
        (jnp.int8, jnp.int32),
        (jnp.int8, None),  # int8 sums wrap, as lax's do
        (jnp.int32, None),
        (jnp.uint8, jnp.int32),
        (jnp.int16, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.complex64, jnp.complex128),
    ],
)
@pytest.mark.parametrize("case", DTYPE_CALLS)
def test_result_dtypes_and_integer_values_follow_lax(case, dtype, preferred):
    lhs, rhs, kwargs = _dtype_call(case, dtype, seed=1)
    kwargs = dict(kwargs, preferred_element_type=preferred)
    ours = jaxconv.conv_general_dilated(lhs, rhs, **kwargs)
    theirs = lax.conv_general_dilated(lhs, rhs, **kwargs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if jnp.issubdtype(ours.dtype, jnp.integer):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))  # exact
    else:
        assert rel_err(ours, theirs) <= 1e-5


@pytest.mark.parametrize("case", DTYPE_CALLS)
def test_integer_operands_have_jax_s_integer_cotangents(case):
    lhs, rhs, kwargs = _dtype_call(case, jnp.int8)
    kwargs = dict(kwargs, preferred_element_type=jnp.int32)
    cotangents = []
    for conv in (jaxconv.conv_general_dilated, lax.conv_general_dilated):
        z, vjp = jax.vjp(lambda a, b, conv=conv: conv(a, b, **kwargs), lhs, rhs)
        cotangents.append(vjp(np.zeros(z.shape, jax.dtypes.float0)))
    for ours, theirs in zip(*cotangents):
        assert ours.dtype == theirs.dtype == jax.dtypes.float0 and ours.shape == theirs.shape
    with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
        jax.grad(lambda a: jaxconv.conv_general_dilated(a, rhs, **kwargs).sum())(lhs)


def test_integer_operands_take_no_winograd_form():
    # Winograd's transforms halve: exact in floating point only. "auto" picks the GEMM forms
    # for integers; a plan that names Winograd is refused.
    x = jnp.asarray(np.random.default_rng(2).integers(-9, 9, (3, 8, 10, 10)), jnp.int32)
    w = jnp.asarray(np.random.default_rng(3).integers(-9, 9, (8, 8, 3, 3)), jnp.int32)
    geom = jaxconv.conv2d_geometry(x.shape, w.shape, padding="SAME")
    assert jaxconv.choose(geom).forward == "winograd"
    assert "winograd" not in str(jaxconv.choose(geom, dtype=jnp.int32))
    assert not any("winograd" in str(p) for p in jaxconv.supported(geom, jnp.int32))
    expected = lax.conv_general_dilated(x, w, (1, 1), "SAME")
    for plan in ("auto", *jaxconv.supported(geom, jnp.int32)):
        ours = jaxconv.conv_general_dilated(x, w, (1, 1), "SAME", plan=plan)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected), err_msg=str(plan))
    winograd = jaxconv.Plan(forward="winograd", grad_input="winograd", grad_kernel="winograd")
    with pytest.raises(ValueError, match=r"'winograd' computes in floating point .* not in int32"):
        jaxconv.conv2d(x, w, padding="SAME", plan=winograd)
