"""Where each network's training-step time goes, by layer kind, for jaxconv, XLA's convolution
and PyTorch eager: the forward+backward of every distinct convolution of bench_networks.py's
networks, beside their whole training step.

    python benchmarks/bench_layers.py [--networks resnet18,mobilenetv2] [--batch-size 128]
        [--repeats 10] [--warm 1] [--steps 3] [--no-steps] [--no-torch] [--json out.json]
        [--quick]

`--batch` is short for `--batch-size` (bench_networks.py's default, 128); `--quick` is the
smoke test's run: the narrow networks of `build_network(name, quick=True)`, batch 8, 2
repeats and 2 steps, no warm runs.

The network's forward is traced once (`jax.eval_shape`) with a convolution that records its
operands' shapes, stride and groups; identical calls are one layer kind, named as
bench_networks.py's layer scopes (`3x3_64to64_s1_g1_32px`: kernel, channels in and out,
stride, groups, input positions a side), with its number of calls per step. Each kind's
forward+backward is built as the step uses the convolution: `bench_networks.jaxconv_conv`
and `xla_conv` (NHWC, HWIO, padding k // 2, float32) jit-compiled, returning the output and
its VJP for x and w, the cotangent an argument (`bench_conv.jax_programs`); and `F.conv2d` on
channels_last tensors (`bench_networks.torch_ops`), then `torch.autograd.grad` of x and w for
the same cotangent. jaxconv's and PyTorch's output and gradients are first checked against
XLA's (relative error ≤ 1e-4 of each array's largest value): an implementation that
disagrees is reported and not timed. The three are timed interleaved
(`bench_conv.time_interleaved`: `--repeats` timed runs each, every one after `--warm` untimed
runs of the same implementation).

Per kind: the median ms per call and per step (median × count), and jaxconv's time over XLA's
and over PyTorch's (< 1: jaxconv is faster); the total sums the kinds. These are standalone
forward+backward passes of one layer, an estimate of that layer's share of the step, not a
measurement inside it: in the step, XLA fuses the batch norms, activations and residual adds
into and around the convolutions, and the layers share caches. Unless `--no-steps`, the whole
Adam step of each network is timed too, by bench_networks.py's machinery (its first-step loss
check, then `--steps` interleaved steps), and "rest of the step" is its median less the
convolutions' total: batch norm, activations, pooling, head, loss and optimizer, plus whatever
the standalone figures miss or count twice (it can be negative).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import bench_networks
import jax
import jax.numpy as jnp
import numpy as np
from bench_conv import jax_programs, run_meta, time_interleaved, write_json

IMPLS = bench_networks.IMPLS  # ("jaxconv", "lax", "torch"): lax is the reference
CHECK_RTOL = 1e-4
REST = "rest of the step (not convolutions)"
Call = tuple[tuple[int, ...], tuple[int, ...], int, int]  # (x shape, w shape, stride, groups)


def record_convs(net: bench_networks.Network, batch_size: int) -> list[tuple[Call, str]]:
    """Every convolution the network's forward makes on a batch of 32×32 images, in order,
    with its kind's name (`bench_networks.layer_scope`'s, without "layer_")."""
    calls: list[tuple[Call, str]] = []

    def recording_conv(x: jax.Array, w: jax.Array, stride: int, groups: int) -> jax.Array:
        name = bench_networks.layer_scope(x, w, stride, groups).removeprefix("layer_")
        calls.append(((tuple(x.shape), tuple(w.shape), stride, groups), name))
        return bench_networks.xla_conv(x, w, stride, groups)

    ops = bench_networks.jax_ops(recording_conv)
    images = jax.ShapeDtypeStruct((batch_size, 32, 32, 3), jnp.float32)
    jax.eval_shape(lambda p, x: net.apply(net.spec, p, x, ops), net.params, images)
    return calls


def _leaves(run: Callable) -> list[np.ndarray]:
    """The arrays `run()` returns, as NumPy."""
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(run())]


def torch_fwd_bwd(
    x_np: np.ndarray, w_np: np.ndarray, cot_np: np.ndarray, stride: int, groups: int
) -> tuple[Callable, Callable] | None:
    """(a closure running `F.conv2d` and `torch.autograd.grad` of x and w for the cotangent,
    a closure returning its (z, dx, dw) as NumPy NHWC and HWIO), or None without PyTorch.
    The operands are NHWC and HWIO; PyTorch gets them as bench_networks.torch_ops takes them
    (NCHW in channels_last memory, kernels OIHW)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    conv = bench_networks.torch_ops().conv

    def activation(a: np.ndarray):
        t = torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
        return t.contiguous(memory_format=torch.channels_last)

    x, cot = activation(x_np).requires_grad_(True), activation(cot_np)
    w = bench_networks.torch_params(w_np)

    def run() -> tuple:
        z = conv(x, w, stride, groups)
        return (z, *torch.autograd.grad(z, (x, w), cot))

    def result() -> list[np.ndarray]:
        z, dx, dw = (t.detach().numpy() for t in run())
        return [z.transpose(0, 2, 3, 1), dx.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0)]

    return run, result


def measure_kind(call: Call, name: str, args: argparse.Namespace) -> dict:
    """One layer kind's forward+backward with each implementation: checked against XLA's,
    then timed interleaved. Returns {"rel_err", "ok": {impl: ...}, "ms": {impl: median, min,
    max of ms per call}} (implementations that disagree with XLA's are not in "ms")."""
    x_shape, w_shape, stride, groups = call
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(x_shape).astype(np.float32)
    w_np = rng.standard_normal(w_shape).astype(np.float32)
    x, w = jnp.asarray(x_np), jnp.asarray(w_np)
    cfg = {"stride": stride, "groups": groups}
    runs: dict[str, Callable] = {}
    results: dict[str, Callable[[], list[np.ndarray]]] = {}
    for impl, conv in bench_networks.JAX_CONVS.items():
        # cot: the same seeded cotangent for each implementation, PyTorch's too.
        both, (_, _, cot) = jax_programs(conv, x, w, cfg)["fwd+bwd"]
        # On the device once: a NumPy argument would be copied in on every call.
        runs[impl] = functools.partial(both, x, w, jnp.asarray(cot))
        results[impl] = functools.partial(_leaves, runs[impl])
    if "torch" in args.impls:
        torch_calls = torch_fwd_bwd(x_np, w_np, cot, stride, groups)
        if torch_calls is not None:
            runs["torch"], results["torch"] = torch_calls
    expected = results["lax"]()
    rel_err = {"lax": 0.0}
    for impl in (i for i in runs if i != "lax"):
        rel_err[impl] = max(bench_networks.relative_errors(results[impl](), expected))
    ok = {impl: err <= CHECK_RTOL for impl, err in rel_err.items()}
    for impl in (i for i, good in ok.items() if not good):
        print(f"  {name} {impl}: WRONG (rel err {rel_err[impl]:.1e}); not timed", flush=True)
        del runs[impl]
    times = time_interleaved(runs, args)
    ms = {impl: bench_networks.summary([1e3 * t for t in ts]) for impl, ts in times.items()}
    return {"rel_err": rel_err, "ok": ok, "ms": ms}


def measure_steps(net: bench_networks.Network, args: argparse.Namespace) -> dict:
    """The whole training step of each implementation, by bench_networks.py's machinery:
    its first-step loss check, then `--steps` steps interleaved. Returns {"first_step",
    "steps_ms": {impl: median, min, max of ms per step}}."""
    images, labels = bench_networks.batch(args.batch_size, 32)
    runners: dict[str, Callable] = {}
    for impl, conv in bench_networks.JAX_CONVS.items():
        step = bench_networks.jax_train_step(net, conv)  # compiled by its first run
        runners[impl] = bench_networks.jax_runner(net, step, images, labels)
    if "torch" in args.impls:
        torch_step = bench_networks.torch_step(net, images, labels)
        if torch_step is not None:
            runners["torch"] = torch_step
    first = bench_networks.first_losses(runners)
    timed = {impl: run for impl, run in runners.items() if first["ok"][impl]}
    times = bench_networks.time_steps(timed, args.steps, args.warm)
    steps_ms = {impl: bench_networks.summary([1e3 * t for t in ts]) for impl, ts in times.items()}
    return {"first_step": first, "steps_ms": steps_ms}


def _ratios(ms: dict[str, float | None]) -> dict[str, float | None]:
    """jaxconv's time over lax's and over torch's, where both were measured."""
    ours, out = ms.get("jaxconv"), dict[str, float | None]()
    for ref in (r for r in ("lax", "torch") if r in ms):
        theirs = ms[ref]
        out[ref] = None if ours is None or theirs is None else ours / theirs
    return out


def measure_network(net: bench_networks.Network, args: argparse.Namespace) -> dict:
    """The layer kinds of one network, each measured (sorted by jaxconv's ms per step, largest
    first), their totals per step and, unless --no-steps, the whole step and its rest."""
    calls = record_convs(net, args.batch_size)
    kinds = []
    for (call, name), count in Counter(calls).items():
        x_shape, w_shape, stride, groups = call
        measured = measure_kind(call, name, args)
        per_step = {impl: count * s["median"] for impl, s in measured["ms"].items()}
        kinds.append(
            {
                "kind": name,
                "x_shape": x_shape,
                "w_shape": w_shape,
                "stride": stride,
                "groups": groups,
                "count": count,
                **measured,
                "ms_per_step": per_step,
                "ratio": _ratios(per_step),
            }
        )
    kinds.sort(key=lambda k: -k["ms_per_step"].get("jaxconv", 0.0))
    impls = [i for i in IMPLS if any(i in k["ok"] for k in kinds)]
    # An implementation not timed on every kind (it disagreed on one) has no total.
    total = {
        impl: sum(k["ms_per_step"][impl] for k in kinds)
        if all(impl in k["ms"] for k in kinds)
        else None
        for impl in impls
    }
    result: dict[str, Any] = {
        "conv_calls": len(calls),
        "kinds": kinds,
        "total_ms_per_step": total,
        "total_ratio": _ratios(total),
    }
    if not args.no_steps:
        result.update(measure_steps(net, args))
        result["rest_ms"] = {
            impl: s["median"] - total[impl]
            for impl, s in result["steps_ms"].items()
            if total.get(impl) is not None
        }
    return result


def _cells(impls: list[str], call: dict, step: dict) -> str:
    """Each implementation's ms per call and per step (blank where there is none)."""
    out = ""
    for impl in impls:
        c, s = call.get(impl), step.get(impl)
        out += f"  {'' if c is None else f'{c:9.2f}':>9s} {'' if s is None else f'{s:9.2f}':>9s}"
    return out


def _ratio_cells(refs: list[str], ratio: dict) -> str:
    """jaxconv's ratio to each of `refs` (blank where there is none)."""
    return "".join(f"  {'' if ratio.get(r) is None else f'{ratio[r]:6.2f}':>6s}" for r in refs)


def print_network(name: str, r: dict, batch_size: int) -> None:
    """The network's table: a row per layer kind, the totals, the step and its rest."""
    kinds = r["kinds"]
    impls = [i for i in IMPLS if i in r["total_ms_per_step"] or i in r.get("steps_ms", {})]
    refs = [ref for ref in ("lax", "torch") if ref in impls]
    print(
        f"\n{name}, batch {batch_size}: {r['conv_calls']} convolutions of {len(kinds)} kinds;"
        " standalone fwd+bwd, median ms per call and per step (× count);"
        " ×lax, ×torch: jaxconv's time over theirs"
    )
    heads = "".join(f"  {impl:^19s}" for impl in impls)
    ratio_heads = "".join(f"  {'×' + ref:>6s}" for ref in refs)
    print(f"  {'':36s} {'':5s}" + heads + ratio_heads)
    units = f"  {'ms/call':>9s} {'ms/step':>9s}" * len(impls)
    print(f"  {'layer kind':36s} {'count':>5s}" + units)
    for k in kinds:
        call = {impl: s["median"] for impl, s in k["ms"].items()}
        cells = _cells(impls, call, k["ms_per_step"])
        print(f"  {k['kind']:36s} {k['count']:5d}" + cells + _ratio_cells(refs, k["ratio"]))
    cells = _cells(impls, {}, r["total_ms_per_step"])
    print(
        f"  {'total (Σ over kinds)':36s} {r['conv_calls']:5d}"
        + cells
        + _ratio_cells(refs, r["total_ratio"])
    )
    if "steps_ms" in r:
        steps = {impl: s["median"] for impl, s in r["steps_ms"].items()}
        print(
            f"  {'training step':36s} {'':5s}"
            + _cells(impls, {}, steps)
            + _ratio_cells(refs, _ratios(steps))
        )
        print(f"  {REST:36s} {'':5s}" + _cells(impls, {}, r["rest_ms"]), flush=True)


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark; returns {"meta", "networks": {name: measure_network's}}."""
    result: dict = {"networks": {}}
    for name in args.networks:
        net = bench_networks.build_network(name, args.quick)
        result["networks"][name] = measure_network(net, args)
        print_network(name, result["networks"][name], args.batch_size)
    result["meta"] = run_meta(args, ceiling=0.0)
    del result["meta"]["gemm_ceiling_gflops"]  # no GEMM ceiling measured here
    result["meta"].update(batch_size=args.batch_size, steps=None if args.no_steps else args.steps)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(bench_networks.NETWORKS))
    parser.add_argument("--batch-size", "--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per layer kind")
    parser.add_argument(
        "--warm", type=int, default=1, help="untimed runs before each timed one (module doc)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed training steps each")
    parser.add_argument("--no-steps", action="store_true", help="skip the whole steps")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: narrow networks, batch 8, 2 repeats and 2 steps, no warm runs",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    args.networks = args.networks.split(",")
    args.impls = [i for i in IMPLS if not (args.no_torch and i == "torch")]
    if args.quick:
        args.batch_size, args.repeats, args.steps, args.warm = 8, 2, 2, 0
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
