"""How much of each jaxconv pass its GEMMs take, against XLA's and PyTorch's whole pass.

    python benchmarks/bench_gemms.py [--workloads B,D] [--layouts NHWC] [--passes fwd,dW]

For each workload, layout and pass, every `dot_general` of jaxconv's compiled program (found
in its jaxpr, with the same shapes, dimension numbers, precision and the trip count of the
loop it sits in) is run alone on random operands of those shapes: "GEMMs alone". It is timed
in one process, interleaved with jaxconv's whole pass, XLA's (`lax.conv_general_dilated` +
autodiff) and PyTorch's, as `bench_conv.py` times them.

"GEMMs alone" is a floor for jaxconv on this XLA: the transforms, windows and sums around the
GEMMs only add to it. Where its ratio to a reference's whole pass (×lax, ×torch) is above a
target, no rearrangement of the work around those GEMMs can meet that target.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from bench_conv import (
    Row,
    add_arguments,
    jax_programs,
    report_ceiling,
    run_meta,
    split_lists,
    time_interleaved,
    timing_row,
    torch_passes,
    workload_cases,
    write_json,
)

import jaxconv


@dataclass(frozen=True)
class Dot:
    """One `dot_general` of a program and how many times it runs (its loops' trip counts)."""

    eqn: jex.JaxprEqn
    times: int

    @property
    def flops(self) -> int:
        """2 · (contracted size) · (output size) · times."""
        (lhs_contracting, _), _ = self.eqn.params["dimension_numbers"]
        lhs = self.eqn.invars[0].aval.shape
        contracted = int(np.prod([lhs[d] for d in lhs_contracting]))
        return 2 * contracted * int(np.prod(self.eqn.outvars[0].aval.shape)) * self.times


def _platform_branch(eqn: jex.JaxprEqn, platform: str) -> jex.ClosedJaxpr:
    """The branch of a `lax.platform_dependent` cond that `platform` lowers."""
    platforms = eqn.params["branches_platforms"]
    explicit = [i for i, names in enumerate(platforms) if names and platform in names]
    index = explicit[0] if explicit else platforms.index(None)
    return eqn.params["branches"][index]


def program_dots(jaxpr: jex.Jaxpr, times: int = 1) -> Iterator[Dot]:
    """Every `dot_general` in `jaxpr` and in the jaxprs nested in its equations (jit, scan,
    custom_vjp, ...), a scan's body counted `length` times; of a `lax.platform_dependent`
    choice (jaxconv's plan per platform), the branch of the default backend only."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield Dot(eqn, times)
        if eqn.primitive.name == "cond" and eqn.params.get("branches_platforms"):
            branch = _platform_branch(eqn, jax.default_backend())
            yield from program_dots(branch.jaxpr, times)
            continue
        inner = times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
        if eqn.primitive.name == "while":
            raise NotImplementedError("a while loop's trip count is not in its jaxpr")
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jex.ClosedJaxpr):
                    yield from program_dots(sub.jaxpr, inner)
                elif isinstance(sub, jex.Jaxpr):
                    yield from program_dots(sub, inner)


def gemms_alone(dots: list[Dot], seed: int = 0) -> Callable:
    """A closure running `dots` alone: each with its own parameters on random operands of its
    shapes, those that run T > 1 times in a scan of length T over T different operands (as in
    jaxconv's loops over chunks of images)."""
    by_times: dict[int, list[Dot]] = {}
    for dot in dots:
        by_times.setdefault(dot.times, []).append(dot)
    key = jax.random.PRNGKey(seed)
    operands = {}
    for times, group in by_times.items():
        ops = []
        for dot in group:
            pair = []
            for var in dot.eqn.invars:
                key, sub = jax.random.split(key)
                shape = var.aval.shape if times == 1 else (times, *var.aval.shape)
                pair.append(jax.random.normal(sub, shape, var.aval.dtype))
            ops.append(tuple(pair))
        operands[times] = ops

    def run_group(group, ops):
        return [dot.eqn.primitive.bind(*pair, **dot.eqn.params) for dot, pair in zip(group, ops)]

    @jax.jit
    def run(operands):
        outs = []
        for times, group in by_times.items():
            if times == 1:
                outs.append(run_group(group, operands[times]))
                continue
            # The carry is each pass's products, not a stack of them all: jaxconv consumes
            # its products in the loop, and a stack would add a write of every one.
            zeros = [
                jnp.zeros(d.eqn.outvars[0].aval.shape, d.eqn.outvars[0].aval.dtype) for d in group
            ]
            last, _ = jax.lax.scan(
                lambda _, ops, group=group: (run_group(group, ops), None),
                zeros,
                operands[times],
            )
            outs.append(last)
        return outs

    return lambda: run(operands)


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark; returns {"meta": ..., "rows": [...]}."""
    ceiling = report_ceiling(args)
    rows: list[Row] = []
    for name, layout, x_np, w_np, cfg in workload_cases(args):
        x, w = jnp.asarray(x_np), jnp.asarray(w_np)
        full = dict(cfg, layout=layout)
        ours = jax_programs(jaxconv.conv2d, x, w, full)
        xla = jax_programs(jaxconv.conv2d_xla, x, w, full)
        torch_calls = None if args.no_torch else torch_passes(x_np, w_np, cfg, layout)
        for pass_ in args.passes:
            fn, fn_args = ours[pass_]
            dots = list(program_dots(jax.make_jaxpr(fn)(*fn_args).jaxpr))
            calls = {
                "jaxconv": lambda fn=fn, a=fn_args: fn(*a),
                "GEMMs alone": gemms_alone(dots),
                "lax": lambda p=xla[pass_]: p[0](*p[1]),
            }
            if torch_calls is not None:
                calls["torch"] = torch_calls[pass_]
            times = time_interleaved(calls, args)
            dot_flops = sum(d.flops for d in dots)
            for impl, ts in times.items():
                flops = dot_flops if impl == "GEMMs alone" else None
                rows.append(timing_row((name, layout, pass_, impl), ts, flops, ceiling))
            _print_rows(
                [r for r in rows if (r.workload, r.layout, r.pass_) == (name, layout, pass_)],
                len(dots),
            )
    meta = run_meta(args, ceiling)
    return {"meta": meta, "rows": [asdict(r) for r in rows]}


def _print_rows(rows: list[Row], n_dots: int) -> None:
    by_impl = {r.impl: r for r in rows}
    alone = by_impl["GEMMs alone"]
    for r in rows:
        extra = ""
        if r.impl == "GEMMs alone":
            share = r.median_ms / by_impl["jaxconv"].median_ms
            extra = (
                f"  {n_dots} dot_generals, {r.gflops:6.1f} GFLOP/s"
                f" ({r.ceiling_pct:3.0f}% of ceiling), {100 * share:3.0f}% of jaxconv"
            )
            for ref in ("lax", "torch"):
                if ref in by_impl:
                    extra += f"  ×{ref} {alone.median_ms / by_impl[ref].median_ms:5.2f}"
        print(
            f"{r.workload} {r.layout} {r.pass_:8s} {r.impl:12s} {r.median_ms:9.2f} ms "
            f"[{r.min_ms:8.2f}–{r.max_ms:8.2f}]" + extra,
            flush=True,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, workloads="BCDE", passes="fwd,dX,dW")
    return split_lists(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
