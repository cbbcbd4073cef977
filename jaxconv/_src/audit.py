"""The gradient audit behind `python -m jaxconv.check`: hand-derived against automatic.

For one convolution configuration (1, 2 or 3 spatial axes; real or complex), `compare` takes
∂L/∂X, ∂L/∂W and ∂L/∂b from `jax.vjp` of the function under audit (`jaxconv.conv`, whose
custom_vjp runs the hand-derived rules),
under every plan `jaxconv.supported` lists for the configuration (the plain rules, each
family of forms, chunked ones, and the plan `choose` picks on each platform), and compares
them with independent references:

- "naive": `jax.vjp` of `jaxconv.conv_reference` (eq. 6 as index gathers, plain autodiff);
- "lax": `jax.vjp` of `lax.conv_general_dilated` plus bias (`jaxconv.conv_xla`);
- "fd": central finite differences in float64 (complex128) of the audited function's own
  forward pass (its default plan), along random directions v:
  Σ ∂L/∂Z · (f(p + εv) − f(p − εv)) / 2ε against Σ grad · v;
- "torch": PyTorch autograd of `torch.nn.functional.conv1d/2d/3d`, optional.

Complex gradients follow JAX's convention, the transpose of the linear map with no
conjugation; PyTorch's are the conjugate of JAX's (for the conjugated cotangent), and are
compared so. The error of a gradient against a reference is max|manual − ref| /
max(max|ref|, tiny).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.compat import fast_compile_options
from jaxconv._src.evaluation.plan import SHALLOW_MAX_DEPTH, Plan, choose, supported
from jaxconv._src.geometry import LAYOUTS, SPATIAL_RANKS, conv_geometry, is_channels_first

GRADS = ("dX", "dW", "db")
REFERENCES = ("naive", "lax", "fd", "torch")
DTYPES = ("float64", "float32", "complex128", "complex64")
FD_EPS = 1e-6


class Tolerance(NamedTuple):
    """Largest relative error that passes, per kind of reference."""

    exact: float  # naive, lax, torch: the same arithmetic up to summation order
    fd: float  # finite differences: rounding of f(p ± εv) divided by 2ε


TOLERANCES = {
    "float64": Tolerance(exact=1e-10, fd=1e-6),
    "float32": Tolerance(1e-4, 1e-4),
    "complex128": Tolerance(exact=1e-10, fd=1e-6),
    "complex64": Tolerance(1e-4, 1e-4),
}


def _wide(dtype: str) -> str:
    """The 64-bit dtype of the finite differences: float64, or complex128 for complex."""
    return "complex128" if dtype.startswith("complex") else "float64"


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """One convolution to audit: operand shapes in `layout` and the `jaxconv.conv` arguments.

    Attributes:
      x_shape: (N, C, *spatial) channels-first ("NCW", "NCHW", "NCDHW"), (N, *spatial, C)
        channels-last.
      w_shape: (O, C//groups, *k) channels-first, (*k, C//groups, O) channels-last.
      stride, padding, dilation, groups, layout: as in `jaxconv.conv`; the layout's rank is
        the configuration's.
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: Any = "VALID"
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    layout: str = "NCHW"

    @property
    def rank(self) -> int:
        """The number of spatial axes."""
        return len(self.layout) - 2

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `jaxconv.conv` for this configuration."""
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            layout=self.layout,
        )

    @property
    def out_channels(self) -> int:
        """O."""
        return self.w_shape[0] if is_channels_first(self.layout) else self.w_shape[-1]

    @property
    def geometry(self):
        """The resolved geometry; raises ValueError if the configuration is invalid."""
        return conv_geometry("AuditConfig", self.x_shape, self.w_shape, rank=None, **self.kwargs)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of Z (and of ∂L/∂Z); raises ValueError if the configuration is invalid."""
        return self.geometry.output_shape(self.x_shape[:1])

    def describe(self) -> str:
        """A one-line summary, e.g. `NCHW x(2,3,9,8) w(4,3,3,2) s(2,1) pSAME d(1,2) g1`."""

        def ints(t):
            t = (t,) * self.rank if isinstance(t, int) else t
            return "(" + ",".join(str(v) for v in t) + ")"

        pad = self.padding
        if not isinstance(pad, (str, int)):
            pad = str(pad).replace(" ", "")
        return (
            f"{self.layout} x{ints(self.x_shape)} w{ints(self.w_shape)} s{ints(self.stride)} "
            f"p{pad} d{ints(self.dilation)} g{self.groups}"
        )


class GradError(NamedTuple):
    """The error of one hand-derived gradient against one reference.

    Attributes:
      reference: "naive", "lax", "fd" or "torch".
      grad: "dX", "dW" or "db".
      max_abs: max|manual − reference| (for "fd": over the directional derivatives).
      max_rel: max_abs / max(max|reference|, tiny).
      tolerance: the largest `max_rel` that passes.
      passed: max_rel <= tolerance.
      plan: the plan the gradient was computed under (`str(plan)`), or "custom" for an
        injected function.
    """

    reference: str
    grad: str
    max_abs: float
    max_rel: float
    tolerance: float
    passed: bool
    plan: str = "custom"


class ComparisonResult(NamedTuple):
    """Everything `compare` measured for one configuration.

    Attributes:
      config: the configuration.
      dtype: "float64" or "float32", the dtype of operands and gradients.
      seed: the seed of the operands, cotangent and directions (`compare(config, seed=...)`
        reproduces the result).
      errors: one `GradError` per (plan, reference, gradient).
      manual: the hand-derived gradients under the default plan, {"dX", "dW", "db"} -> array
        in the caller's layout.
      automatic: the gradients of each array reference ("naive", "lax", "torch").
      plans: the plans audited ("custom" for an injected function); `GradError.plan` is
        `str` of one of them.
    """

    config: AuditConfig
    dtype: str
    seed: int
    errors: tuple[GradError, ...]
    manual: dict[str, np.ndarray]
    automatic: dict[str, dict[str, np.ndarray]]
    plans: tuple[Plan | str, ...] = ("custom",)

    @property
    def passed(self) -> bool:
        """True when every gradient is within tolerance of every reference."""
        return all(e.passed for e in self.errors)

    @property
    def references(self) -> tuple[str, ...]:
        """The references compared, in `REFERENCES` order."""
        present = {e.reference for e in self.errors}
        return tuple(r for r in REFERENCES if r in present)

    def error(self, reference: str, grad: str, plan: str | None = None) -> GradError:
        """The `GradError` of `grad` against `reference` under `plan`, or by default the
        largest over the plans (`passed` only if every plan passed); KeyError if it was not
        compared."""
        found = [
            e
            for e in self.errors
            if (e.reference, e.grad) == (reference, grad) and plan in (None, e.plan)
        ]
        if not found:
            raise KeyError((reference, grad, plan))
        worst = max(found, key=lambda e: e.max_rel)
        return worst._replace(passed=all(e.passed for e in found))

    @property
    def failing_plans(self) -> tuple[str, ...]:
        """The plans under which some gradient failed, in audit order."""
        failed = {e.plan for e in self.errors if not e.passed}
        return tuple(str(p) for p in self.plans if str(p) in failed)


def random_config(rng: np.random.Generator, rank: int = 2) -> AuditConfig:
    """Draws a random valid configuration of `rank` spatial axes whose output is never empty.

    Stride and dilation 1–3 per axis, kernel 1–4 per axis (1–3 in 3-D), every padding form
    ("VALID", "SAME", "SAME_LOWER", an int, one int per axis, a (lo, hi) pair per axis with
    negative = crop), both layouts of the rank, batch 1–3, and one of five kinds of channels,
    so that every form of the rules is drawn: groups 1 or 2 with 1–3 channels each (the
    shallow forms), depthwise (groups = C, with a channel multiplier of 1 or 2), "deep"
    (groups 1 or 2, more than 36 terms per output: the GEMM forms) and, in 2-D, "winograd"
    (3×3, stride 1, one group of 5–8 channels: F(2×2, 3×3), by phases when dilated).
    Whatever a configuration's size, `compare` audits every plan `jaxconv.supported` lists
    for it, the chunked and Winograd ∂L/∂W ones included. The sizes are drawn per axis from
    the smallest that keeps at least one output row (and one input row after any crop) up
    to 7 more (3 more in 3-D). In 2-D the draws are those of the 2-D audit before every rank.

    Args:
      rng: the generator to draw from.
      rank: 1, 2 or 3.

    Returns:
      The configuration.
    """
    layout = str(rng.choice(list(LAYOUTS[rank])))
    kinds = ["one", "two", "depthwise", "deep"] + (["winograd"] if rank == 2 else [])
    kind = str(rng.choice(kinds))
    largest = 5 if rank < 3 else 4
    k = tuple(int(rng.integers(1, largest)) for _ in range(rank))
    stride = tuple(int(rng.integers(1, 4)) for _ in range(rank))
    if kind == "winograd":
        k, stride = (3, 3), (1, 1)
    dilation = tuple(int(rng.integers(1, 4)) for _ in range(rank))
    if kind == "depthwise":
        groups, c_per_group = int(rng.integers(2, 5)), 1
    elif kind == "deep":  # more terms per output than the shallow forms take
        groups = int(rng.integers(1, 3))
        c_per_group = SHALLOW_MAX_DEPTH // math.prod(k) + int(rng.integers(1, 4))
    elif kind == "winograd":
        groups, c_per_group = 1, int(rng.integers(5, 9))
    else:
        groups, c_per_group = (1 if kind == "one" else 2), int(rng.integers(1, 4))
    c = groups * c_per_group
    o = groups * int(rng.integers(1, 3))
    form = str(rng.choice(["VALID", "SAME", "SAME_LOWER", "int", "pair", "explicit"]))
    padding: Any
    if form == "int":
        padding = int(rng.integers(-1, 4))
        pads = [(padding, padding)] * rank
    elif form == "pair":  # one int per axis
        padding = tuple(int(rng.integers(-1, 4)) for _ in range(rank))
        pads = [(p, p) for p in padding]
    elif form == "explicit":
        padding = tuple((int(rng.integers(-2, 4)), int(rng.integers(-2, 4))) for _ in range(rank))
        pads = list(padding)
    else:
        padding, pads = form, [(0, 0)] * rank
    size = []
    for kk, d, (lo, hi) in zip(k, dilation, pads):
        # SAME pads up to the kernel, so any size works; otherwise the padded (or cropped)
        # input must hold the dilated kernel, and a crop must leave at least one row.
        smallest = 1
        if form not in ("SAME", "SAME_LOWER"):
            smallest = max(1, d * (kk - 1) + 1 - lo - hi, 1 + max(-lo, 0) + max(-hi, 0))
        size.append(int(rng.integers(smallest, smallest + (8 if rank < 3 else 4))))
    n = int(rng.integers(1, 4))
    if is_channels_first(layout):
        x_shape, w_shape = (n, c, *size), (o, c // groups, *k)
    else:
        x_shape, w_shape = (n, *size, c), (*k, c // groups, o)
    return AuditConfig(x_shape, w_shape, stride, padding, dilation, groups, layout)


def _error(reference: str, grad: str, manual, expected, tolerance: float) -> GradError:
    manual, expected = np.asarray(manual), np.asarray(expected)
    wide = np.complex128 if np.iscomplexobj(manual) or np.iscomplexobj(expected) else np.float64
    manual, expected = manual.astype(wide), expected.astype(wide)
    max_abs = float(np.max(np.abs(manual - expected), initial=0.0))
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float64).tiny)
    max_rel = max_abs / scale
    return GradError(reference, grad, max_abs, max_rel, tolerance, bool(max_rel <= tolerance))


def _vjp(fn: Callable, x, w, b, cot, kwargs) -> tuple[jax.Array, jax.Array, jax.Array]:
    _, pullback = jax.vjp(lambda x, w, b: fn(x, w, b, **kwargs), x, w, b)
    return pullback(cot)


def _torch_grads(config: AuditConfig, x, w, b, cot, dtype: str) -> dict[str, np.ndarray]:
    """PyTorch autograd of the same convolution (F.conv1d/2d/3d), in `dtype`; padding
    applied with F.pad. Complex: PyTorch's gradient for the conjugated cotangent, conjugated,
    which is JAX's convention."""
    import torch
    import torch.nn.functional as F

    geom, rank = config.geometry, config.rank
    first = is_channels_first(config.layout)
    to_first, to_kernel = (0, rank + 1, *range(1, rank + 1)), (rank + 1, rank, *range(rank))
    from_first, from_kernel = np.argsort(to_first), np.argsort(to_kernel)
    complex_ = dtype.startswith("complex")

    def tensor(a, order):
        a = np.asarray(a, dtype)
        return torch.from_numpy(np.ascontiguousarray(a if first else a.transpose(*order)))

    tx = tensor(x, to_first).requires_grad_(True)
    tw = tensor(w, to_kernel).requires_grad_(True)
    tb = torch.from_numpy(np.asarray(b, dtype)).requires_grad_(True)
    # F.pad takes the last axis first; negative entries crop, as in jaxconv.
    pads = [side for lo_hi in reversed(geom.padding) for side in lo_hi]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    z = conv(
        F.pad(tx, pads), tw, tb, stride=geom.stride, dilation=geom.dilation, groups=geom.groups
    )
    t_cot = tensor(np.conj(cot) if complex_ else cot, to_first)
    grads = [g.numpy() for g in torch.autograd.grad(z, (tx, tw, tb), t_cot)]
    if complex_:
        grads = [np.conj(g) for g in grads]
    dx, dw, db = grads
    if not first:
        dx, dw = dx.transpose(*from_first), dw.transpose(*from_kernel)
    return {"dX": dx, "dW": dw, "db": db}


def compare(
    config: AuditConfig,
    *,
    dtype: str = "float64",
    seed: int = 0,
    conv: Callable | None = None,
    plans: Sequence[Plan] | None = None,
    use_torch: bool = False,
    fd_directions: int = 3,
    fd_eps: float = FD_EPS,
) -> ComparisonResult:
    """Compares the hand-derived gradients of `conv` with every reference for one config.

    The operands x, w, b and the cotangent ∂L/∂Z are standard normal, rounded to `dtype`.
    The gradients of `conv` under every plan and of the naive and lax references are computed
    in `dtype` under one `jax.jit`, with 64-bit JAX types switched on only for "float64"; the
    finite differences always run in float64 (`jax.enable_x64` is scoped to this call), from
    the same rounded operands. L = <∂L/∂Z, Z> is linear in each of x, w and b, so central
    differences have no truncation error: what remains is the rounding of L divided by 2ε.

    Tolerances (max relative error, `TOLERANCES`): float64 and complex128 1e-10 for naive /
    lax / torch and 1e-6 for finite differences; float32 and complex64 1e-4 for all. Complex
    operands have independent real and imaginary parts, and the finite differences run in
    complex128.

    Args:
      config: the convolution.
      dtype: "float64", "float32", "complex128" or "complex64".
      seed: seed of the operands, cotangent and directions.
      conv: the function under audit, with `jaxconv.conv`'s signature; by default
        `jaxconv.conv` under each of `plans`. Tests inject a custom_vjp with a
        deliberately wrong rule.
      plans: the plans to audit `jaxconv.conv` under; by default every plan
        `jaxconv.supported` lists for the configuration. Not with `conv`.
      use_torch: also compare with PyTorch autograd (torch must be importable).
      fd_directions: random directions per operand for the finite differences.
      fd_eps: the step ε of the finite differences.

    Returns:
      A `ComparisonResult` with one `GradError` per (plan, reference, gradient).

    Raises:
      ValueError: unknown `dtype`, `plans` with `conv`, or an invalid configuration.

    Examples:
      >>> from jaxconv import check
      >>> config = check.AuditConfig((1, 2, 6, 5), (3, 2, 3, 2), stride=(2, 1), padding="SAME")
      >>> result = check.compare(config)
      >>> result.passed, result.error("lax", "dW").max_rel < 1e-12, len(result.plans)
      (True, True, 5)
    """
    if dtype not in DTYPES:
        raise ValueError(f"compare: `dtype` must be one of {DTYPES}, got {dtype!r}.")
    if conv is not None and plans is not None:
        raise ValueError("compare: give `conv` or `plans`, not both.")
    import jaxconv

    kwargs = config.kwargs
    audited: dict[str, Callable[..., jax.Array]]
    if conv is None:
        geom = config.geometry
        plans = supported(geom, dtype) if plans is None else tuple(plans)
        default = choose(geom, jax.default_backend(), dtype)
        audited = {str(p): functools.partial(jaxconv.conv, plan=p) for p in plans}
        plan_objects: tuple[Plan | str, ...] = tuple(plans)
        default_name = str(default) if default in plans else str(plans[0])
        fd_conv = audited[default_name]
    else:
        audited, default_name, fd_conv = {"custom": conv}, "custom", conv
        plan_objects = ("custom",)
    rng = np.random.default_rng(seed)
    shapes = (config.x_shape, config.w_shape, (config.out_channels,), config.output_shape)
    wide = _wide(dtype)

    def normal(shape):
        if dtype.startswith("complex"):
            return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return rng.standard_normal(shape)

    # Rounded to `dtype` first, so every reference sees exactly the operands `conv` sees.
    x, w, b, cot = (normal(s).astype(dtype).astype(wide) for s in shapes)

    def all_vjps(x, w, b, cot):
        refs: list[Callable[..., jax.Array]] = [*audited.values()]
        refs += [jaxconv.conv_reference, jaxconv.conv_xla]
        return [_vjp(f, x, w, b, cot, kwargs) for f in refs]

    with jax.enable_x64(dtype in ("float64", "complex128")):
        computed = jax.jit(all_vjps, compiler_options=fast_compile_options())(
            *(jnp.asarray(a, dtype) for a in (x, w, b, cot))
        )
        computed = [dict(zip(GRADS, map(np.asarray, g))) for g in computed]
    by_plan = dict(zip(audited, computed[:-2]))
    automatic = {"naive": computed[-2], "lax": computed[-1]}
    if use_torch:
        automatic["torch"] = _torch_grads(config, x, w, b, cot, dtype)

    tolerance = TOLERANCES[dtype]
    errors = [
        _error(name, grad, manual[grad], grads[grad], tolerance.exact)._replace(plan=plan)
        for plan, manual in by_plan.items()
        for name, grads in automatic.items()
        for grad in GRADS
    ]

    directions = [normal((fd_directions, *s)) for s in shapes[:3]]
    numeric = _directional_derivatives(fd_conv, kwargs, (x, w, b, cot), directions, fd_eps)
    for plan, manual in by_plan.items():
        for grad, v, fd in zip(GRADS, directions, numeric):
            # Σ grad · v for each direction (no conjugation), in float64 or complex128.
            analytic = np.tensordot(v, np.asarray(manual[grad], wide), manual[grad].ndim)
            errors.append(_error("fd", grad, analytic, fd, tolerance.fd)._replace(plan=plan))
    order = list(audited)
    errors.sort(
        key=lambda e: (order.index(e.plan), REFERENCES.index(e.reference), GRADS.index(e.grad))
    )
    return ComparisonResult(
        config, dtype, seed, tuple(errors), by_plan[default_name], automatic, plan_objects
    )


def _directional_derivatives(conv, kwargs, operands, directions, eps) -> list[np.ndarray]:
    """(L(p + εv) − L(p − εv)) / 2ε for L = Σ cot · conv(x, w, b) (bilinear: no conjugate),
    p each of x, w, b, in float64 or complex128 (the operands' own 64-bit dtype)."""

    def loss(point, cot):
        x, w, b = point
        return jnp.sum(cot * conv(x, w, b, **kwargs))

    @functools.partial(jax.jit, compiler_options=fast_compile_options())
    def along(x, w, b, cot, vx, vw, vb):
        point = (x, w, b)
        out = []
        for index, vs in enumerate((vx, vw, vb)):

            def central(v, index=index):
                plus = [p + eps * v if i == index else p for i, p in enumerate(point)]
                minus = [p - eps * v if i == index else p for i, p in enumerate(point)]
                return (loss(plus, cot) - loss(minus, cot)) / (2 * eps)

            out.append(lax.map(central, vs))  # one compiled body for all directions
        return out

    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (*operands, *directions)]
        return [np.asarray(d) for d in along(*args)]


def run(
    n: int,
    *,
    seed: int = 0,
    dtype: str = "float64",
    use_torch: bool = False,
    conv: Callable | None = None,
    ranks: Sequence[int] = SPATIAL_RANKS,
    on_result: Callable[[int, ComparisonResult], None] | None = None,
    clear_caches_every: int | None = 50,
) -> list[ComparisonResult]:
    """Audits `n` random configurations drawn from `seed` (see `random_config`), their ranks
    taken in turn from `ranks`.

    Args:
      n: number of configurations.
      seed: seed of the configurations and of each configuration's operand seed.
      dtype: "float64", "float32", "complex128" or "complex64".
      use_torch: also compare with PyTorch autograd.
      conv: the function under audit (default `jaxconv.conv`).
      ranks: the spatial ranks to draw, configuration i of rank ranks[i % len(ranks)]; with
        (2,) the configurations are those of the 2-D audit before every rank.
      on_result: called with (index, result) as each configuration finishes.
      clear_caches_every: call `jax.clear_caches()` after every this many configurations
        (None: never). Each configuration compiles functions for its own shapes that are
        never reused; keeping them all grows memory by a few MB per configuration.

    Returns:
      One `ComparisonResult` per configuration, in drawing order.
    """
    rng = np.random.default_rng(seed)
    results = []
    for i in range(n):
        config = random_config(rng, ranks[i % len(ranks)])
        operand_seed = int(rng.integers(2**31))
        result = compare(config, dtype=dtype, seed=operand_seed, conv=conv, use_torch=use_torch)
        results.append(result)
        if on_result is not None:
            on_result(i, result)
        if clear_caches_every and (i + 1) % clear_caches_every == 0:
            jax.clear_caches()
    return results


def worst_errors(results: Sequence[ComparisonResult]) -> dict[tuple[str, str], GradError]:
    """The largest errors of each (reference, gradient) over `results`.

    Returns:
      (reference, grad) -> `GradError` whose `max_abs` and `max_rel` are the maxima over all
      configurations (possibly from different ones) and `passed` is True when every
      configuration passed.
    """
    worst: dict[tuple[str, str], GradError] = {}
    for result in results:
        for e in result.errors:
            key = (e.reference, e.grad)
            old = worst.get(key, e)
            worst[key] = e._replace(
                max_abs=max(old.max_abs, e.max_abs),
                max_rel=max(old.max_rel, e.max_rel),
                passed=old.passed and e.passed,
            )
    return worst


def audited_forms(results: Sequence[ComparisonResult]) -> dict[str, int]:
    """How many of the audited plans use each form, and how many run in chunks.

    Returns:
      {"plans": total, "forward winograd": count, ..., "chunked": count, "chunks as state":
      count}, the forms in the order of `Plan`'s fields.
    """
    counts: dict[str, int] = {"plans": 0}
    for result in results:
        for plan in result.plans:
            counts["plans"] += 1
            if not isinstance(plan, Plan):
                continue
            for name in ("forward", "grad_input", "grad_kernel"):
                key = f"{name} {getattr(plan, name)}"
                counts[key] = counts.get(key, 0) + 1
            chunks = (plan.forward_chunk, plan.grad_input_chunk, plan.grad_kernel_chunk)
            if any(c is not None and c < result.config.x_shape[0] for c in chunks):
                counts["chunked"] = counts.get("chunked", 0) + 1
            if plan.chunks_as_state and (plan.forward_chunk or 0) < result.config.x_shape[0]:
                counts["chunks as state"] = counts.get("chunks as state", 0) + 1
    return counts


def _tile(kernel: np.ndarray, layout: str) -> np.ndarray:
    """A kernel of any rank as one 2-D image: rows (out-channel, every kernel axis but the
    last: kh in 2-D, (kd, kh) in 3-D, none in 1-D), columns (in-channel, kw)."""
    if not is_channels_first(layout):
        kernel = np.moveaxis(kernel, (-1, -2), (0, 1))  # (*k, I, O) -> (O, I, *k)
    o, i, *k = kernel.shape
    rows = math.prod(k[:-1])
    tiled = kernel.reshape(o, i, rows, k[-1]).transpose(0, 2, 1, 3)
    return tiled.reshape(o * rows, i * k[-1])


def plot(results: Sequence[ComparisonResult], path: str, *, index: int | None = None) -> None:
    """Writes a PNG: one config's manual and automatic dW, their difference, and a histogram.

    Top row: the hand-derived ∂L/∂W, `jax.vjp` through `lax.conv_general_dilated`, and their
    difference, each kernel tiled as (out-channel × kh) by (in-channel × kw). Bottom: the
    relative errors of every (config, reference, gradient) on a log10 axis, one histogram per
    reference, with the tolerances dashed; exact zeros are counted in the legend.

    Args:
      results: the audit's results (at least one).
      path: the PNG to write.
      index: which result's dW to show; default the one with the largest kernel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot: `results` is empty.")
    if index is None:
        index = max(range(len(results)), key=lambda i: results[i].manual["dW"].size)
    shown = results[index]
    layout = shown.config.layout
    # Complex kernels are shown by their real parts.
    manual = _tile(np.real(shown.manual["dW"]).astype(np.float64), layout)
    auto = _tile(np.real(shown.automatic["lax"]["dW"]).astype(np.float64), layout)
    k = shown.config.geometry.kernel_size
    kh, kw = math.prod(k[:-1]), k[-1]

    fig = plt.figure(figsize=(13, 9), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1])
    limit = float(np.abs(auto).max()) or 1.0
    diff = manual - auto
    biggest = float(np.abs(diff).max())
    panels = (
        (manual, "hand-derived ∂L/∂W\n(jax.vjp of conv: custom_vjp rules)", limit),
        (auto, "automatic ∂L/∂W\n(jax.vjp of lax.conv_general_dilated)", limit),
        (diff, f"difference (hand − automatic)\nmax |·| = {biggest:.1e}", biggest or 1.0),
    )
    for column, (image, title, lim) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        im = ax.imshow(image, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        for r in range(kh, image.shape[0], kh):  # channel boundaries
            ax.axhline(r - 0.5, color="k", lw=1)
        for c in range(kw, image.shape[1], kw):
            ax.axvline(c - 0.5, color="k", lw=1)
        ax.set_xticks(np.arange(image.shape[1] // kw) * kw + (kw - 1) / 2)
        ax.set_xticklabels([str(i) for i in range(image.shape[1] // kw)])
        ax.set_yticks(np.arange(image.shape[0] // kh) * kh + (kh - 1) / 2)
        ax.set_yticklabels([str(i) for i in range(image.shape[0] // kh)])
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(f"in-channel (blocks of kw = {kw})")
        ax.set_ylabel(f"out-channel (blocks of kh = {kh})")
        fig.colorbar(im, ax=ax, shrink=0.9, format="%.0e" if column == 2 else None)

    ax = fig.add_subplot(grid[1, :])
    floor = 1e-20
    rel_all = [e.max_rel for r in results for e in r.errors]
    low = np.log10(max(min([v for v in rel_all if v > 0], default=1e-17), floor)) - 0.5
    high = np.log10(max(max(rel_all), 1e-3)) + 0.5
    bins = np.logspace(low, high, 50)
    colors = {"naive": "tab:blue", "lax": "tab:orange", "fd": "tab:green", "torch": "tab:red"}
    for ref in REFERENCES:
        rel = np.array([e.max_rel for r in results for e in r.errors if e.reference == ref])
        if rel.size == 0:
            continue
        zeros = int(np.sum(rel == 0))
        ax.hist(
            np.clip(rel[rel > 0], bins[0], bins[-1]),
            bins=bins.tolist(),
            histtype="step",
            lw=2,
            color=colors[ref],
            label=f"{ref} ({rel.size} values, {zeros} exactly 0)",
        )
    tolerance = TOLERANCES[shown.dtype]
    if tolerance.fd == tolerance.exact:
        ax.axvline(
            tolerance.exact, color="k", ls="--", lw=1, label=f"tolerance {tolerance.exact:g}"
        )
    else:
        exact_label = f"tolerance {tolerance.exact:g} (naive, lax, torch)"
        ax.axvline(tolerance.exact, color="k", ls="--", lw=1, label=exact_label)
        fd_label = f"tolerance {tolerance.fd:g} (fd)"
        ax.axvline(tolerance.fd, color="tab:green", ls="--", lw=1, label=fd_label)
    ax.set_xscale("log")
    ax.set_xlabel("relative error  max|manual − ref| / max|ref|  (log scale)")
    ax.set_ylabel("count (config × gradient)")
    failed = sum(not r.passed for r in results)
    ax.set_title(
        f"relative errors of dX, dW, db over {len(results)} configs "
        f"({shown.dtype}): {len(results) - failed} passed, {failed} failed",
        fontsize=11,
    )
    ax.legend(fontsize=9, loc="upper right")
    fig.suptitle(
        f"jaxconv gradient audit ({shown.dtype}), config #{index}: {shown.config.describe()}"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = [
    "DTYPES",
    "FD_EPS",
    "GRADS",
    "REFERENCES",
    "TOLERANCES",
    "AuditConfig",
    "ComparisonResult",
    "GradError",
    "Tolerance",
    "audited_forms",
    "compare",
    "plot",
    "random_config",
    "run",
    "worst_errors",
]
