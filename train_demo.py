"""Train a small CNN whose every convolution is `jaxconv.conv2d`, with optax, under jit.

    python train_demo.py                      # sklearn digits, offline, about half a minute
    python train_demo.py --dataset fashion-mnist --epochs 3
    python train_demo.py --check-grads 50     # hand-derived vs automatic gradients, live

The same command as `python -m jaxconv.demo` (or the `jaxconv-demo` script), kept at the top
of a checkout; the code is jaxconv/demo/cli.py. Flags: `--help`, and docs/demo.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from jaxconv.demo import cli

PROG = "train_demo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.parse_args(argv, prog=PROG)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return cli.main(argv, prog=PROG)


if __name__ == "__main__":
    main()
