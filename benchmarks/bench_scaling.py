"""Per-device work on 1, 2, 4 and 8 devices: jaxconv beside XLA's convolution, batch-sharded.

    python benchmarks/bench_scaling.py [--devices 1,2,4,8] [--axes explicit|auto]
                                       [--repeats 5] [--json PATH]

For each device count, a fresh process with that many forced host devices
(`--xla_force_host_platform_device_count`) compiles, with the batch split along a "data"
mesh axis and the parameters replicated:
- the demo's train step (28×28 CNN, Adam, global batch 256);
- workload B (128×32×26×26 → 64, 3×3) and D (32×64×56×56 → 64, 3×3 SAME) of bench_conv.py,
  forward + backward of sum(Z²), NCHW.
It prints per device: the contraction flops of the compiled program (`hlo_stats`: every dot
and convolution, loops counted by their trip counts), the flops `cost_analysis()` reports
(loop bodies counted once), the collectives and their bytes, and the median step time
(jaxconv and XLA interleaved). On a machine with fewer cores than devices the times do not
fall; the flops and the collectives are what the partitioning decides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

GLOBAL_BATCH = 256
WORKLOADS = {
    "B": ((128, 32, 26, 26), (64, 32, 3, 3), 0),
    "D": ((32, 64, 56, 56), (64, 64, 3, 3), 1),
}


def child(axes: str, repeats: int) -> list[dict]:
    """Runs in the process with the forced devices: one row per program and implementation."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from hlo_stats import summary
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxconv
    from jaxconv.demo import model, train

    devices = jax.device_count()
    kind = AxisType.Explicit if axes == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(kind,))
    batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

    def demo_programs():
        params = model.init_params(jax.random.key(0), 28, 10)
        optimizer = train.make_optimizer(1e-3)
        images = jax.random.normal(jax.random.key(1), (GLOBAL_BATCH, 1, 28, 28), jnp.float32)
        labels = jnp.arange(GLOBAL_BATCH, dtype=jnp.int32) % 10
        for impl, name in (("jaxconv", "jaxconv"), ("xla", "lax")):
            step = train.make_train_step(model.CONV_IMPLS[name], optimizer, mesh)
            fresh = jax.tree.map(np.asarray, (params, optimizer.init(params)))  # the step donates
            args = (
                jax.device_put(fresh[0], replicated),
                jax.device_put(fresh[1], replicated),
                jax.device_put(images, batch),
                jax.device_put(labels, batch),
            )
            yield "demo step", impl, step, args

    def workload_programs():
        for workload, (x_shape, w_shape, padding) in WORKLOADS.items():
            x = jax.random.normal(jax.random.key(2), x_shape, jnp.float32)
            w = jax.random.normal(jax.random.key(3), w_shape, jnp.float32) / 10
            convs = {
                "jaxconv": lambda x, w, p=padding: jaxconv.conv2d(x, w, padding=p),
                "xla": lambda x, w, p=padding: jaxconv.conv2d_xla(x, w, padding=p),
            }
            for impl, conv in convs.items():

                def loss(x, w, conv=conv):
                    return jnp.sum(conv(x, w) ** 2)

                step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
                args = (jax.device_put(x, batch), jax.device_put(w, replicated))
                yield f"workload {workload}", impl, step, args

    rows, runs = [], []
    with jax.set_mesh(mesh):
        for program, impl, step, args in (*demo_programs(), *workload_programs()):
            compiled = step.lower(*args).compile()
            row = {"program": program, "impl": impl, "devices": devices, **summary(compiled)}
            rows.append(row)
            runs.append((row, compiled, args))
        times: dict[int, list[float]] = {i: [] for i in range(len(runs))}
        for _ in range(repeats + 1):  # the first round warms up and is dropped
            for i, (row, compiled, args) in enumerate(runs):
                start = time.perf_counter()
                out = compiled(*args)
                if row["program"] == "demo step":  # the step donates; feed its state back
                    args = (out[0], out[1], *args[2:])
                    runs[i] = (row, compiled, args)
                jax.block_until_ready(out)
                times[i].append(time.perf_counter() - start)
    for i, (row, _, _) in enumerate(runs):
        row["step_ms"] = 1e3 * statistics.median(times[i][1:])
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a table, with the per-device flops as a fraction of one device's."""
    one = {(r["program"], r["impl"]): r for r in rows if r["devices"] == 1}
    lines = [
        "| program | devices | impl | GFLOP/device | × 1 device | cost_analysis GFLOP |"
        " collectives | collective MB | all-gathers | step ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["program"], r["devices"], r["impl"])):
        base = one.get((r["program"], r["impl"]))
        fraction = r["contraction_flops"] / base["contraction_flops"] if base else float("nan")
        lines.append(
            f"| {r['program']} | {r['devices']} | {r['impl']} | {r['contraction_flops'] / 1e9:.3f}"
            f" | {fraction:.3f} | {r['cost_analysis_flops'] / 1e9:.3f} | {r['collective_count']}"
            f" | {r['collective_bytes'] / 1e6:.3f} | {r['all_gathers']} | {r['step_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4,8", help="device counts, comma-separated")
    parser.add_argument("--axes", choices=("explicit", "auto"), default="explicit")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the rows and the machine here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.axes, args.repeats)))
        return {}
    rows = []
    for count in (int(d) for d in args.devices.split(",")):
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
        env = dict(os.environ, XLA_FLAGS=flags.strip())
        command = [sys.executable, __file__, "--child", "--axes", args.axes]
        command += ["--repeats", str(args.repeats)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"bench_scaling: {count} devices failed:\n{done.stderr[-3000:]}")
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    print(table(rows))
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "axes": args.axes,
            "repeats": args.repeats,
            "jax": __import__("jax").__version__,
        },
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
