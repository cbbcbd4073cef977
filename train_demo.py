"""Train a small CNN whose every convolution is `jaxconv.conv2d`, with optax, under jit.

    python train_demo.py                      # sklearn digits, offline, about half a minute
    python train_demo.py --dataset fashion-mnist --epochs 3
    python train_demo.py --check-grads 50     # hand-derived vs automatic gradients, live

Runs on whatever `jax.devices()` offers; with several devices the step is data-parallel.
Writes metrics.json, curves.png, filters.png and checkpoint.npz to --out.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from jaxconv.demo import data, train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = train.TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=["digits", "fashion-mnist", "mnist"],
        default=defaults.dataset,
        help="digits: sklearn's 8×8 digits (offline); fashion-mnist: Debian's "
        "dataset-fashion-mnist package, --data-dir, or a download; mnist: --data-dir, "
        "the cache ($JAXCONV_DATA or ~/.cache/jaxconv), or a checksum-verified download.",
    )
    parser.add_argument("--data-dir", type=Path, help="directory holding the four IDX files")
    parser.add_argument("--epochs", type=int, help="epochs (default: 30 digits, 3 others)")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per step"
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of init and shuffling"
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: runs/<dataset>-<timestamp>)"
    )
    parser.add_argument(
        "--impl",
        choices=["jaxconv", "reference", "lax"],
        default=defaults.impl,
        help="convolution: jaxconv's hand-derived rules, the naive reference, or XLA's",
    )
    parser.add_argument(
        "--check-grads",
        type=int,
        default=0,
        metavar="N",
        help="every N steps, compare jaxconv's gradients with jax.grad through XLA's conv",
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument("--max-steps", type=int, help="cap on steps per epoch (quick smoke runs)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host; see README)",
    )
    args = parser.parse_args(argv)
    if args.resume and args.out is None:
        parser.error("--resume needs --out (the run directory to continue)")
    if args.epochs is None:
        args.epochs = defaults.epochs if args.dataset == "digits" else 3
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.distributed:
        import jax

        jax.distributed.initialize()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{args.dataset}-{stamp}"

    dataset = data.load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir)
    print(
        f"{dataset.name}: {len(dataset.train_labels)} train / {len(dataset.test_labels)} test "
        f"images of {dataset.train_images.shape[-2]}×{dataset.train_images.shape[-1]}"
    )
    config = train.TrainConfig(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        impl=args.impl,
        check_grads=args.check_grads,
        max_steps=args.max_steps,
    )
    _, metrics = train.train(
        config,
        dataset,
        out,
        resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(),
        figures=True,
    )
    if metrics["grad_checks"]:
        worst = max(max(c["max_rel_diff"].values()) for c in metrics["grad_checks"])
        print(f"hand-derived vs automatic gradients: max relative difference {worst:.2e}")
    final = metrics["epochs"][-1] if metrics["epochs"] else {}
    print(f"final test accuracy {final.get('test_accuracy', float('nan')):.2%}; wrote {out}/")
    return metrics


if __name__ == "__main__":
    main()
