"""Shared test helpers: the XLA reference, operand shapes, random operands, errors.

`lax_conv2d` is `jaxconv.conv2d_xla`, which maps the arguments onto
`jax.lax.conv_general_dilated` without jaxconv's geometry code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import jaxconv
from jaxconv._src.compat import fast_compile_options

lax_conv2d = jaxconv.conv2d_xla


def jit_fast_compile(fn, **jit_kwargs):
    """`jax.jit` with the audit's fast-compile options that this XLA has: for the sweeps, whose
    every example is a new program on tiny operands (`compat.FAST_COMPILE_CANDIDATES`)."""
    return jax.jit(fn, compiler_options=fast_compile_options(), **jit_kwargs)


# For the JAX processes that tests launch to read partitioned programs or to run the demo on
# several devices and processes: XLA's backend at optimisation level 0 compiles about twice
# as fast, and partitioning happens before it (measured: the same collectives, loop trip
# counts and flops; results within float32 rounding).
FAST_BACKEND_XLA_FLAG = "--xla_backend_optimization_level=0"


def operand_shapes(*, batch, c, o, hw, khw, groups, layout, rank=4):
    """(x_shape, w_shape) for the given sizes, in `layout` and input `rank`."""
    (h, w), (kh, kw) = hw, khw
    if rank == 2:
        return (h, w), (kh, kw)
    if layout == "NCHW":
        x_shape, w_shape = (batch, c, h, w), (o, c // groups, kh, kw)
    else:
        x_shape, w_shape = (batch, h, w, c), (kh, kw, c // groups, o)
    return (x_shape[1:] if rank == 3 else x_shape), w_shape


def random_operands(seed, x_shape, w_shape, o, dtype=np.float64, bias=True):
    """Normal x, w and b as jax arrays of `dtype`."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    b = jnp.asarray(rng.standard_normal((o,)), dtype) if bias else None
    return x, w, b


def rel_err(actual, expected) -> float:
    """max|actual − expected| / max|expected| (a norm-relative error)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shapes differ: {actual.shape} and {expected.shape}")
    scale = max(np.max(np.abs(expected), initial=0.0), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual - expected), initial=0.0) / scale)


def value_and_grads(conv, x, w, b, cotangent, cfg):
    """conv(x, w, b) and the gradients of <cotangent, conv(x, w, b)> w.r.t. (x, w, b)."""
    return conv(x, w, b, **cfg), loss_grads(conv, x, w, b, cotangent, **cfg)


def loss_grads(conv, x, w, b, cotangent, **cfg):
    """Gradients of <cotangent, conv(x, w, b)> w.r.t. (x, w, b)."""

    def loss(x, w, b):
        return jnp.vdot(cotangent, conv(x, w, b, **cfg))

    return jax.grad(loss, argnums=(0, 1, 2))(x, w, b)


# --- The case tables the rule, form and public-contract tests share. ------------------------

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

# Deep, ungrouped 3×3 kernels at stride 1, the geometries Winograd's F(2×2, 3×3) takes. Its
# tiles cover 2×2 outputs, so odd output sizes overhang; ∂L/∂X pads ∂L/∂Z by (2d − lo, 2d − hi),
# a crop when the forward padding is wider than 2d. Dilation d splits each axis into d phases
# (eq. 37), each rounded up to whole tiles: outputs to a multiple of 2d.
WINOGRAD_CASES = {
    "valid-even-outputs": (2, 5, 4, (8, 6), (3, 3), 1, "VALID", 1, 1),  # 6×4: whole tiles
    "valid-odd-outputs": (2, 6, 3, (7, 8), (3, 3), 1, "VALID", 1, 1),  # 5×6: overhang
    "same-odd": (1, 5, 4, (5, 7), (3, 3), 1, "SAME", 1, 1),
    "asymmetric": (2, 5, 2, (6, 5), (3, 3), 1, ((2, 0), (0, 3)), 1, 1),
    "negative": (1, 5, 3, (9, 8), (3, 3), 1, ((-1, 2), (1, -2)), 1, 1),
    "wider-than-kernel": (1, 5, 2, (4, 3), (3, 3), 1, ((4, 1), (3, 5)), 1, 1),
    "one-output": (3, 7, 2, (3, 3), (3, 3), 1, "VALID", 1, 1),
    "dilated-whole-tiles": (2, 5, 3, (12, 8), (3, 3), 1, "SAME", 2, 1),  # whole tiles per phase
    "dilated-same": (1, 5, 3, (9, 10), (3, 3), 1, "SAME", 2, 1),  # phases of 5 and 4 rows
    "dilated-asymmetric": (2, 6, 2, (11, 8), (3, 3), 1, ((3, 0), (1, 2)), (2, 3), 1),
    "dilated-negative": (1, 5, 3, (13, 12), (3, 3), 1, ((-1, 5), (2, -1)), (3, 2), 1),
    "dilated-one-output": (2, 5, 2, (5, 7), (3, 3), 1, "VALID", (2, 3), 1),
}

# Five images, to be cut into chunks of 1 (five), 2 (two and a remainder of 1) and 3 (one and
# a remainder of 2).
CHUNK_CASES = {
    "gemm": (5, 8, 6, (9, 8), (3, 3), 2, "SAME", 1, 1),  # C·kh·kw = 72
    "grouped-gemm": (5, 12, 6, (7, 7), (3, 3), 1, ((1, 0), (2, 1)), (1, 2), 2),
    "depthwise": (5, 4, 8, (9, 8), (3, 3), 1, "SAME", 2, 4),
    "winograd": (5, 8, 6, (9, 8), (3, 3), 1, "SAME", 1, 1),
    "winograd-dilated": (5, 8, 6, (9, 8), (3, 3), 1, "SAME", (2, 1), 1),
    # Nothing to pad (8×6 outputs, whole tiles): choose() takes the forward's chunks as state.
    "winograd-in-place": (5, 8, 6, (10, 8), (3, 3), 1, "VALID", 1, 1),
}

ALL_CASES = {**CASES, **{f"winograd-{k}": v for k, v in WINOGRAD_CASES.items()}}


def case_operands(case, layout, rank=4, dtype=np.float64, seed=0, table=None):
    """(x, w, b, config) of a case of `table` (default: CASES, WINOGRAD_CASES by prefix)."""
    table = ALL_CASES if table is None else table
    batch, c, o, hw, khw, stride, padding, dilation, groups = table[case]
    x_shape, w_shape = operand_shapes(
        batch=batch, c=c, o=o, hw=hw, khw=khw, groups=groups, layout=layout, rank=rank
    )
    x, w, b = random_operands(seed, x_shape, w_shape, o if rank > 2 else 1, dtype)
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    return x, w, b, cfg


def geometry_of(x, w, cfg):
    """`jaxconv.conv2d_geometry` of operands and a config."""
    return jaxconv.conv2d_geometry(x.shape, w.shape, **cfg)


def to_nhwc(a, layout):
    """A batched array of `layout` as (N, H, W, C)."""
    return a if layout == "NHWC" else jnp.transpose(a, (0, 2, 3, 1))


def kernel_hwio(w, layout):
    """A kernel of `layout` (OIHW for NCHW) as (kh, kw, C/G, O)."""
    return w if layout == "NHWC" else jnp.transpose(w, (2, 3, 1, 0))


# --- Hypothesis strategies. -----------------------------------------------------------------


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
