"""Which evaluation runs each rule: the `Plan`, and the choice of one per geometry and platform.

A `Plan` names one form for each of the forward, ∂L/∂X and ∂L/∂W, and how many images each
pass takes at a time. `choose(geometry, platform)` returns the plan measured fastest for that
platform; `supported(geometry)` lists plans whose forms accept the geometry, one per family
of forms, so that tests and the audit can run every form on it. Every form computes the sums
of its rule in `rules.py`; a plan changes the order of the sums and their rounding, never what
is summed.

The CPU thresholds below are the only tuned numbers in the library. Each comment points to
the measurement behind it in docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from jaxconv._src.evaluation import gemm, shallow
from jaxconv._src.evaluation import winograd as wg
from jaxconv._src.geometry import ConvGeometry, is_channels_first

FORWARD_FORMS = ("plain", "gemm-rows", "winograd", "fused")
GRAD_INPUT_FORMS = ("plain", "gemm-rows", "winograd", "shallow", "depthwise")
GRAD_KERNEL_FORMS = ("plain", "gemm-taps", "gemm-rows", "winograd", "shallow", "depthwise")
PLATFORMS = ("cpu", "gpu", "tpu")

# --- CPU thresholds (docs/performance.md, "How jaxconv gets there"). -------------------------
# Contractions this shallow (kh·kw·C/G terms per output) are far below the GEMM rate as GEMMs:
# fused elementwise forms instead (#shallow-and-depthwise-forms).
SHALLOW_MAX_DEPTH = 36
# Winograd only where an image's outputs make at least this many 2×2 tiles: on 4×4 outputs
# (4 tiles) the GEMM forms are about as fast and compile in a third of the time
# (#winograd-on-small-images).
WINOGRAD_MIN_TILES = 5
# ∂L/∂W by Winograd only where each of its 16 GEMMs per chunk has at least this many
# multiply-adds; below, one GEMM over all taps' windows is faster (#winograd-kernel-gradient).
WINOGRAD_KERNEL_GRAD_MIN_MACS = 2**22
# ∂L/∂W's GEMM over all taps up to this many output rows (kh·kw·C/G), per kernel row beyond
# (#winograd-kernel-gradient).
KERNEL_GRAD_ONE_GEMM_MAX_DEPTH = 576
# A 3-D kernel of this many taps or more runs its GEMM forms' kernel rows in a loop: its
# k² rows, each its own piece of program, are most of the compile time (#every-rank-plans).
LOOP_ROWS_MIN_TAPS = 64
# Images of at most this many output positions run their GEMM forms' kernel rows in a loop
# too: each row's windows are cut inside the loop, so the forward's and ∂L/∂W's are not one
# buffer that XLA keeps from the forward to the backward (#memory).
LOOP_ROWS_MAX_POSITIONS = 16
# 2-D kernel rows (3–7 taps) join their windows by pads: one pass from the input, faster
# and without a copy of each window; 1-D and 3-D rows were slower so (#memory).
ROWS_BY_PADS_RANKS = (2,)
# A 2-D channels-last ∂L/∂X by kernel rows at stride 1 runs its GEMMs on the padded
# cotangent: each tap's share is then a slice, not a pad; channels-first and 1-D and 3-D
# layers were not faster so (#input-gradient-on-the-padded-cotangent).
PADDED_COTANGENT_RANKS = (2,)
# The shallow ∂L/∂W stacks every tap's window: past this many values (N·∏out·∏k·C/G) it
# runs in chunks, or the whole batch's stack is held at the step's peak of memory (#memory).
SHALLOW_KERNEL_GRAD_MAX_WINDOWS = 2**21
# Output positions per chunk of images: the windows a chunk cuts stay in cache (#chunks).
CHUNK_POSITIONS = 6144
# A Winograd chunk holds at least this many output values (positions × O): thin kernels need
# more positions to pay for each chunk's transforms (#chunks).
WINOGRAD_CHUNK_VALUES = 2**19
# The depthwise forward and ∂L/∂W hold about this many output values (positions × O) a chunk:
# their per-tap products stay in cache however many channels they have (#depthwise-chunks).
DEPTHWISE_CHUNK_VALUES = 6144 * 64


def _check_chunk(name: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Plan: `{name}` must be an int or None, got {value!r}.")
    if value < 1:
        raise ValueError(f"Plan: `{name}` must be >= 1 (images per chunk) or None, got {value}.")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How `conv2d` evaluates its three rules: one form per pass, and the chunking.

    Frozen and hashable: a static argument of `jax.jit`, so each plan keys its own compiled
    program. `Plan()` is the plain plan: `rules.py` as written, on the whole batch.

    Attributes:
      forward: "plain" (`rules.forward`), "gemm-rows" (a GEMM per kernel row), "winograd"
        (F(2×2, 3×3)) or "fused" (elementwise products, in the caller's layout).
      grad_input: "plain", "gemm-rows", "winograd", "shallow" (one contraction for all taps)
        or "depthwise" (products per channel; needs C/G = 1).
      grad_kernel: "plain", "gemm-taps" (one GEMM over all taps' windows), "gemm-rows" (one
        per kernel row), "winograd", "shallow" or "depthwise".
      forward_chunk, grad_input_chunk, grad_kernel_chunk: images per chunk of that pass's
        loop over the batch, or None for the whole batch at once.
      chunks_as_state: the forward's chunks reach its form as loop state, one compact buffer,
        rather than as slices of the batch.
      transpose_by_chunk: a channels-first forward with no backward to follow makes each
        chunk channels-last inside its loop instead of transposing the whole batch first.
      fold_axes: how many trailing kernel axes one GEMM of a "gemm-rows" form contracts
        together: 1 is a kernel row (kw taps) in 2-D and 3-D and every tap in 1-D; 2 is a
        (kh, kw) plane in 3-D. At least 1; above the kernel's rank it folds every tap.
      rows_in_loop: a "gemm-rows" form runs its kernel rows as a loop whose body, one
        row's GEMM, compiles once, rather than as one piece of program per row.
      taps_in_loop: a "depthwise" ∂L/∂W runs its taps as a loop whose body, one tap's
        product and sum, compiles once, rather than as one piece of program per tap.
      rows_by_pads: a "gemm-rows" form joins a kernel row's windows side by side as a sum
        of zero-padded windows, made in one pass from the input, rather than by
        concatenating them, which first copies out each window.
      grad_input_padded: a "gemm-rows" ∂L/∂X runs its GEMMs on ∂L/∂Z zero-padded by the full
        correlation's padding, so that each tap's share is a slice of its row's product,
        rather than placing each share with a pad; more rows, a lighter sum. Needs stride 1,
        an undilated input and the rows unrolled (not `rows_in_loop`).
      complex_as_real: complex operands go through each pass's form as three real
        evaluations (Gauss's product, `complex_parts`); real and integer operands ignore it.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> plan = jaxconv.Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
      >>> jaxconv.conv2d(jnp.ones((2, 3, 5, 5)), jnp.ones((4, 3, 3, 3)), plan=plan).shape
      (2, 4, 3, 3)
    """

    forward: str = "plain"
    grad_input: str = "plain"
    grad_kernel: str = "plain"
    forward_chunk: int | None = None
    grad_input_chunk: int | None = None
    grad_kernel_chunk: int | None = None
    chunks_as_state: bool = False
    transpose_by_chunk: bool = False
    fold_axes: int = 1
    rows_in_loop: bool = False
    taps_in_loop: bool = False
    rows_by_pads: bool = False
    grad_input_padded: bool = False
    complex_as_real: bool = False

    def __post_init__(self):
        for name, forms in (
            ("forward", FORWARD_FORMS),
            ("grad_input", GRAD_INPUT_FORMS),
            ("grad_kernel", GRAD_KERNEL_FORMS),
        ):
            if getattr(self, name) not in forms:
                raise ValueError(
                    f"Plan: `{name}` must be one of {forms}, got {getattr(self, name)!r}."
                )
        for name in ("forward_chunk", "grad_input_chunk", "grad_kernel_chunk"):
            _check_chunk(name, getattr(self, name))
        for name in (
            "chunks_as_state",
            "transpose_by_chunk",
            "rows_in_loop",
            "taps_in_loop",
            "rows_by_pads",
            "grad_input_padded",
            "complex_as_real",
        ):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Plan: `{name}` must be a bool, got {getattr(self, name)!r}.")
        if not isinstance(self.fold_axes, int) or isinstance(self.fold_axes, bool):
            raise TypeError(f"Plan: `fold_axes` must be an int, got {self.fold_axes!r}.")
        if self.fold_axes < 1:
            raise ValueError(f"Plan: `fold_axes` must be >= 1, got {self.fold_axes}.")
        if self.grad_input_padded and self.rows_in_loop:
            raise ValueError(
                "Plan: `grad_input_padded` slices the shares of unrolled rows; it cannot be "
                "combined with `rows_in_loop`."
            )

    def rejection(self, geom: ConvGeometry, dtype=None) -> str | None:
        """Why one of this plan's forms cannot compute `geom` on operands of `dtype` (None:
        any floating dtype), or None if all of them can."""
        kernel = f"kernel {geom.kernel_size}, stride {geom.stride}, groups {geom.groups}"
        for name in ("forward", "grad_input", "grad_kernel"):
            form = getattr(self, name)
            if form == "winograd" and not wg.accepts(geom):
                return (
                    f"{name} form 'winograd' needs a 3×3 kernel, stride 1, one group and an "
                    f"undilated input; {kernel}, input dilation {geom.input_dilation}"
                )
            if form == "winograd" and not exact_in_floating_point(dtype):
                return (
                    f"{name} form 'winograd' computes in floating point (its transforms "
                    f"halve), not in {jnp.dtype(dtype)}"
                )
            if (
                name == "grad_input"
                and form == "gemm-rows"
                and self.grad_input_padded
                and not gemm.accepts_padded_cotangent(geom)
            ):
                return (
                    "grad_input form 'gemm-rows' with `grad_input_padded` needs stride 1 and "
                    f"an undilated input; stride {geom.stride}, input dilation "
                    f"{geom.input_dilation}"
                )
            if form == "depthwise" and not shallow.accepts_depthwise(geom):
                return (
                    f"{name} form 'depthwise' needs one input channel per group; "
                    f"C = {geom.in_channels}, groups {geom.groups}"
                )
        return None

    def __str__(self) -> str:
        def part(form, chunk, state=False):
            return form + ("" if chunk is None else f"/{chunk}") + ("+state" if state else "")

        text = (
            f"fwd {part(self.forward, self.forward_chunk, self.chunks_as_state)}, "
            f"dX {part(self.grad_input, self.grad_input_chunk)}, "
            f"dW {part(self.grad_kernel, self.grad_kernel_chunk)}"
        )
        if self.fold_axes != 1:
            text += f", rows fold {self.fold_axes} axes"
        if self.rows_in_loop:
            text += ", rows in a loop"
        if self.taps_in_loop:
            text += ", dW taps in a loop"
        if self.rows_by_pads:
            text += ", rows joined by pads"
        if self.grad_input_padded:
            text += ", dX on the padded cotangent"
        return text + (", complex by 3 real" if self.complex_as_real else "")

    @property
    def real(self) -> Plan:
        """This plan for the real evaluations of a complex pass: the same forms and chunks."""
        return dataclasses.replace(self, complex_as_real=False)


PLAIN = Plan()


def depth(geom: ConvGeometry) -> int:
    """Terms per output of the contraction: ∏k·C/G."""
    return math.prod(geom.kernel_size) * (geom.in_channels // geom.groups)


def _images_near(batch: int, per_chunk: float) -> int:
    """`per_chunk` images rounded, at least one and at most the batch; a divisor of the batch
    when there is one at least half that size, so no remainder is left."""
    target = max(1, min(batch, round(per_chunk)))
    for size in range(target, (target - 1) // 2, -1):
        if batch % size == 0:
            return size
    return target


def images_per_chunk(geom: ConvGeometry, winograd: bool) -> int:
    """Images per chunk: the count nearest `CHUNK_POSITIONS` output positions (for the
    Winograd forms, at least `WINOGRAD_CHUNK_VALUES` / O), as `_images_near` rounds it."""
    positions = CHUNK_POSITIONS
    if winograd:
        positions = max(positions, WINOGRAD_CHUNK_VALUES // max(1, geom.out_channels))
    return _images_near(geom.batch, positions / max(1, math.prod(geom.out_size)))


def images_for_values(geom: ConvGeometry, values: int) -> int:
    """Images per chunk for about `values` output values (positions × O) a chunk, as
    `_images_near` rounds it."""
    per_image = max(1, math.prod(geom.out_size) * geom.out_channels)
    return _images_near(geom.batch, values / per_image)


def is_pointwise(geom: ConvGeometry) -> bool:
    """A 1×1 kernel at stride 1 with no padding: its one window is the input itself."""
    ones = (1,) * geom.spatial_rank
    return (
        geom.kernel_size == ones
        and geom.stride == ones
        and geom.padding == ((0, 0),) * geom.spatial_rank
        and geom.input_dilation == ones
    )


def _gemm_kernel_grad(geom: ConvGeometry) -> str:
    return "gemm-taps" if depth(geom) <= KERNEL_GRAD_ONE_GEMM_MAX_DEPTH else "gemm-rows"


def exact_in_floating_point(dtype) -> bool:
    """Whether Winograd's transforms, with their halves, may compute operands of `dtype`:
    floating and complex ones (None: a floating dtype), not integers."""
    return dtype is None or jnp.issubdtype(dtype, jnp.inexact)


def _cpu_plan(geom: ConvGeometry, dtype) -> Plan:
    if dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
        # Three real evaluations of the real plan's forms, each on the whole batch: faster
        # than complex GEMMs, and than chunks of three evaluations (#complex-operands).
        real = _cpu_plan(geom, jnp.finfo(dtype).dtype)
        return dataclasses.replace(
            real,
            complex_as_real=True,
            forward_chunk=None,
            grad_input_chunk=None,
            grad_kernel_chunk=None,
            chunks_as_state=False,
        )
    depthwise = shallow.accepts_depthwise(geom) and geom.groups > 1
    if is_pointwise(geom) and not depthwise:
        # One GEMM (N·H·W, C)·(C, O) on the whole batch, however shallow: no windows to keep
        # in cache, and the shallow ∂L/∂X's transposes cost more than its contraction
        # (#pointwise-convolutions).
        return Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps")
    is_shallow = geom.in_channels == geom.groups or depth(geom) <= SHALLOW_MAX_DEPTH
    winograd = (
        wg.accepts(geom)
        and exact_in_floating_point(dtype)
        and wg.tiles_per_image(geom) >= WINOGRAD_MIN_TILES
    )
    chunk = images_per_chunk(geom, winograd)
    forward: dict[str, Any]
    grad_input: dict[str, Any]
    grad_kernel: dict[str, Any]
    if depthwise:
        forward = dict(
            forward="fused", forward_chunk=images_for_values(geom, DEPTHWISE_CHUNK_VALUES)
        )
    elif is_shallow:
        forward = dict(forward="fused")
    elif winograd:
        state = wg.reads_input_in_place(geom)
        forward = dict(forward="winograd", forward_chunk=chunk, chunks_as_state=state)
    else:
        forward = dict(forward="gemm-rows", forward_chunk=chunk)
    if depthwise:
        grad_input = dict(grad_input="depthwise")
        dw_chunk = images_for_values(geom, DEPTHWISE_CHUNK_VALUES)
        # Taps in a loop: a depthwise ∂L/∂W compiles a product and a sum per tap otherwise,
        # most of a depthwise network's compile time beyond XLA's (#compile-time).
        grad_kernel = dict(
            grad_kernel="depthwise",
            grad_kernel_chunk=dw_chunk,
            taps_in_loop=math.prod(geom.kernel_size) > 1,
        )
    elif is_shallow:
        grad_input = dict(grad_input="shallow")
        windows = geom.batch * math.prod(geom.out_size) * depth(geom)
        shallow_chunk = None
        if windows > SHALLOW_KERNEL_GRAD_MAX_WINDOWS:
            shallow_chunk = images_per_chunk(geom, winograd=False)
        grad_kernel = dict(grad_kernel="shallow", grad_kernel_chunk=shallow_chunk)
    else:
        grad_input = dict(
            grad_input="winograd" if winograd else "gemm-rows", grad_input_chunk=chunk
        )
        tiles = chunk * wg.tiles_per_image(geom) if winograd else 0
        macs = tiles * geom.in_channels * geom.out_channels
        if winograd and macs >= WINOGRAD_KERNEL_GRAD_MIN_MACS:
            grad_kernel = dict(grad_kernel="winograd", grad_kernel_chunk=chunk)
        else:
            gemm_chunk = images_per_chunk(geom, winograd=False)
            grad_kernel = dict(grad_kernel=_gemm_kernel_grad(geom), grad_kernel_chunk=gemm_chunk)
    plan = Plan(
        **forward,
        **grad_input,
        **grad_kernel,
        transpose_by_chunk=not is_shallow,
    )
    joins_rows = "gemm-rows" in (plan.forward, plan.grad_kernel) and geom.kernel_size[-1] > 1
    if joins_rows and geom.spatial_rank in ROWS_BY_PADS_RANKS:
        plan = dataclasses.replace(plan, rows_by_pads=True)
    many_taps = geom.spatial_rank >= 3 and math.prod(geom.kernel_size) >= LOOP_ROWS_MIN_TAPS
    small_images = math.prod(geom.out_size) <= LOOP_ROWS_MAX_POSITIONS
    rows = math.prod(geom.kernel_size[:-1])  # kernel rows of `fold_axes` 1
    if rows > 1 and (many_taps or small_images):
        plan = dataclasses.replace(plan, rows_in_loop=True)
    padded = (
        plan.grad_input == "gemm-rows"
        and not plan.rows_in_loop
        and math.prod(geom.kernel_size) > 1
        and geom.spatial_rank in PADDED_COTANGENT_RANKS
        and not is_channels_first(geom.layout)
        and gemm.accepts_padded_cotangent(geom)
    )
    if padded:
        plan = dataclasses.replace(plan, grad_input_padded=True)
    return plan


def _accelerator_plan(geom: ConvGeometry) -> Plan:
    # The whole batch at once: a loop over chunks would run them one after another on a
    # device built to run them together, and its cache argument is a CPU's. Contractions go
    # to the matrix units as GEMMs, however shallow; only a depthwise conv, which has no
    # contraction, keeps its elementwise forms (docs/performance.md#gpu-and-tpu).
    if shallow.accepts_depthwise(geom) and geom.groups > 1:
        return Plan(forward="fused", grad_input="depthwise", grad_kernel="depthwise")
    return Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel=_gemm_kernel_grad(geom))


def platform_kind(platform: str, op: str = "choose") -> str:
    """ "cpu", "gpu" or "tpu" for a JAX platform name ("cuda" and "rocm" are GPUs); raises
    naming `op` for another."""
    kind = {"cuda": "gpu", "rocm": "gpu"}.get(str(platform).lower(), str(platform).lower())
    if kind not in PLATFORMS:
        raise ValueError(f"{op}: unknown `platform` {platform!r}; expected one of {PLATFORMS}.")
    return kind


def choose(geom: ConvGeometry, platform: str = "cpu", dtype=None) -> Plan:
    """The plan measured fastest for `geom` on `platform` (the GPU and TPU plans are not yet
    measured; docs/performance.md says what each platform gets and why).

    Args:
      geom: the convolution.
      platform: "cpu", "gpu" (or "cuda", "rocm") or "tpu".
      dtype: the operands' dtype; None for a floating one. Integer operands get no Winograd
        form (`exact_in_floating_point`).

    Returns:
      A `Plan` whose forms accept `geom` and `dtype`.
    """
    if platform_kind(platform) == "cpu":
        return _cpu_plan(geom, dtype)
    return _accelerator_plan(geom)


def supported(geom: ConvGeometry, dtype=None) -> tuple[Plan, ...]:
    """Plans whose forms accept `geom` and operands of `dtype` (None: floating): the plain
    plan; one plan per family of forms (GEMMs with ∂L/∂W over all taps and by kernel rows,
    shallow, depthwise where C/G = 1, Winograd where the kernel is 3×3 at stride 1 with one
    group and the dtype not an integer); with two images or more, the GEMM,
    Winograd and depthwise families again in chunks of ⌈N/2⌉ images; and what `choose`
    returns on each platform. No duplicates, in that order.
    """
    families = [
        PLAIN,
        Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-taps"),
        Plan(forward="gemm-rows", grad_input="gemm-rows", grad_kernel="gemm-rows"),
        Plan(forward="fused", grad_input="shallow", grad_kernel="shallow"),
    ]
    chunked = [(families[1], False)]
    if shallow.accepts_depthwise(geom):
        families.append(Plan(forward="fused", grad_input="depthwise", grad_kernel="depthwise"))
        chunked.append((families[-1], False))
    if wg.accepts(geom) and exact_in_floating_point(dtype):
        families.append(Plan(forward="winograd", grad_input="winograd", grad_kernel="winograd"))
        chunked.append((families[-1], True))
    plans = list(families)
    if geom.batch >= 2:
        size = -(-geom.batch // 2)
        plans += [
            dataclasses.replace(
                plan,
                forward_chunk=size,
                grad_input_chunk=size,
                grad_kernel_chunk=size,
                chunks_as_state=state,
                transpose_by_chunk=True,
            )
            for plan, state in chunked
        ]
    plans += [choose(geom, platform, dtype) for platform in PLATFORMS]
    return tuple(dict.fromkeys(plans))
