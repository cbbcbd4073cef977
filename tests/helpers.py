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
    """max|actual − expected| / max|expected| (a norm-relative error); complex as complex."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    wide = np.complex128 if np.iscomplexobj(actual) or np.iscomplexobj(expected) else np.float64
    actual, expected = actual.astype(wide), expected.astype(wide)
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
    """A batched array of `layout` (any rank) channels-last: (N, *spatial, C)."""
    return a if layout[1] != "C" else jnp.transpose(a, (0, *range(2, a.ndim), 1))


def kernel_hwio(w, layout):
    """A kernel of `layout` ((O, C/G, *k) for a channels-first one) as (*k, C/G, O)."""
    return w if layout[1] != "C" else jnp.transpose(w, (*range(2, w.ndim), 1, 0))


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


# --- Every rank: cases, operands, and a naive NumPy loop implementation. ----------------------

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
lax_conv = jaxconv.conv_xla

# (rank, batch, C, O, in_size, k, stride, padding, dilation, groups)
ND_CASES = {
    "1d-basic": (1, 2, 3, 4, (9,), (3,), 1, "VALID", 1, 1),
    "1d-stride2-same": (1, 2, 2, 3, (10,), (4,), 2, "SAME", 1, 1),
    "1d-same-lower-dil2-groups2": (1, 1, 4, 6, (11,), (3,), 3, "SAME_LOWER", 2, 2),
    "1d-negative-pad": (1, 2, 2, 3, (12,), (2,), 2, ((-1, 3),), 1, 1),
    "1d-causal-depthwise": (1, 2, 4, 4, (9,), (4,), 1, ((3, 0),), 1, 4),
    "1d-depthwise-mult2": (1, 2, 3, 6, (8,), (3,), 2, "SAME", 2, 3),
    "1d-kernel-fills-padded": (1, 2, 2, 2, (4,), (6,), 1, ((1, 1),), 1, 1),
    "1d-1x1-stride3": (1, 3, 5, 2, (10,), (1,), 3, "VALID", 1, 1),
    "1d-chunks": (1, 5, 6, 4, (13,), (3,), 1, "SAME", 2, 1),
    "3d-basic": (3, 2, 3, 4, (5, 6, 4), (3, 2, 2), 1, "VALID", 1, 1),
    "3d-stride-same": (3, 1, 2, 3, (6, 5, 7), (3, 3, 2), (2, 1, 3), "SAME", 1, 1),
    "3d-dil-groups2": (3, 2, 4, 6, (7, 6, 5), (2, 2, 3), 1, ((1, 0), (2, 1), (0, 2)), (2, 1, 1), 2),
    "3d-negative-pad": (3, 1, 2, 2, (8, 6, 6), (2, 3, 2), 2, ((-1, 1), (1, -1), (0, 0)), 1, 1),
    "3d-depthwise": (3, 2, 3, 3, (5, 5, 6), (3, 3, 3), 1, "SAME", (1, 2, 1), 3),
    "3d-1x1x1": (3, 2, 4, 3, (3, 4, 5), (1, 1, 1), 1, "VALID", 1, 1),
    "3d-int-pad-stride": (3, 2, 2, 3, (5, 4, 6), (2, 2, 2), 2, 1, 1, 1),
    "3d-chunks": (3, 5, 4, 3, (4, 5, 4), (2, 3, 2), 1, "SAME", 1, 1),
}


def nd_shapes(rank, batch, c, o, size, k, groups, layout):
    """(x_shape, w_shape) in `layout` (a layout of `rank` spatial axes)."""
    if layout[1] == "C":
        return (batch, c, *size), (o, c // groups, *k)
    return (batch, *size, c), (*k, c // groups, o)


def nd_case_operands(case, channels_last=False, dtype=np.float64, seed=0):
    """(x, w, b, config) of an ND_CASES case, in its rank's channels-first or -last layout."""
    rank, batch, c, o, size, k, stride, padding, dilation, groups = ND_CASES[case]
    layout = LAYOUTS[rank][channels_last]
    x_shape, w_shape = nd_shapes(rank, batch, c, o, size, k, groups, layout)
    x, w, b = random_operands(seed, x_shape, w_shape, o, dtype)
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    return x, w, b, cfg


def nd_geometry(x, w, cfg):
    """The geometry of `jaxconv.conv(x, w, **cfg)`."""
    from jaxconv._src.geometry import conv_geometry

    cfg = dict(dict(stride=1, padding="VALID", dilation=1, groups=1), **cfg)
    return conv_geometry("test", tuple(x.shape), tuple(w.shape), rank=None, **cfg)


def _padded_positions(size, pads):
    """For each padded position q (an index tuple), the input position it holds or None."""
    padded = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
    for q in np.ndindex(*padded):
        source = tuple(j - lo for j, (lo, _) in zip(q, pads))
        inside = all(0 <= s < n for s, n in zip(source, size))
        yield q, (source if inside else None)


def loops(x, w, g, stride, pads, dilation, groups):
    """Eq. 6 and its two gradients as plain loops over positions and taps, in NumPy float64,
    channels-last: x (N, *in, C), w (*k, C/G, O), g (N, *out, O) or None.

    Returns:
      (z, dx, dw); dx and dw are None without g.
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, size, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    k, o = w.shape[:-2], w.shape[-1]
    cg, og = c // groups, o // groups
    padded = [m + lo + hi for m, (lo, hi) in zip(size, pads)]
    x_pad = np.zeros((n, *padded, c))
    for q, source in _padded_positions(size, pads):
        if source is not None:
            x_pad[(slice(None), *q)] = x[(slice(None), *source)]
    out = [
        max(0, (m - (dd * (kk - 1) + 1)) // s + 1)
        for m, kk, s, dd in zip(padded, k, stride, dilation)
    ]
    z = np.zeros((n, *out, o))
    dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
    for p in np.ndindex(*out):
        for t in np.ndindex(*k):
            q = tuple(pp * s + tt * dd for pp, tt, s, dd in zip(p, t, stride, dilation))
            for gamma in range(groups):
                ci, oi = slice(gamma * cg, (gamma + 1) * cg), slice(gamma * og, (gamma + 1) * og)
                patch = x_pad[(slice(None), *q, ci)]  # (N, Cg)
                z[(slice(None), *p, oi)] += patch @ w[(*t, slice(None), oi)]
                if g is not None:
                    g_p = np.asarray(g, np.float64)[(slice(None), *p, oi)]  # (N, Og)
                    dx_pad[(slice(None), *q, ci)] += g_p @ w[(*t, slice(None), oi)].T
                    dw[(*t, slice(None), oi)] += patch.T @ g_p
    if g is None:
        return z, None, None
    dx = np.zeros_like(x)
    for q, source in _padded_positions(size, pads):
        if source is not None:
            dx[(slice(None), *source)] += dx_pad[(slice(None), *q)]
    return z, dx, dw


@st.composite
def nd_conv_configs(draw, ranks=(1, 2, 3)):
    """A valid configuration of a drawn rank: every padding form, stride and dilation 1–3 per
    axis, groups, both layouts of the rank; 3-D kept small (k³ taps, one program each)."""
    rank = draw(st.sampled_from(ranks))
    layout = draw(st.sampled_from(LAYOUTS[rank]))
    group_kind = draw(st.sampled_from(["one", "two", "depthwise"]))
    c_per_group = draw(st.integers(1, 2))
    groups = {"one": 1, "two": 2, "depthwise": draw(st.integers(2, 3))}[group_kind]
    c = c_per_group * groups if group_kind != "depthwise" else groups
    o = draw(st.integers(1, 2)) * groups
    largest = 4 if rank < 3 else 2
    k = tuple(draw(st.integers(1, largest)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 3 if rank < 3 else 2)) for _ in range(rank))
    dilated = [d * (kk - 1) + 1 for d, kk in zip(dilation, k)]
    form = draw(st.sampled_from(["VALID", "SAME", "SAME_LOWER", "int", "tuple", "explicit"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
        pads = [(padding, padding)] * rank
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
        pads = [(p, p) for p in padding]
    elif form == "explicit":
        padding = tuple((draw(st.integers(-2, 2)), draw(st.integers(-2, 2))) for _ in range(rank))
        pads = list(padding)
    else:
        padding, pads = form, [(0, 0)] * rank
    size = []
    for k_dil, (lo, hi) in zip(dilated, pads):
        smallest = 1 if form.startswith("SAME") else max(1, k_dil - lo - hi, -lo - hi + 1)
        size.append(draw(st.integers(smallest, smallest + (5 if rank < 3 else 3))))
    batch = draw(st.integers(1, 2))
    cfg = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    return nd_shapes(rank, batch, c, o, tuple(size), k, groups, layout), o, cfg


def _sub_jaxprs(eqn):
    """The jaxprs an equation's parameters hold (a pjit's, a loop's body)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(item, "jaxpr", item)
            if hasattr(inner, "eqns"):
                yield inner


def _contains(eqn, primitive: str) -> bool:
    return eqn.primitive.name == primitive or any(
        _contains(e, primitive) for j in _sub_jaxprs(eqn) for e in j.eqns
    )


def before_argument(fn, args, index: int, primitive: str, loop_operand_shapes=()) -> list:
    """What in fn's jaxpr reads nothing computed from argument `index`, so that XLA may
    schedule it before that argument exists: the top-level equations that are or contain
    `primitive`, and the loops' operands of `loop_operand_shapes`.

    Returns:
      The equations and the loop operands' avals found.
    """
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    tainted = {id(jaxpr.invars[index])}
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("while", "scan"):
            found += [
                v.aval
                for v in eqn.invars
                if id(v) not in tainted and v.aval.shape in loop_operand_shapes
            ]
        if any(id(v) in tainted for v in eqn.invars):
            tainted.update(id(v) for v in eqn.outvars)
        elif _contains(eqn, primitive):
            found.append(eqn)
    return found
