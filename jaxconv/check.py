"""Gradient audit: jaxconv's hand-derived gradients against automatic differentiation.

    python -m jaxconv.check [--n 100] [--seed 0] [--ranks 1,2,3]
                            [--dtype float64|float32|complex128|complex64] [--torch]
                            [--plot FILE]

Draws N seeded random valid configurations, their spatial ranks taken in turn from --ranks
(1-D, 2-D and 3-D by default; stride 1–3, every padding form: "VALID", "SAME",
"SAME_LOWER", an int, one int per axis, a (lo, hi) pair per axis with negative = crop and
asymmetric; dilation 1–3; groups 1, 2 or depthwise; both layouts of the rank; batch 1–3;
non-square shapes). For each one it compares dX, dW and db from `jax.vjp` of `jaxconv.conv`
(which runs the custom_vjp rules) under every plan `jaxconv.supported` lists for it (the
plain rules, every family of fast forms, chunked ones, and the plan `jaxconv.choose` picks
on each platform) with:

  naive  jax.vjp of jaxconv.conv_reference (eq. 6 as gathers, plain autodiff)
  lax    jax.vjp of lax.conv_general_dilated + bias (jaxconv.conv_xla)
  fd     central finite differences in float64 (complex128 for complex dtypes) along 3
         random directions per operand: sum(dL/dZ * (f(p + eps v) - f(p - eps v)) / 2 eps)
         against sum(grad * v), eps = 1e-6
  torch  PyTorch autograd of F.conv1d/2d/3d (F.pad first), with --torch; for complex
         dtypes PyTorch's gradient is conjugated (JAX's VJP is the transpose, PyTorch's
         the conjugate transpose)

Relative error = max|manual - ref| / max(max|ref|, tiny). Tolerances on it: float64 and
complex128 1e-10 for naive, lax and torch, 1e-6 for fd; float32 and complex64 1e-4 for all
(the gradients and the naive, lax and torch references run in that dtype; fd stays 64-bit).
With --dtype float64 or complex128, 64-bit JAX types are switched on before anything is
computed.

Prints which ranks and dtype it audits and how it compiles, one row per configuration (the
largest max abs / max rel error of each gradient against each reference over its plans,
PASS or FAIL, the number of plans, and the failing ones), the worst errors, the forms and
ranks audited, then `N passed, M failed` on its own line; the exit status is 1 if any
configuration failed. Usage errors exit 2 before the audit starts: a bad flag, a --plot path
that cannot be written (a directory, a missing or unwritable directory; a path without a
suffix gets .png, and the path written is printed), --torch without PyTorch, --plot without
matplotlib.

From Python:

    >>> from jaxconv import check
    >>> results = check.run(2, seed=0, dtype="float32")
    >>> [r.passed for r in results]
    [True, True]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from jaxconv._src.audit import DTYPES as DTYPES
from jaxconv._src.audit import FD_EPS as FD_EPS
from jaxconv._src.audit import GRADS as GRADS
from jaxconv._src.audit import REFERENCES as REFERENCES
from jaxconv._src.audit import TOLERANCES as TOLERANCES
from jaxconv._src.audit import AuditConfig as AuditConfig
from jaxconv._src.audit import ComparisonResult as ComparisonResult
from jaxconv._src.audit import GradError as GradError
from jaxconv._src.audit import Tolerance as Tolerance
from jaxconv._src.audit import audited_forms as audited_forms
from jaxconv._src.audit import compare as compare
from jaxconv._src.audit import plot as plot
from jaxconv._src.audit import random_config as random_config
from jaxconv._src.audit import run as run
from jaxconv._src.audit import worst_errors as worst_errors
from jaxconv._src.compat import describe_fast_compile
from jaxconv._src.geometry import SPATIAL_RANKS

_CELL = 11  # "1e-16/2e-16"


def _number(value: float) -> str:
    return "0" if value == 0 else f"{value:.0e}"


def header(references: Sequence[str]) -> str:
    """The two header lines of the table."""
    group = len(GRADS) * (_CELL + 1)
    top = " " * 12 + "".join(f"{ref + ' (max abs/max rel)':<{group}}| " for ref in references)
    cells = "".join(f"{g:<{_CELL}} " for g in GRADS)
    columns = "".join(f"{cells}| " for _ in references)
    return top + "\n" + f"{'#':>4} result  " + columns + "plans | config"


def format_row(index: int, result: ComparisonResult) -> str:
    """One table row: index, PASS/FAIL, abs/rel error per reference and gradient, config.

    A failing cell is marked with `!` after its relative error.
    """
    cells = []
    for ref in result.references:
        group = []
        for grad in GRADS:
            e = result.error(ref, grad)
            text = f"{_number(e.max_abs)}/{_number(e.max_rel)}" + ("" if e.passed else "!")
            group.append(f"{text:<{_CELL}}")
        cells.append(" ".join(group) + " | ")
    status = "PASS" if result.passed else "FAIL"
    failing = "".join(f"  FAILED under: {p}" for p in result.failing_plans)
    plans = f"{len(result.plans):5d} | "
    return f"{index:4d} {status}    " + "".join(cells) + plans + result.config.describe() + failing


def summary(results: Sequence[ComparisonResult]) -> str:
    """The largest abs and rel error of each (reference, gradient) over all configurations."""
    lines = []
    for (ref, grad), e in sorted(
        worst_errors(results).items(),
        key=lambda item: (REFERENCES.index(item[0][0]), GRADS.index(item[0][1])),
    ):
        lines.append(
            f"worst {grad} vs {ref:<5}: max abs {e.max_abs:.2e}  max rel {e.max_rel:.2e}  "
            f"(tolerance {e.tolerance:g}, {'ok' if e.passed else 'FAILED'})"
        )
    counts = audited_forms(results)
    forms = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "plans")
    lines.append(f"audited {counts['plans']} plans over {len(results)} configurations: {forms}")
    by_rank = collections.Counter(r.config.rank for r in results)
    dtypes = sorted({r.dtype for r in results})
    ranks = ", ".join(f"{rank}-D {by_rank[rank]}" for rank in sorted(by_rank))
    lines.append(f"ranks audited: {ranks}; dtype {', '.join(dtypes)}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxconv.check",
        description=__doc__.split("\n\nFrom Python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=100, help="configurations to draw (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64", help="default float64")
    parser.add_argument(
        "--ranks",
        default="1,2,3",
        help="spatial ranks to draw, in turn (default 1,2,3; e.g. 2 for 2-D only)",
    )
    parser.add_argument("--torch", action="store_true", help="also compare with PyTorch")
    parser.add_argument(
        "--plot", metavar="FILE", help="write a PNG figure of the audit (.png added if no suffix)"
    )
    return parser


def _plot_path(parser: argparse.ArgumentParser, value: str) -> Path:
    """The PNG --plot names, checked writable before the audit; usage errors exit 2."""
    path = Path(value)
    if path.is_dir():
        parser.error(f"--plot {value} is a directory; name a file, such as {path / 'audit.png'}")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    elif path.suffix.lower() != ".png":
        parser.error(f"--plot {value}: the figure is a PNG; name a .png file")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        parser.error(f"--plot {value}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"--plot {value}: {path} is not writable")
    if importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install -e '.[demo]'")
    return path


def main(argv: Sequence[str] | None = None, *, conv: Callable | None = None) -> int:
    """Runs the audit CLI.

    Args:
      argv: the arguments (default `sys.argv[1:]`).
      conv: the function under audit (default `jaxconv.conv`); for tests.

    Returns:
      The exit status: 0 if every configuration passed, 1 otherwise.

    Raises:
      SystemExit: status 2, a usage error (see the module docstring), before the audit.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        ranks = tuple(int(r) for r in args.ranks.split(","))
    except ValueError:
        ranks = ()
    if not ranks or not set(ranks) <= set(SPATIAL_RANKS):
        parser.error(f"--ranks must be a comma-separated list of 1, 2 and 3, got {args.ranks!r}")
    plot_path = _plot_path(parser, args.plot) if args.plot is not None else None
    use_torch = args.torch
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError as error:
            parser.error(
                f"--torch: PyTorch is not importable ({error}); pip install -e '.[torch]', "
                "or run without --torch"
            )
    if args.dtype in ("float64", "complex128"):
        jax.config.update("jax_enable_x64", True)
    references = [r for r in REFERENCES if r != "torch" or use_torch]
    spatial = ", ".join(f"{r}-D" for r in ranks)
    print(f"auditing {args.n} configurations, {args.dtype}, seed {args.seed}, ranks {spatial}")
    print(f"jax {jax.__version__} on {jax.default_backend()}; {describe_fast_compile()}")
    print(header(references), flush=True)
    start = time.perf_counter()
    results = run(
        args.n,
        seed=args.seed,
        dtype=args.dtype,
        use_torch=use_torch,
        conv=conv,
        ranks=ranks,
        on_result=lambda i, r: print(format_row(i, r), flush=True),
    )
    print(summary(results))
    if plot_path is not None:
        plot(results, str(plot_path))
        print(f"wrote {plot_path}")
    print(f"{time.perf_counter() - start:.1f} s")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


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
    "format_row",
    "header",
    "main",
    "plot",
    "random_config",
    "run",
    "summary",
    "worst_errors",
]

if __name__ == "__main__":
    sys.exit(main())
