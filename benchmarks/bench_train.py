"""Training steps per second of the demo's MNIST-size CNN: jaxconv vs XLA's conv vs PyTorch.

    python benchmarks/bench_train.py [--steps 30] [--batch-size 128] [--json out.json]

The model is the demo's 28×28 CNN (conv 32 3×3 → ReLU → conv 64 3×3 → ReLU → 2×2 max pool →
dense 128 → ReLU → dense 10), trained with Adam in one jit-compiled step; only the convolution
differs between `jaxconv` and `lax`. PyTorch (eager, same architecture, torch.optim.Adam) runs
when installed. Implementations are interleaved step by step, each timed step after `--warm`
untimed steps of the same implementation (as in bench_conv.py: a step timed straight after
another runtime's pays for that runtime's threads); the median step time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from jaxconv.demo import model, train


def jax_step(impl: str, batch_size: int, mesh):
    """The demo's train step and its initial (params, opt_state) placed on `mesh`, for one
    conv impl; call it under `jax.set_mesh(mesh)`, as the demo does."""
    config = train.TrainConfig(batch_size=batch_size, impl=impl)
    state = train.init_state(config, 28, 10)
    step = train.make_train_step(model.CONV_IMPLS[impl], train.make_optimizer(config.lr), mesh)
    return step, list(train.replicate(mesh, (state.params, state.opt_state)))


def torch_step(batch_size: int):
    """PyTorch eager equivalent; None when torch is absent."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step(images, labels):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(images), labels)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per implementation")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--warm", type=int, default=1, help="untimed steps before each timed one (module doc)"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.random((args.batch_size, 1, 28, 28), np.float32)
    labels = rng.integers(0, 10, args.batch_size).astype(np.int32)
    runners = {}
    mesh = train.make_mesh()
    for impl in ("jaxconv", "lax"):
        step, carry = jax_step(impl, args.batch_size, mesh)
        x, y = train.shard_batch(mesh, images, labels)

        def run(step=step, carry=carry, x=x, y=y):
            with jax.set_mesh(mesh):
                carry[0], carry[1], loss = step(carry[0], carry[1], x, y)
            loss.block_until_ready()

        runners[impl] = run
    if not args.no_torch:
        t_step = torch_step(args.batch_size)
        if t_step is not None:
            import torch

            tx, ty = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
            runners["torch"] = lambda: t_step(tx, ty)

    for run in runners.values():  # compile and warm up
        for _ in range(3):
            run()
    times = {name: [] for name in runners}
    for _ in range(args.steps):
        for name, run in runners.items():
            for _ in range(args.warm):
                run()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    result = {
        "batch_size": args.batch_size,
        "warm": args.warm,
        "jax": jax.__version__,
        "impls": {},
    }
    for name, ts in times.items():
        median = statistics.median(ts)
        result["impls"][name] = {
            "median_ms": 1e3 * median,
            "steps_per_s": 1 / median,
            "images_per_s": args.batch_size / median,
        }
        print(
            f"{name:8s} {1e3 * median:8.2f} ms/step  {1 / median:7.2f} steps/s  "
            f"{args.batch_size / median:9.0f} img/s"
        )
    ours = result["impls"]["jaxconv"]["steps_per_s"]
    for ref in ("lax", "torch"):
        if ref in result["impls"]:
            ratio = ours / result["impls"][ref]["steps_per_s"]
            result[f"jaxconv_over_{ref}"] = ratio
            print(
                f"jaxconv steps/s ÷ {ref} steps/s: {ratio:.2f} "
                f"({'MET' if ratio >= 1 else 'NOT MET'}: target ≥ 1)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
