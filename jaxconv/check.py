"""Gradient audit: jaxconv's hand-derived gradients against every independent reference.

    python -m jaxconv.check [--n 100] [--seed 0] [--dtype float64|float32] [--torch]
                            [--plot FILE]

Draws random valid configurations (stride, every padding form, dilation, groups, layouts,
batch, non-square shapes) and, for each, compares dX, dW and db from `jaxconv.conv2d`'s
custom_vjp with:

- `reference`: `jax.vjp` of `jaxconv.conv2d_reference` (naive eq. 6, plain autodiff);
- `lax`: `jax.vjp` of `jaxconv.conv2d_xla` (XLA's convolution, plain autodiff);
- `fd`: central finite differences of XLA's convolution in float64, along random directions
  (the loss is linear in each operand, so these are exact up to rounding);
- `torch`: PyTorch autograd, with `--torch` when torch is importable.

Error = max|manual − reference| / max|reference| per gradient. Tolerances: float64 1e-10
(1e-8 for fd); float32 1e-4 (the references then also run in float32, fd stays float64).
Prints a table, then `N passed, M failed`, and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

TOLERANCES = {"float64": {"default": 1e-10, "fd": 1e-8}, "float32": {"default": 1e-4, "fd": 1e-4}}
GRADS = ("dX", "dW", "db")


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """One convolution to audit: operand shapes (in `layout`) and the configuration."""

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    stride: tuple[int, int]
    padding: str | int | tuple
    dilation: tuple[int, int]
    groups: int
    layout: str

    @property
    def kwargs(self) -> dict:
        """The keyword arguments of `jaxconv.conv2d`."""
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            layout=self.layout,
        )

    def describe(self) -> str:
        """A one-line summary for the table."""
        return (
            f"{self.layout} x{self.x_shape} w{self.w_shape} s{self.stride} p{self.padding} "
            f"d{self.dilation} g{self.groups}"
        )


class GradError(NamedTuple):
    """The error of one hand-derived gradient against one reference."""

    reference: str
    grad: str
    max_abs: float
    max_rel: float
    passed: bool


class ComparisonResult(NamedTuple):
    """Everything measured for one configuration."""

    config: AuditConfig
    dtype: str
    errors: list[GradError]
    manual: dict[str, np.ndarray]
    automatic: dict[str, np.ndarray]

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.errors)


def random_config(rng: np.random.Generator) -> AuditConfig:
    """A random valid configuration (its output is never empty)."""
    layout = str(rng.choice(["NCHW", "NHWC"]))
    kind = rng.choice(["one", "two", "depthwise"])
    groups = {"one": 1, "two": 2, "depthwise": int(rng.integers(2, 5))}[kind]
    c = groups if kind == "depthwise" else groups * int(rng.integers(1, 4))
    o = groups * int(rng.integers(1, 3))
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    form = rng.choice(["VALID", "SAME", "SAME_LOWER", "int", "pair", "explicit"])
    if form == "int":
        padding = int(rng.integers(0, 4))
        pads = [(padding, padding)] * 2
    elif form == "pair":
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        pads = [(p, p) for p in padding]
    elif form == "explicit":
        padding = tuple((int(rng.integers(-2, 4)), int(rng.integers(-2, 4))) for _ in range(2))
        pads = list(padding)
    else:
        padding, pads = str(form), [(0, 0)] * 2
    hw = []
    for kk, d, (lo, hi) in zip(k, dilation, pads):
        smallest = max(1, d * (kk - 1) + 1 - lo - hi, 1 - lo - hi)
        if form in ("SAME", "SAME_LOWER"):
            smallest = 1
        hw.append(int(rng.integers(smallest, smallest + 8)))
    n = int(rng.integers(1, 4))
    if layout == "NCHW":
        x_shape, w_shape = (n, c, *hw), (o, c // groups, *k)
    else:
        x_shape, w_shape = (n, *hw, c), (*k, c // groups, o)
    return AuditConfig(x_shape, w_shape, stride, padding, dilation, groups, layout)


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _torch_grads(config: AuditConfig, x, w, b, cot) -> dict[str, np.ndarray]:
    """PyTorch autograd of the same convolution (float64), padding applied with F.pad."""
    import torch
    import torch.nn.functional as F

    from jaxconv._src.geometry import conv_geometry

    geom = conv_geometry("check", config.x_shape, config.w_shape, **config.kwargs)
    nchw = config.layout == "NCHW"

    def tensor(a, to_nchw):
        a = np.asarray(a, np.float64)
        return torch.from_numpy(np.ascontiguousarray(a if nchw else a.transpose(*to_nchw)))

    tx = tensor(x, (0, 3, 1, 2)).requires_grad_(True)
    tw = tensor(w, (3, 2, 0, 1)).requires_grad_(True)
    tb = torch.from_numpy(np.asarray(b, np.float64)).requires_grad_(True)
    (lo_h, hi_h), (lo_w, hi_w) = geom.padding
    z = F.conv2d(
        F.pad(tx, (lo_w, hi_w, lo_h, hi_h)),  # negative values crop, as in jaxconv
        tw,
        tb,
        stride=geom.stride,
        dilation=geom.dilation,
        groups=geom.groups,
    )
    dx, dw, db = torch.autograd.grad(z, (tx, tw, tb), tensor(cot, (0, 3, 1, 2)))
    dx, dw = dx.numpy(), dw.numpy()
    if not nchw:
        dx, dw = dx.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0)
    return {"dX": dx, "dW": dw, "db": db.numpy()}


def compare(
    config: AuditConfig,
    *,
    dtype: str = "float64",
    seed: int = 0,
    conv: Callable | None = None,
    use_torch: bool = False,
    fd_directions: int = 3,
) -> ComparisonResult:
    """Compares the hand-derived gradients of `conv` with every reference for one config.

    Args:
      config: the convolution.
      dtype: "float64" (needs x64, enabled here) or "float32".
      seed: seed of the operands, cotangent and directions.
      conv: the function under audit, `jaxconv.conv2d` by default; tests inject broken rules.
      use_torch: also compare with PyTorch autograd.
      fd_directions: random directions per operand for finite differences.

    Returns:
      A `ComparisonResult` with one `GradError` per (reference, gradient).
    """
    _enable_x64()  # float64 finite differences, whatever dtype is audited
    import jax
    import jax.numpy as jnp

    import jaxconv

    conv = conv or jaxconv.conv2d
    kwargs = config.kwargs
    rng = np.random.default_rng(seed)
    o = config.w_shape[0] if config.layout == "NCHW" else config.w_shape[-1]
    x64 = rng.standard_normal(config.x_shape)
    w64 = rng.standard_normal(config.w_shape)
    b64 = rng.standard_normal(o)
    z_shape = jax.eval_shape(
        lambda: jaxconv.conv2d_xla(
            jnp.zeros(config.x_shape, jnp.float32), jnp.zeros(config.w_shape, jnp.float32), **kwargs
        )
    ).shape
    cot64 = rng.standard_normal(z_shape)
    x, w, b, cot = (jnp.asarray(a, dtype) for a in (x64, w64, b64, cot64))

    @jax.jit
    def gradients(x, w, b, cot):
        def grads_of(fn):
            return jax.vjp(lambda x, w, b: fn(x, w, b, **kwargs), x, w, b)[1](cot)

        return [grads_of(f) for f in (conv, jaxconv.conv2d_reference, jaxconv.conv2d_xla)]

    manual, by_reference, by_lax = (
        dict(zip(GRADS, map(np.asarray, g))) for g in gradients(x, w, b, cot)
    )
    automatic = {"reference": by_reference, "lax": by_lax}
    if use_torch:
        automatic["torch"] = _torch_grads(config, x64, w64, b64, cot64)

    tolerance = TOLERANCES[dtype]
    errors = []
    for name, grads in automatic.items():
        for grad in GRADS:
            errors.append(_error(name, grad, manual[grad], grads[grad], tolerance["default"]))
    errors += _finite_difference_errors(
        config, manual, (x64, w64, b64, cot64), rng, fd_directions, tolerance["fd"]
    )
    return ComparisonResult(config, dtype, errors, manual, by_lax)


def _error(reference: str, grad: str, manual, expected, tolerance: float) -> GradError:
    manual = np.asarray(manual, np.float64)
    expected = np.asarray(expected, np.float64)
    max_abs = float(np.max(np.abs(manual - expected)))
    scale = float(np.max(np.abs(expected)))
    max_rel = max_abs / scale if scale > 0 else max_abs
    return GradError(reference, grad, max_abs, max_rel, bool(max_rel <= tolerance))


def _finite_difference_errors(config, manual, operands, rng, directions, tolerance):
    """Central differences of <cot, conv(x, w, b)> in float64 along random directions."""
    import jax.numpy as jnp

    import jaxconv

    cot = operands[3]
    kwargs = config.kwargs
    cot = np.asarray(cot, np.float64)

    def loss(x, w, b):
        z = jaxconv.conv2d_xla(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kwargs)
        return float(np.vdot(cot, np.asarray(z, np.float64)))

    errors = []
    for index, grad in enumerate(GRADS):
        numeric, analytic = [], []
        for _ in range(directions):
            v = rng.standard_normal(operands[index].shape)
            eps = 1e-3 * (1 + np.max(np.abs(operands[index])))
            plus, minus = list(operands[:3]), list(operands[:3])
            plus[index] = plus[index] + eps * v
            minus[index] = minus[index] - eps * v
            numeric.append((loss(*plus) - loss(*minus)) / (2 * eps))
            analytic.append(float(np.vdot(np.asarray(manual[grad], np.float64), v)))
        errors.append(_error("fd", grad, analytic, numeric, tolerance))
    return errors


def run(
    n: int,
    *,
    seed: int = 0,
    dtype: str = "float64",
    use_torch: bool = False,
    conv: Callable | None = None,
    on_result: Callable[[int, ComparisonResult], None] | None = None,
) -> list[ComparisonResult]:
    """Audits `n` random configurations drawn from `seed`.

    Args:
      n: number of configurations.
      seed: seed of the configurations and operands.
      dtype: "float64" or "float32".
      use_torch: also compare with PyTorch autograd.
      conv: the function under audit (default `jaxconv.conv2d`).
      on_result: called with (index, result) as each configuration finishes.

    Returns:
      One `ComparisonResult` per configuration.
    """
    rng = np.random.default_rng(seed)
    results = []
    for i in range(n):
        result = compare(
            random_config(rng), dtype=dtype, seed=seed + i, conv=conv, use_torch=use_torch
        )
        results.append(result)
        if on_result:
            on_result(i, result)
    return results


def _row(index: int, result: ComparisonResult, references: Sequence[str]) -> str:
    cells = []
    for ref in references:
        worst = max((e for e in result.errors if e.reference == ref), key=lambda e: e.max_rel)
        cells.append(f"{ref} {worst.max_rel:8.1e} ({worst.grad})")
    status = "PASS" if result.passed else "FAIL"
    return f"{index:4d} {status}  " + "  ".join(cells) + f"  {result.config.describe()}"


def plot(results: list[ComparisonResult], path: str) -> None:
    """Manual and automatic dW of the config with the largest kernel side by side, their
    difference, and a histogram of relative errors over all configs (exact zeros at −20)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = max(results, key=lambda r: r.manual["dW"].size)  # the most kernel to look at
    manual, auto = first.manual["dW"], first.automatic["dW"]
    # The kernel as one 2-D image: rows (out-channel, kh), columns (in-channel, kw).
    if first.config.layout == "NHWC":
        manual, auto = manual.transpose(3, 2, 0, 1), auto.transpose(3, 2, 0, 1)

    def tile(k):
        o, i, kh, kw = k.shape
        return k.transpose(0, 2, 1, 3).reshape(o * kh, i * kw)

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    limit = float(np.abs(auto).max()) or 1.0
    for ax, image, title in (
        (axes[0], tile(manual), "hand-derived ∂L/∂W"),
        (axes[1], tile(auto), "jax.grad through XLA ∂L/∂W"),
    ):
        shown = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set(title=title, xlabel="in-channel × kw", ylabel="out-channel × kh")
        fig.colorbar(shown, ax=ax, shrink=0.8)
    diff = axes[2].imshow(tile(manual - auto), cmap="PuOr")
    axes[2].set(title="difference (manual − automatic)", xlabel="in-channel × kw")
    fig.colorbar(diff, ax=axes[2], shrink=0.8)
    rel = np.array([e.max_rel for r in results for e in r.errors])
    axes[3].hist(np.log10(np.maximum(rel, 1e-20)), bins=40, color="tab:blue")
    axes[3].set(
        title=f"relative errors, {len(results)} configs × refs × grads",
        xlabel="log10(max|manual − ref| / max|ref|); exact matches at −20",
        ylabel="count",
    )
    fig.suptitle(f"jaxconv gradient audit ({first.dtype}); left: {first.config.describe()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (0: every configuration passed)."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxconv.check",
        description=__doc__.split("\n\n")[0],
        epilog="Tolerances (max relative error): float64 1e-10, finite differences 1e-8; "
        "float32 1e-4.",
    )
    parser.add_argument("--n", type=int, default=100, help="configurations to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--torch", action="store_true", help="also compare with PyTorch")
    parser.add_argument("--plot", metavar="FILE", help="write a figure (PNG) of the audit")
    args = parser.parse_args(argv)
    use_torch = False
    if args.torch:
        try:
            import torch  # noqa: F401

            use_torch = True
        except ImportError:
            print("--torch: PyTorch is not installed; skipping the torch comparison.")
    references = ["reference", "lax", "fd"] + (["torch"] if use_torch else [])
    print(f"auditing {args.n} configurations, {args.dtype}, seed {args.seed}")
    print("   # status  worst relative error per reference (gradient)  configuration")
    results = run(
        args.n,
        seed=args.seed,
        dtype=args.dtype,
        use_torch=use_torch,
        on_result=lambda i, r: print(_row(i, r, references), flush=True),
    )
    for ref in references:
        for grad in GRADS:
            worst = max(
                e.max_rel for r in results for e in r.errors if (e.reference, e.grad) == (ref, grad)
            )
            print(f"max relative error {grad} vs {ref}: {worst:.2e}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
