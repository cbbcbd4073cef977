"""Times jaxconv.conv2d against XLA's convolution (and PyTorch when installed).

    python benchmarks/bench_conv.py [--workloads A,B] [--layouts NCHW] [--json out.json]

For each workload and layout, in one process and interleaved (round-robin over the
implementations within each repetition, so drift hits them alike): forward, forward+backward
(gradients of x and w), dX alone and dW alone. Every implementation is first checked against
XLA's result; one that disagrees is not timed. Prints medians with min–max, GFLOP/s, the share
of a GEMM ceiling measured in the same run, and the time ratios jaxconv/lax and jaxconv/torch
(< 1: jaxconv is faster).

Each timed run follows `--warm` untimed runs of the same implementation: the runtimes share
the process, and a run timed straight after another runtime's pays for it (PyTorch's OpenMP
threads keep spinning after a call and take a core from XLA's pool: jaxconv's B NHWC forward
measured 28.6 ms back to back, 39.5 ms right after a PyTorch call).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv

# name: (x NCHW, w OIHW, config)
WORKLOADS = {
    "A": ((128, 1, 28, 28), (32, 1, 3, 3), dict()),
    "B": ((128, 32, 26, 26), (64, 32, 3, 3), dict()),
    "C": ((64, 64, 32, 32), (128, 64, 3, 3), dict(stride=2, padding="SAME")),
    "D": ((32, 64, 56, 56), (64, 64, 3, 3), dict(padding="SAME")),
    "E": ((32, 32, 32, 32), (32, 32, 3, 3), dict(dilation=2, padding="SAME")),
    "F": ((32, 64, 56, 56), (64, 1, 3, 3), dict(groups=64, padding="SAME")),
    # Layers of real networks (bench_networks.py): a ResNet bottleneck's 1×1, ResNet's 7×7
    # stride-2 stem, MobileNetV2's stride-2 depthwise 3×3, and a 5×5 with SAME padding.
    "G": ((64, 256, 14, 14), (64, 256, 1, 1), dict()),
    "H": ((32, 3, 112, 112), (64, 3, 7, 7), dict(stride=2, padding=3)),
    "I": ((32, 96, 56, 56), (96, 1, 3, 3), dict(stride=2, groups=96, padding=1)),
    "J": ((32, 32, 28, 28), (64, 32, 5, 5), dict(padding="SAME")),
}
PASSES = ("fwd", "fwd+bwd", "dX", "dW")
PASS_FLOPS = {"fwd": 1, "fwd+bwd": 3, "dX": 1, "dW": 1}


@dataclass
class Row:
    workload: str
    layout: str
    pass_: str
    impl: str
    median_ms: float
    min_ms: float
    max_ms: float
    gflops: float | None  # None: no rate (bench_gemms.py's whole passes)
    ceiling_pct: float | None


def timing_row(key: tuple[str, str, str, str], seconds: list[float], flops, ceiling) -> Row:
    """The Row of (workload, layout, pass, impl) from its timed runs; flops None: no rate."""
    median = statistics.median(seconds)
    gflops = None if flops is None else flops / median / 1e9
    pct = None if gflops is None else 100 * gflops / ceiling
    return Row(*key, 1e3 * median, 1e3 * min(seconds), 1e3 * max(seconds), gflops, pct)


def workload_operands(name: str, layout: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(x, w, config) of workload `name` in `layout` (NHWC: x (N, H, W, C), w HWIO), seeded."""
    x_shape, w_shape, cfg = WORKLOADS[name]
    if layout == "NHWC":
        x_shape = (x_shape[0], x_shape[2], x_shape[3], x_shape[1])
        w_shape = (w_shape[2], w_shape[3], w_shape[1], w_shape[0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    return x, rng.standard_normal(w_shape).astype(np.float32), cfg


def gemm_ceiling(size: int, repeats: int = 5) -> float:
    """Best GFLOP/s of a jitted f32 (size×size)·(size×size) `jnp.dot`."""
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = min(_time_once(lambda: dot(a, a)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _time_once(fn: Callable) -> float:
    start = time.perf_counter()
    out = fn()
    if hasattr(out, "block_until_ready") or isinstance(out, (tuple, list)):
        jax.block_until_ready(out)
    return time.perf_counter() - start


def time_interleaved(calls: dict[str, Callable], args: argparse.Namespace) -> dict[str, list]:
    """Seconds of `args.repeats` timed runs of each call, round-robin over the calls; each timed
    run follows `args.warm` untimed runs of the same call (see the module doc)."""
    for call in calls.values():
        for _ in range(2):  # compile and warm up
            _time_once(call)
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            for _ in range(args.warm):
                _time_once(call)
            times[name].append(_time_once(call))
    return times


def forward_flops(x_shape, w_shape, geom: jaxconv.ConvGeometry) -> int:
    """2·N·O·Ho·Wo·(C/groups)·kh·kw."""
    return x_shape[0] * geom.flops


def jax_programs(conv, x, w, cfg) -> dict[str, tuple[Callable, tuple]]:
    """(jitted function, its arguments) for each pass; jaxconv's dX/dW are its public hand
    rules."""
    z_shape = jax.eval_shape(lambda: conv(x, w, **cfg)).shape
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(z_shape), x.dtype)
    fwd = jax.jit(lambda x, w: conv(x, w, **cfg))

    @jax.jit
    def both(x, w):
        # Z is returned too: otherwise XLA drops the forward, which the backward never reads.
        z, vjp = jax.vjp(lambda x, w: conv(x, w, **cfg), x, w)
        return z, vjp(cot)

    if conv is jaxconv.conv2d:
        dx = jax.jit(lambda w: jaxconv.conv2d_grad_input(cot, w, x.shape, **cfg))
        dw = jax.jit(lambda x: jaxconv.conv2d_grad_kernel(x, cot, w.shape, **cfg))
    else:
        dx = jax.jit(lambda w: jax.vjp(lambda x: conv(x, w, **cfg), x)[1](cot)[0])
        dw = jax.jit(lambda x: jax.vjp(lambda w: conv(x, w, **cfg), w)[1](cot)[0])
    return {"fwd": (fwd, (x, w)), "fwd+bwd": (both, (x, w)), "dX": (dx, (w,)), "dW": (dw, (x,))}


def _jax_passes(conv, x, w, cfg) -> dict[str, Callable]:
    """A closure for each pass of `jax_programs`."""
    return {
        pass_: functools.partial(fn, *args)
        for pass_, (fn, args) in jax_programs(conv, x, w, cfg).items()
    }


def torch_passes(x_np, w_np, cfg, layout) -> dict[str, Callable] | None:
    """A closure for each pass of PyTorch's `F.conv2d` + autograd (and "_check": its forward in
    `layout`), or None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.from_numpy(x_np if layout == "NCHW" else x_np.transpose(0, 3, 1, 2).copy())
    w = torch.from_numpy(w_np if layout == "NCHW" else w_np.transpose(3, 2, 0, 1).copy())
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    (lo_h, hi_h), (lo_w, hi_w) = _geometry(x_np.shape, w_np.shape, cfg, layout).padding
    stride, dilation, groups = cfg.get("stride", 1), cfg.get("dilation", 1), cfg.get("groups", 1)
    symmetric = lo_h == hi_h and lo_w == hi_w

    def conv(x, w):
        if not symmetric:  # torch pads symmetrically; asymmetric SAME goes through F.pad
            x = F.pad(x, (lo_w, hi_w, lo_h, hi_h))
            return F.conv2d(x, w, stride=stride, dilation=dilation, groups=groups)
        return F.conv2d(x, w, stride=stride, padding=(lo_h, lo_w), dilation=dilation, groups=groups)

    with torch.no_grad():
        z = conv(x, w)
    cot = torch.from_numpy(np.random.default_rng(1).standard_normal(z.shape).astype(np.float32))
    if layout == "NHWC":
        cot = cot.contiguous(memory_format=torch.channels_last)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return conv(x, w)

    def both():
        return torch.autograd.grad(conv(xg, wg), (xg, wg), cot)

    def dx():
        return torch.autograd.grad(conv(xg, w), (xg,), cot)

    def dw():
        return torch.autograd.grad(conv(x, wg), (wg,), cot)

    passes = {"fwd": fwd, "fwd+bwd": both, "dX": dx, "dW": dw}
    passes["_check"] = lambda: np.asarray(
        fwd().permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else fwd()
    )
    return passes


def _geometry(x_shape, w_shape, cfg, layout) -> jaxconv.ConvGeometry:
    """jaxconv's own resolution of the workload (padding, output size, FLOPs)."""
    from jaxconv._src.geometry import conv_geometry

    return conv_geometry(
        "bench",
        x_shape,
        w_shape,
        stride=cfg.get("stride", 1),
        padding=cfg.get("padding", "VALID"),
        dilation=cfg.get("dilation", 1),
        groups=cfg.get("groups", 1),
        layout=layout,
    )


def report_ceiling(args: argparse.Namespace) -> float:
    """`gemm_ceiling(args.gemm_size)`, printed."""
    ceiling = gemm_ceiling(args.gemm_size)
    print(f"GEMM ceiling: {ceiling:.1f} GFLOP/s (f32 {args.gemm_size}³ jnp.dot)", flush=True)
    return ceiling


def workload_cases(args: argparse.Namespace):
    """(name, layout, x, w, config) for each requested workload and layout."""
    for name in args.workloads:
        for layout in args.layouts:
            yield name, layout, *workload_operands(name, layout)


def run_meta(args: argparse.Namespace, ceiling: float) -> dict:
    """The machine, the environment and the method of a run."""
    return {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "torch": _torch_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "device": str(jax.devices()[0]),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "gemm_ceiling_gflops": ceiling,
        "repeats": args.repeats,
        "warm": args.warm,
    }


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark; returns {"meta": ..., "rows": [...]}."""
    ceiling = report_ceiling(args)
    rows: list[Row] = []
    for name, layout, x_np, w_np, cfg in workload_cases(args):
        x, w = jnp.asarray(x_np), jnp.asarray(w_np)
        full = dict(cfg, layout=layout)
        flops = forward_flops(x.shape, w.shape, _geometry(x.shape, w.shape, cfg, layout))
        impls = {
            "jaxconv": _jax_passes(jaxconv.conv2d, x, w, full),
            "lax": _jax_passes(jaxconv.conv2d_xla, x, w, full),
        }
        if not args.no_torch:
            torch_calls = torch_passes(x_np, w_np, cfg, layout)
            if torch_calls is not None:
                impls["torch"] = torch_calls
        expected = np.asarray(impls["lax"]["fwd"]())
        for impl, passes in list(impls.items()):
            got = np.asarray(passes.pop("_check", passes["fwd"])())
            err = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
            if not err < 1e-4:
                print(f"  {name} {layout} {impl}: WRONG (rel err {err:.1e}); not timed")
                del impls[impl]
        for pass_ in args.passes:
            times = time_interleaved({impl: p[pass_] for impl, p in impls.items()}, args)
            for impl, ts in times.items():
                key = (name, layout, pass_, impl)
                rows.append(timing_row(key, ts, PASS_FLOPS[pass_] * flops, ceiling))
            _print_rows(
                [r for r in rows if (r.workload, r.layout, r.pass_) == (name, layout, pass_)]
            )
    meta = run_meta(args, ceiling)
    result = {"meta": meta, "rows": [asdict(r) for r in rows]}
    result["targets"] = targets(rows)
    print_targets(result["targets"])
    return result


def _torch_version() -> str | None:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return None


def _print_rows(rows: list[Row]) -> None:
    by_impl = {r.impl: r for r in rows}
    for r in rows:
        ratios = ""
        if r.impl == "jaxconv":
            for ref in ("lax", "torch"):
                if ref in by_impl:
                    ratios += f"  ×{ref} {r.median_ms / by_impl[ref].median_ms:5.2f}"
        print(
            f"{r.workload} {r.layout} {r.pass_:8s} {r.impl:8s} {r.median_ms:9.2f} ms "
            f"[{r.min_ms:8.2f}–{r.max_ms:8.2f}] {r.gflops:7.1f} GFLOP/s {r.ceiling_pct:5.1f}%"
            + ratios,
            flush=True,
        )


def targets(rows: list[Row]) -> list[dict]:
    """The issue's targets, each with its measured value and whether it is met."""
    table = {(r.workload, r.layout, r.pass_, r.impl): r for r in rows}
    out = []
    for (workload, layout, pass_, impl), r in sorted(table.items()):
        if impl != "jaxconv" or pass_ != "fwd+bwd":
            continue
        lax_row = table.get((workload, layout, pass_, "lax"))
        torch_row = table.get((workload, layout, pass_, "torch"))
        if lax_row:
            ratio = r.median_ms / lax_row.median_ms
            out.append(
                dict(
                    target=f"{workload} {layout} fwd+bwd ≤ 1.0× lax", value=ratio, met=ratio <= 1.0
                )
            )
            if workload == "F":
                speedup = lax_row.median_ms / r.median_ms
                out.append(
                    dict(
                        target=f"F {layout} ≥ 10× faster than lax", value=speedup, met=speedup >= 10
                    )
                )
        if torch_row and workload in "BCDE":
            ratio = r.median_ms / torch_row.median_ms
            out.append(
                dict(
                    target=f"{workload} {layout} fwd+bwd ≤ 1.1× torch",
                    value=ratio,
                    met=ratio <= 1.1,
                )
            )
        if workload in "BCD":
            out.append(
                dict(
                    target=f"{workload} {layout} fwd+bwd ≥ 65% of GEMM ceiling",
                    value=r.ceiling_pct,
                    met=r.ceiling_pct >= 65,
                )
            )
    return out


def print_targets(results: list[dict]) -> None:
    print("\nTargets:")
    for t in results:
        print(f"  {'MET    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['value']:.2f}")


def add_arguments(parser: argparse.ArgumentParser, workloads: str, passes: str) -> None:
    """The options bench_conv.py and bench_gemms.py share, with their defaults."""
    parser.add_argument("--workloads", default=workloads, help="e.g. A,B or ABD")
    parser.add_argument("--layouts", default="NCHW,NHWC")
    parser.add_argument("--passes", default=passes)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument(
        "--warm",
        type=int,
        default=1,
        help="untimed runs of the same implementation before each timed one (see module doc)",
    )
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    parser.add_argument("--json", help="also write the results to this file")


def split_lists(args: argparse.Namespace) -> argparse.Namespace:
    """The comma-separated options as lists (workloads: known names only)."""
    args.workloads = [w for w in args.workloads.replace(",", "") if w in WORKLOADS]
    args.layouts = args.layouts.split(",")
    args.passes = args.passes.split(",")
    return args


def write_json(result: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, workloads="".join(WORKLOADS), passes=",".join(PASSES))
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    args = split_lists(parser.parse_args(argv))
    if args.quick:
        args.repeats = 5
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
