"""Times jaxconv against XLA's convolution (and PyTorch when installed), every rank.

    python benchmarks/bench_conv.py [--workloads A,B] [--layouts NCHW] [--json out.json]

Workloads A–J are 2-D convolutions; K–P are the other ranks and dtypes: 1-D (K, L), a 1-D
transposed convolution (M), 3-D (N) and 3-D transposed (O), and a complex64 2-D convolution
(P). `--layouts NCHW,NHWC` names channels first and last; for 1-D and 3-D workloads they
are NCW/NWC and NCDHW/NDHWC. For each workload and layout, in one process and interleaved
(round-robin over the implementations within each repetition, so drift hits them alike):
forward, forward+backward (gradients of x and w), dX alone and dW alone. Every
implementation is first checked against XLA's result; one that disagrees is not timed. Prints
medians with min–max, GFLOP/s, the share of a GEMM ceiling measured in the same run, and the
time ratios jaxconv/lax and jaxconv/torch (< 1: jaxconv is faster); for N and O also the
compile time (trace, lower and XLA compile of a fresh forward+backward, caches cleared) of
jaxconv against XLA's.

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
from jaxconv._src.geometry import LAYOUTS, conv_geometry, resolve_conv_transpose

# name: (x channels-first, w channels-first, config[, kind[, dtype]]): kind "conv" (w is
# (O, C//groups, *k)) or "transpose" (PyTorch's conv_transpose, w (C_in, C_out//groups, *k));
# dtype "float32" unless given.
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
    # Every rank: a sequence model's depthwise causal short conv, a 1-D conv, an upsampling
    # vocoder layer, a 3-D conv and transposed conv, and a complex conv of a physics model.
    "K": ((8, 768, 2048), (768, 1, 4), dict(groups=768, padding=((3, 0),))),
    "L": ((16, 128, 2048), (128, 128, 9), dict(padding="SAME")),
    "M": ((16, 128, 1024), (128, 64, 8), dict(stride=4), "transpose"),
    "N": ((8, 32, 16, 32, 32), (32, 32, 3, 3, 3), dict(padding="SAME")),
    "O": ((4, 32, 16, 16, 16), (32, 16, 4, 4, 4), dict(stride=2), "transpose"),
    "P": ((32, 32, 32, 32), (32, 32, 3, 3), dict(padding="SAME"), "conv", "complex64"),
}
COMPILE_WORKLOADS = "NO"  # their forward+backward compile time is measured too
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


def workload_spec(name: str) -> tuple[tuple, tuple, dict, str, str]:
    """(x shape, w shape, config, kind, dtype) of workload `name`, channels-first."""
    x_shape, w_shape, cfg, *rest = WORKLOADS[name]
    kind = rest[0] if rest else "conv"
    dtype = rest[1] if len(rest) > 1 else "float32"
    return x_shape, w_shape, cfg, kind, dtype


def layout_of(name: str, layout: str) -> str:
    """The layout of workload `name` that `layout` ("NCHW": channels first, "NHWC": last)
    names, for the workload's rank: e.g. "NWC" for a 1-D one."""
    rank = len(WORKLOADS[name][0]) - 2
    return LAYOUTS[rank][0 if layout[1] == "C" else 1]


def workload_operands(name: str, layout: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(x, w, config) of workload `name` in `layout` (channels-last: x (N, *spatial, C), w
    (*k, C//groups, O)), seeded."""
    x_shape, w_shape, cfg, _, dtype = workload_spec(name)
    if layout[1] != "C":
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    rng = np.random.default_rng(0)
    x = _normal(rng, x_shape, dtype)
    return x, _normal(rng, w_shape, dtype), cfg


def _normal(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Standard normal values of `shape` in `dtype` (complex: real and imaginary parts)."""
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def xla_conv_transpose(x, w, *, stride=1, padding=0, dilation=1, groups=1, layout):
    """PyTorch's conv_transpose by XLA: `lax.conv_general_dilated` of the stride-dilated input
    with the flipped kernel regrouped to (C_out, C_in//groups, *k), padding d·(k−1) − p."""
    rank = len(layout) - 2
    per_axis = lambda v: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa: E731
    first = layout[1] == "C"
    wt = w if first else jnp.moveaxis(w, (-1, -2), (0, 1))  # (C_in, C_out//groups, *k)
    c_in, c_out_g, *k = wt.shape
    rhs = wt.reshape(groups, c_in // groups, c_out_g, *k).swapaxes(1, 2)
    rhs = jnp.flip(rhs.reshape(groups * c_out_g, c_in // groups, *k), tuple(range(2, rank + 2)))
    d, p = per_axis(dilation), per_axis(padding)
    pads = [(dd * (kk - 1) - pp, dd * (kk - 1) - pp) for dd, kk, pp in zip(d, k, p)]
    letters = layout[2:] if first else layout[1:-1]
    return jax.lax.conv_general_dilated(
        x,
        rhs,
        (1,) * rank,
        pads,
        lhs_dilation=per_axis(stride),
        rhs_dilation=d,
        dimension_numbers=(layout, "OI" + letters, layout),
        feature_group_count=groups,
    )


def implementations(name: str) -> tuple[Callable, Callable]:
    """(jaxconv's, XLA's) function of workload `name`, each f(x, w, **config, layout=...)."""
    x_shape, _, _, kind, _ = workload_spec(name)
    rank = len(x_shape) - 2
    if kind == "transpose":
        ours = {1: jaxconv.conv_transpose1d, 2: jaxconv.conv_transpose2d}.get(
            rank, jaxconv.conv_transpose3d
        )
        return ours, xla_conv_transpose
    if rank == 2:  # the 2-D programs as they always were: conv2d and its gradient functions
        return jaxconv.conv2d, jaxconv.conv2d_xla
    return jaxconv.conv, jaxconv.conv_xla


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
    """2·N·O·∏out·(C/groups)·∏k (a transposed convolution: those of the convolution it is
    the input gradient of)."""
    return geom.batch * geom.flops


def jax_programs(conv, x, w, cfg) -> dict[str, tuple[Callable, tuple]]:
    """(jitted function, its arguments) for each pass; jaxconv's dX/dW are its public hand
    rules. The cotangent is an argument, not a constant: XLA would otherwise fold its pads and
    transposes into the program at compile time, and neither the timings nor the compile times
    would be those of a training step."""
    z_shape = jax.eval_shape(lambda: conv(x, w, **cfg)).shape
    cot = _normal(np.random.default_rng(1), z_shape, x.dtype)
    fwd = jax.jit(lambda x, w: conv(x, w, **cfg))

    @jax.jit
    def both(x, w, cot):
        # Z is returned too: otherwise XLA drops the forward, which the backward never reads.
        z, vjp = jax.vjp(lambda x, w: conv(x, w, **cfg), x, w)
        return z, vjp(cot)

    if conv is jaxconv.conv2d:
        # Bound now, not when first traced: compare_programs.py swaps `jaxconv` for another
        # version of it while it builds that version's programs.
        grad_input, grad_kernel = jaxconv.conv2d_grad_input, jaxconv.conv2d_grad_kernel
        dx = jax.jit(lambda w, cot: grad_input(cot, w, x.shape, **cfg))
        dw = jax.jit(lambda x, cot: grad_kernel(x, cot, w.shape, **cfg))
    else:
        dx = jax.jit(lambda w, cot: jax.vjp(lambda x: conv(x, w, **cfg), x)[1](cot)[0])
        dw = jax.jit(lambda x, cot: jax.vjp(lambda w: conv(x, w, **cfg), w)[1](cot)[0])
    return {
        "fwd": (fwd, (x, w)),
        "fwd+bwd": (both, (x, w, cot)),
        "dX": (dx, (w, cot)),
        "dW": (dw, (x, cot)),
    }


def _jax_passes(conv, x, w, cfg) -> dict[str, Callable]:
    """A closure for each pass of `jax_programs`."""
    return {
        pass_: functools.partial(fn, *args)
        for pass_, (fn, args) in jax_programs(conv, x, w, cfg).items()
    }


def torch_passes(x_np, w_np, cfg, layout, kind="conv") -> dict[str, Callable] | None:
    """A closure for each pass of PyTorch's `F.conv{1,2,3}d` (or `F.conv_transpose{1,2,3}d`)
    + autograd (and "_check": its forward in `layout`), or None without PyTorch or for a
    complex workload. Channels-last operands are in PyTorch's channels-last memory format
    (2-D and 3-D); in 1-D, PyTorch has none and gets them channels-first."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if np.iscomplexobj(x_np):
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    rank, first = len(layout) - 2, layout[1] == "C"
    to_first = (0, rank + 1, *range(1, rank + 1))
    x = torch.from_numpy(x_np if first else x_np.transpose(to_first).copy())
    w = torch.from_numpy(w_np if first else w_np.transpose(rank + 1, rank, *range(rank)).copy())
    memory = {2: torch.channels_last, 3: torch.channels_last_3d}.get(rank)
    if not first and memory is not None:
        x, w = x.contiguous(memory_format=memory), w.contiguous(memory_format=memory)
    stride, dilation, groups = cfg.get("stride", 1), cfg.get("dilation", 1), cfg.get("groups", 1)
    if kind == "transpose":
        transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]

        def conv(x, w):
            return transpose(
                x, w, stride=stride, padding=cfg.get("padding", 0), groups=groups, dilation=dilation
            )

    else:
        convolve = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        pads = _geometry(x_np.shape, w_np.shape, cfg, layout).padding
        symmetric = all(lo == hi for lo, hi in pads)

        def conv(x, w):
            if not symmetric:  # torch pads symmetrically; asymmetric SAME goes through F.pad
                x = F.pad(x, [side for lo_hi in reversed(pads) for side in lo_hi])
                return convolve(x, w, stride=stride, dilation=dilation, groups=groups)
            padding = tuple(lo for lo, _ in pads)
            return convolve(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)

    with torch.no_grad():
        z = conv(x, w)
    cot = torch.from_numpy(np.random.default_rng(1).standard_normal(z.shape).astype(np.float32))
    if not first and memory is not None:
        cot = cot.contiguous(memory_format=memory)
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
    back = (0, *range(2, rank + 2), 1)
    passes["_check"] = lambda: np.asarray(fwd().permute(*back).contiguous() if not first else fwd())
    return passes


def _geometry(x_shape, w_shape, cfg, layout, kind="conv") -> jaxconv.ConvGeometry:
    """jaxconv's own resolution of the workload (padding, output size, FLOPs); a transposed
    convolution's is that of the convolution it is the input gradient of."""
    config = dict(
        stride=cfg.get("stride", 1),
        dilation=cfg.get("dilation", 1),
        groups=cfg.get("groups", 1),
        layout=layout,
    )
    if kind == "transpose":
        x, w = (jax.ShapeDtypeStruct(s, jnp.float32) for s in (x_shape, w_shape))
        return resolve_conv_transpose(
            "bench",
            x,
            w,
            None,
            padding=cfg.get("padding", 0),
            output_padding=cfg.get("output_padding", 0),
            padding_mode="zeros",
            rank=len(layout) - 2,
            **config,
        )
    return conv_geometry(
        "bench", x_shape, w_shape, padding=cfg.get("padding", "VALID"), rank=None, **config
    )


def report_ceiling(args: argparse.Namespace) -> float:
    """`gemm_ceiling(args.gemm_size)`, printed."""
    ceiling = gemm_ceiling(args.gemm_size)
    print(f"GEMM ceiling: {ceiling:.1f} GFLOP/s (f32 {args.gemm_size}³ jnp.dot)", flush=True)
    return ceiling


def workload_cases(args: argparse.Namespace):
    """(name, layout, x, w, config) for each requested workload and layout (the layout of the
    workload's rank)."""
    for name in args.workloads:
        for layout in dict.fromkeys(layout_of(name, given) for given in args.layouts):
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


def compile_stats(make_step: Callable[[], Callable], args: tuple, repeats: int) -> tuple:
    """Trace, lower and XLA compile of fresh steps (`make_step()`, every cache cleared first),
    `repeats` times.

    Returns:
      ({"trace_s", "lower_s", "compile_s", "total_s": [wall seconds per repeat],
      "total_cpu_s": [this process's CPU seconds], "temp_bytes", "hlo_ops", "fusions"} of the
      last program, the last compiled program).
    """
    keys = ("trace_s", "lower_s", "compile_s", "total_s", "total_cpu_s")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(repeats):
        jax.clear_caches()
        step = make_step()
        cpu, start = time.process_time(), time.perf_counter()
        traced = step.trace(*args)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
        times["trace_s"].append(traced_at - start)
        times["lower_s"].append(lowered_at - traced_at)
        times["compile_s"].append(done - lowered_at)
        times["total_s"].append(done - start)
        times["total_cpu_s"].append(time.process_time() - cpu)
    text = compiled.as_text()
    stats = {
        **times,
        "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
        "hlo_ops": hlo_ops(text),
        "fusions": text.count(" fusion("),
    }
    return stats, compiled


def hlo_ops(text: str) -> int:
    """Instructions of an optimised HLO module's text: the lines that assign a value."""
    return sum(
        1 for line in text.splitlines() if " = " in line and not line.startswith("HloModule")
    )


def _compile_times(name, layout, conv, lax_conv, x, w, cfg, repeats) -> dict[str, dict]:
    """compile_stats of a fresh forward+backward of jaxconv's and of XLA's convolution."""
    out = {}
    for impl, fn in (("jaxconv", conv), ("lax", lax_conv)):

        def make(fn=fn):
            return jax_programs(fn, x, w, cfg)["fwd+bwd"][0]

        args = jax_programs(fn, x, w, cfg)["fwd+bwd"][1]
        out[impl], _ = compile_stats(make, args, repeats)
        stats = out[impl]
        print(
            f"{name} {layout} fwd+bwd compile  {impl:8s} {statistics.median(stats['total_s']):7.2f}"
            f" s  ({stats['hlo_ops']} HLO instructions, {stats['fusions']} fusions)",
            flush=True,
        )
    return out


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark; returns {"meta": ..., "rows": [...], "compile": ...}."""
    ceiling = report_ceiling(args)
    rows: list[Row] = []
    compiles: dict[str, dict] = {}
    for name, layout, x_np, w_np, cfg in workload_cases(args):
        x, w = jnp.asarray(x_np), jnp.asarray(w_np)
        kind = workload_spec(name)[3]
        full = dict(cfg, layout=layout)
        geom = _geometry(x.shape, w.shape, cfg, layout, kind)
        flops = forward_flops(x.shape, w.shape, geom)
        ours, xla = implementations(name)
        impls = {"jaxconv": _jax_passes(ours, x, w, full), "lax": _jax_passes(xla, x, w, full)}
        if not args.no_torch:
            torch_calls = torch_passes(x_np, w_np, cfg, layout, kind)
            if torch_calls is not None:
                impls["torch"] = torch_calls
        expected = np.asarray(impls["lax"]["fwd"]())
        for impl, passes in list(impls.items()):
            got = np.asarray(passes.pop("_check", passes["fwd"])())
            err = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
            if not err < 1e-4:
                print(f"  {name} {layout} {impl}: WRONG (rel err {err:.1e}); not timed")
                del impls[impl]
        if name in args.compile_workloads and "fwd+bwd" in args.passes:
            compiles[f"{name} {layout}"] = _compile_times(
                name, layout, ours, xla, x, w, full, args.compiles
            )
        for pass_ in args.passes:
            times = time_interleaved({impl: p[pass_] for impl, p in impls.items()}, args)
            for impl, ts in times.items():
                key = (name, layout, pass_, impl)
                rows.append(timing_row(key, ts, PASS_FLOPS[pass_] * flops, ceiling))
            _print_rows(
                [r for r in rows if (r.workload, r.layout, r.pass_) == (name, layout, pass_)]
            )
    meta = run_meta(args, ceiling)
    result = {"meta": meta, "rows": [asdict(r) for r in rows], "compile": compiles}
    result["targets"] = targets(rows, compiles)
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


def targets(rows: list[Row], compiles: dict[str, dict] | None = None) -> list[dict]:
    """The issues' targets, each with its measured value and whether it is met."""
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
        if torch_row and workload in "KM":
            ratio = r.median_ms / torch_row.median_ms
            out.append(
                dict(
                    target=f"{workload} {layout} fwd+bwd ≤ 1.0× torch",
                    value=ratio,
                    met=ratio <= 1.0,
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
    for key, stats in (compiles or {}).items():
        ratio = statistics.median(stats["jaxconv"]["total_s"]) / statistics.median(
            stats["lax"]["total_s"]
        )
        out.append(dict(target=f"{key} fwd+bwd compile ≤ 2.0× lax", value=ratio, met=ratio <= 2.0))
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
    parser.add_argument(
        "--compiles", type=int, default=1, help="fresh compiles per compile-time measurement"
    )
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
    parser.add_argument(
        "--compile-workloads",
        default=COMPILE_WORKLOADS,
        help="workloads whose forward+backward compile time is measured too",
    )
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
