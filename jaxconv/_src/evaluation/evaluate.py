"""Runs a rule by the form its plan names, on batched arrays in the caller's layout.

`forward`, `grad_input` and `grad_kernel` look the form up, move the operands channels-last
if the form needs it, and loop over chunks of images as the plan says. Where every sum is
empty (`ConvGeometry.is_empty`: a zero-size batch, output or contraction) they evaluate no
form at all and return the zeros the sums are, whatever the plan: the one place where
zero-size convolutions are decided. `on_platform` picks
the plan of `"auto"` for the platform the computation is lowered for, among the platforms
`traced_platforms` names.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Literal

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax

from jaxconv._src import geometry as geo
from jaxconv._src import layout as lay
from jaxconv._src import rules
from jaxconv._src.evaluation import chunks, complex_parts, gemm, mesh, shallow
from jaxconv._src.evaluation import winograd as wg
from jaxconv._src.evaluation.buffers import zeros_after
from jaxconv._src.evaluation.plan import PLAIN, PLATFORMS, Plan, choose, platform_kind
from jaxconv._src.geometry import ConvGeometry

PlanLike = Plan | Literal["auto", "plain"]
PrecisionLike = str | lax.Precision | tuple | None
PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")

# pass -> form -> (function, whether it takes channels-last arrays; else the caller's layout)
_FORWARD = {
    "plain": (rules.forward, True),
    "gemm-rows": (gemm.forward_rows, True),
    "winograd": (wg.forward, True),
    "fused": (shallow.forward_fused, False),
}
_GRAD_INPUT = {
    "plain": (rules.grad_input, True),
    "gemm-rows": (gemm.grad_input_rows, True),
    "winograd": (wg.grad_input, True),
    "shallow": (shallow.grad_input_shallow, False),
    "depthwise": (shallow.grad_input_depthwise, False),
}
_GRAD_KERNEL = {
    "plain": (rules.grad_kernel, True),
    "gemm-taps": (gemm.grad_kernel_taps, True),
    "gemm-rows": (gemm.grad_kernel_rows, True),
    "winograd": (wg.grad_kernel, True),
    "shallow": (shallow.grad_kernel_shallow, False),
    "depthwise": (shallow.grad_kernel_depthwise, False),
}

FORMS = {"forward": _FORWARD, "grad_input": _GRAD_INPUT, "grad_kernel": _GRAD_KERNEL}


def form_scope(pass_name: str, plan: Plan) -> str:
    """The name scope one pass is traced in, `jaxconv.<pass>.<form>`: compiled programs carry
    it in their instructions' op names, so their cost can be told apart form by form."""
    return f"jaxconv.{pass_name}.{getattr(plan, pass_name)}"


def _form(table: dict, name: str, plan: Plan, **operands) -> tuple[Callable, bool]:
    """The form `name` of a pass's `table` with its operands bound and the plan's options
    for it: a GEMM by kernel rows folds `plan.fold_axes` kernel axes, in a loop with
    `plan.rows_in_loop`, its windows joined by pads with `plan.rows_by_pads`, a ∂L/∂X's
    GEMMs on the padded cotangent with `plan.grad_input_padded`; a depthwise
    ∂L/∂W runs its taps in a loop with `plan.taps_in_loop`."""
    fn, channels_last = table[name]
    if name == "depthwise" and table is _GRAD_KERNEL:
        operands["loop"] = plan.taps_in_loop
    if name == "gemm-rows":
        operands["fold"], operands["loop"] = plan.fold_axes, plan.rows_in_loop
        if table is not _GRAD_INPUT:  # ∂L/∂X splits a row's product; it joins no windows
            operands["by_pads"] = plan.rows_by_pads
        else:
            operands["padded"] = plan.grad_input_padded
    return functools.partial(fn, **operands), channels_last


def _by_real_parts(plan: Plan, operand: jax.Array) -> bool:
    """Whether the plan sends this pass's complex operands through real evaluations."""
    return plan.complex_as_real and jnp.issubdtype(operand.dtype, jnp.complexfloating)


@dataclasses.dataclass(frozen=True)
class Auto:
    """`plan="auto"` as a call traces it: the plan `choose` returns for each of `platforms`
    (platform kinds, `PLATFORMS` order). A static argument, so a call traced for other
    platforms is another program."""

    platforms: tuple[str, ...]

    def __str__(self) -> str:
        return "auto"


_MORE_PLATFORMS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "jaxconv_plans_for", default=()
)


@contextlib.contextmanager
def plans_for(*platforms: str) -> Iterator[None]:
    """Within it, `plan="auto"` also traces the plans of `platforms`, for `jax.export` to a
    platform this process has no backend for.

    Outside it, "auto" traces the plans of the platforms whose backends this process has
    (`traced_platforms`): a computation exported from a CPU-only process for a GPU computes
    the same values by the CPU's plan. Entering clears JAX's caches, so that functions traced
    before are traced again.

    Args:
      platforms: JAX platform names: "cpu", "gpu", "cuda", "rocm" or "tpu".

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv
      >>> f = jax.jit(lambda x, w: jaxconv.conv2d(x, w))
      >>> with jaxconv.plans_for("cuda"):
      ...     exported = jax.export.export(f, platforms=["cuda"])(
      ...         jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)))
      >>> exported.platforms
      ('cuda',)
    """
    kinds = tuple(platform_kind(p, op="plans_for") for p in platforms)
    jax.clear_caches()
    token = _MORE_PLATFORMS.set(_MORE_PLATFORMS.get() + kinds)
    try:
        yield
    finally:
        _MORE_PLATFORMS.reset(token)


def traced_platforms() -> tuple[str, ...]:
    """The platform kinds whose plans "auto" traces: those of this process's JAX backends
    (one that is no CPU or TPU takes the GPU's plan, the default branch), and those named
    by the `plans_for` contexts around the call."""
    present = set()
    for name in jax.extend.backend.backends():
        try:
            present.add(platform_kind(name))
        except ValueError:  # another accelerator: it lowers the default branch, the GPU's
            present.add("gpu")
    wanted = present | set(_MORE_PLATFORMS.get())
    return tuple(kind for kind in PLATFORMS if kind in wanted)


def check_plan(op: str, plan, geom: ConvGeometry, dtype=None) -> Plan | Auto:
    """The plan a call asked for, as a `Plan` or an `Auto` of `traced_platforms()`; raises
    naming `plan` unless it is "auto", "plain" or a `Plan` whose forms accept `geom` and
    operands of `dtype`."""
    if isinstance(plan, str) and plan.lower() in ("auto", "plain"):
        return Auto(traced_platforms()) if plan.lower() == "auto" else PLAIN
    if not isinstance(plan, Plan):
        raise TypeError(f'{op}: `plan` must be "auto", "plain" or a jaxconv.Plan, got {plan!r}.')
    reason = plan.rejection(geom, dtype)
    if reason is not None:
        raise ValueError(f"{op}: `plan` ({plan}) does not fit this convolution: {reason}.")
    return plan


def check_precision(op: str, precision) -> str | None:
    """`precision` as one of `PRECISIONS` (a hashable, static name) or None; raises naming it.

    A pair, as `lax.dot_general` takes one per operand, must name one precision twice.
    """
    if precision is None:
        return None
    if isinstance(precision, (tuple, list)):
        if len(precision) != 2 or precision[0] != precision[1]:
            raise ValueError(
                f"{op}: `precision` {precision!r}: one precision for both operands, or a pair "
                "of two equal ones."
            )
        precision = precision[0]
    if isinstance(precision, lax.Precision):
        precision = precision.name
    return geo.normalize_string(op, "precision", precision, PRECISIONS)


def on_platform(
    plan: Plan | Auto,
    geom: ConvGeometry,
    precision: str | None,
    run: Callable,
    *args,
    shards: int = 1,
):
    """run(p, *args) for the plan p that `plan` names (`check_plan`'s result): itself, or for
    `Auto` the plan `choose` returns for the platform the computation is lowered for and
    for one of the `shards` parts of the batch (`mesh.auto_batch_shards`); every
    contraction traced in it at `precision` (None: JAX's default).

    Where the plans of `Auto.platforms` differ, `lax.platform_dependent` traces `run` once
    per plan and lowers only the branch of the platform being compiled for; a platform not
    traced lowers the GPU's plan if traced, else the CPU's.
    """
    if precision is not None:
        with jax.default_matmul_precision(precision):
            return on_platform(plan, geom, None, run, *args, shards=shards)
    if isinstance(plan, Plan) or geom.is_empty:  # nothing to evaluate: any plan will do
        return run(plan if isinstance(plan, Plan) else PLAIN, *args)
    part, dtype = geom.per_device(batch_shards=shards), args[0].dtype
    plans = {kind: choose(part, kind, dtype) for kind in plan.platforms}
    # One callable per distinct plan: platform_dependent traces each once.
    branch = {p: functools.partial(run, p) for p in dict.fromkeys(plans.values())}
    if len(branch) == 1:
        return run(next(iter(branch)), *args)
    default = plans["gpu"] if "gpu" in plans else plans["cpu"]  # the CPU's is always traced
    per_platform = {kind: branch[plans[kind]] for kind in ("cpu", "tpu") if kind in plans}
    return lax.platform_dependent(*args, default=branch[default], **per_platform)


def _zeros(like: jax.Array, channels_first_shape: tuple[int, ...], layout: str) -> jax.Array:
    """Zeros of a batched (N, C, *spatial) shape, in `layout`, in the accumulation dtype of
    `like`: the value of every sum over no terms (`ConvGeometry.is_empty`)."""
    n, c, *size = channels_first_shape
    shape = (n, c, *size) if geo.is_channels_first(layout) else (n, *size, c)
    return jnp.zeros(shape, rules.accumulation_dtype(like.dtype))


def forward(
    x: jax.Array,
    w: jax.Array,
    geom: ConvGeometry,
    plan: Plan,
    *,
    backward_follows: bool = False,
    shards: int = 1,
) -> jax.Array:
    """Z = X̄ ⋆ W (`rules.forward`) by the plan's forward form.

    Args:
      x: (N, C, *in) or (N, *in, C), as `geom.layout`.
      w: (*k, C//G, O).
      geom: the geometry.
      plan: the plan.
      backward_follows: ∂L/∂W will read X channels-last too, so an NCHW X is transposed
        whole, once for both, even where the plan transposes by chunk.
      shards: the equal parts the batch may be split into over devices; chunks take images
        from every part (`chunks.split_images`).

    Returns:
      (N, O, *out) or (N, *out, O), in the accumulation dtype.
    """
    if geom.is_empty:
        return _zeros(x, (x.shape[0], geom.out_channels, *geom.out_size), geom.layout)
    with jax.named_scope(form_scope("forward", plan)):
        return _forward(x, w, geom, plan, backward_follows, shards)


def _forward(x, w, geom, plan, backward_follows, shards):
    if _by_real_parts(plan, x):
        real = functools.partial(
            forward, geom=geom, plan=plan.real, backward_follows=backward_follows, shards=shards
        )
        return complex_parts.three_real_products(real, x, w)
    form, channels_last = _form(_FORWARD, plan.forward, plan, w=w, geom=geom)
    if channels_last:
        by_chunk = plan.transpose_by_chunk and not backward_follows
        return chunks.map_channels_last(
            form, x, geom.layout, plan.forward_chunk, plan.chunks_as_state, by_chunk, shards
        )
    return chunks.map_over_images(form, (x,), plan.forward_chunk, plan.chunks_as_state, shards)


def grad_input(
    g: jax.Array, w: jax.Array, geom: ConvGeometry, plan: Plan, *, shards: int = 1
) -> jax.Array:
    """∂L/∂X (`rules.grad_input`) by the plan's ∂L/∂X form.

    Args:
      g: ∂L/∂Z, (N, O, *out) or (N, *out, O), as `geom.layout`.
      w: (*k, C//G, O).
      shards: as for `forward`.

    Returns:
      (N, C, *in) or (N, *in, C), in the accumulation dtype.
    """
    if geom.is_empty:
        return _zeros(g, (g.shape[0], geom.in_channels, *geom.in_size), geom.layout)
    with jax.named_scope(form_scope("grad_input", plan)):
        return _grad_input(g, w, geom, plan, shards)


def _grad_input(g, w, geom, plan, shards):
    if _by_real_parts(plan, g):
        real = functools.partial(grad_input, geom=geom, plan=plan.real, shards=shards)
        return complex_parts.three_real_products(real, g, w)
    if plan.grad_input == "winograd" and mesh.values_are_local():
        # W made after ∂L/∂Z: XLA would otherwise make every layer's kernel tiles from W
        # alone in the forward and hold them to the backward (docs/performance.md, "Memory").
        # Not where XLA partitions the arrays: one element of ∂L/∂Z would be communicated.
        w = w + zeros_after(g, w.shape, w.dtype, batch_axes=0)
    form, channels_last = _form(_GRAD_INPUT, plan.grad_input, plan, w=w, geom=geom)
    if channels_last:
        return chunks.map_channels_last(form, g, geom.layout, plan.grad_input_chunk, shards=shards)
    return chunks.map_over_images(form, (g,), plan.grad_input_chunk, shards=shards)


def grad_kernel(
    x: jax.Array, g: jax.Array, geom: ConvGeometry, plan: Plan, *, shards: int = 1
) -> jax.Array:
    """∂L/∂W (`rules.grad_kernel`) by the plan's ∂L/∂W form, summed over chunks of images.

    Args:
      x: (N, C, *in) or (N, *in, C), as `geom.layout`.
      g: ∂L/∂Z, (N, O, *out) or (N, *out, O).
      shards: as for `forward`; each part sums its own images.

    Returns:
      (*k, C//G, O), in the accumulation dtype.
    """
    if geom.is_empty:
        shape = (*geom.kernel_size, geom.in_channels // geom.groups, geom.out_channels)
        return jnp.zeros(shape, rules.accumulation_dtype(x.dtype))
    with jax.named_scope(form_scope("grad_kernel", plan)):
        return _grad_kernel(x, g, geom, plan, shards)


def _grad_kernel(x, g, geom, plan, shards):
    if _by_real_parts(plan, x):
        real = functools.partial(grad_kernel, geom=geom, plan=plan.real, shards=shards)
        return complex_parts.three_real_products(real, x, g)
    form, channels_last = _form(_GRAD_KERNEL, plan.grad_kernel, plan, geom=geom)
    if channels_last:
        x, g = lay.to_channels_last(x, geom.layout), lay.to_channels_last(g, geom.layout)
    return chunks.sum_over_images(form, (x, g), plan.grad_kernel_chunk, shards)


def grad_bias(g: jax.Array, layout: str) -> jax.Array:
    """∂L/∂b (`rules.grad_bias`, eq. 17) summed in the caller's layout, with no transpose.

    Args:
      g: ∂L/∂Z, (N, O, *out) or (N, *out, O), as `layout`.

    Returns:
      (O,), in the accumulation dtype.
    """
    return jnp.sum(g, axis=lay.position_axes(layout), dtype=rules.accumulation_dtype(g.dtype))
