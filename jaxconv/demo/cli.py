"""The demo's command line: `python -m jaxconv.demo`, `jaxconv-demo` or `python train_demo.py`.

Trains a small CNN whose every convolution is `jaxconv.conv2d`, with optax, under jit.

    python -m jaxconv.demo                      # sklearn digits, offline, about half a minute
    python -m jaxconv.demo --dataset fashion-mnist --epochs 3
    python -m jaxconv.demo --check-grads 50     # hand-derived vs automatic gradients, live

Runs on whatever `jax.devices()` offers; with several devices the step is data-parallel.
Writes checkpoint.npz (the run's whole state and record), metrics.json, curves.png and
filters.png to --out; --resume continues a run, and repairs one killed at any moment.

    python -m jaxconv.demo --distributed --coordinator 10.0.0.1:1234 --num-processes 2 \\
        --process-id 0 --out /shared/run     # and --process-id 1 on the other host

runs one process per host over all their devices (`jax.distributed.initialize`); process 0
writes --out, the others write nothing.

The demo needs the `demo` extra (optax, scikit-learn, matplotlib, tqdm); without it, it
stops with one line naming `pip install "jaxconv[demo]"` before anything else runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

from jaxconv.demo import data, model, storage

DESCRIPTION = (
    "Train a small CNN whose every convolution is `jaxconv.conv2d`, with optax, under jit."
)
PROG = "jaxconv-demo"
# The demo extra's imports (module name, distribution name). Checked before
# jaxconv.demo.train is imported, since it imports optax at the top.
REQUIREMENTS = (
    ("optax", "optax"),
    ("sklearn", "scikit-learn"),
    ("matplotlib", "matplotlib"),
    ("tqdm", "tqdm"),
)
INSTALL_HINT = 'pip install "jaxconv[demo]"'


def missing_requirements() -> list[str]:
    """The distributions of the demo extra that cannot be imported here."""
    missing = []
    for module, distribution in REQUIREMENTS:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or half-removed package
            found = False
        if not found:
            missing.append(distribution)
    return missing


def require_demo_extra(prog: str = PROG) -> None:
    """Exits with status 1 and one line on stderr if the demo extra is not installed."""
    missing = missing_requirements()
    if missing:
        print(
            f"{prog}: error: the demo needs {', '.join(missing)}, not installed here: "
            f'{INSTALL_HINT} (or, in a checkout, pip install -e ".[demo]")',
            file=sys.stderr,
        )
        sys.exit(1)


def _integer(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    return parse


def _coordinator(text: str) -> str:
    """An argparse type: HOST:PORT, the port an integer in 1..65535."""
    host, colon, port = text.rpartition(":")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(
            f"must be HOST:PORT with a port in 1..65535 (the address of process 0), got {text!r}"
        )
    return text


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_args(argv: list[str] | None = None, *, prog: str = PROG) -> argparse.Namespace:
    """The command line, every flag checked; a bad one exits with status 2 and one line."""
    require_demo_extra(prog)
    from jaxconv.demo import train

    defaults = train.TrainConfig()
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument(
        "--dataset",
        choices=train.DATASETS,
        default=defaults.dataset,
        help="digits: sklearn's 8×8 digits (offline); fashion-mnist: --data-dir if given, "
        "else Debian's dataset-fashion-mnist package, the cache ($JAXCONV_DATA or "
        "~/.cache/jaxconv) or a checksum-verified download; mnist: --data-dir if given, else "
        "the cache or a download.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="directory holding the four IDX files; when given, the only place read",
    )
    parser.add_argument("--epochs", type=_integer(1), help="epochs (default: 30 digits, 3 others)")
    parser.add_argument(
        "--batch-size", type=_integer(1), default=defaults.batch_size, help="images per step"
    )
    parser.add_argument("--lr", type=_learning_rate, default=defaults.lr, help="Adam learning rate")
    parser.add_argument(
        "--seed",
        type=_integer(0, 2**32 - 1),
        default=defaults.seed,
        help="seed of init and shuffling",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: runs/<dataset>-<timestamp>)"
    )
    parser.add_argument(
        "--impl",
        choices=list(model.CONV_IMPLS),
        default=defaults.impl,
        help="convolution: jaxconv's hand-derived rules, the naive reference, or XLA's",
    )
    parser.add_argument(
        "--check-grads",
        type=_integer(0),
        default=0,
        metavar="N",
        help="every N steps, compare jaxconv's gradients with jax.grad through XLA's conv",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --out's run; its checkpoint must exist and have the same settings "
        "(only --epochs may grow)",
    )
    parser.add_argument(
        "--max-steps", type=_integer(1), help="cap on steps per epoch (quick smoke runs)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one process of a multi-process run (one per host; see docs/demo.md): call "
        "jax.distributed.initialize() first; process 0 writes --out, the others nothing",
    )
    parser.add_argument(
        "--coordinator",
        type=_coordinator,
        metavar="HOST:PORT",
        help="with --distributed: process 0's address and a free port on it, the same for "
        "every process (default: detected by JAX from the cluster, or JAX_COORDINATOR_ADDRESS)",
    )
    parser.add_argument(
        "--num-processes",
        type=_integer(1),
        metavar="N",
        help="with --distributed: how many processes (default: detected by JAX)",
    )
    parser.add_argument(
        "--process-id",
        type=_integer(0),
        metavar="I",
        help="with --distributed: this process's index, 0..N-1 (default: detected by JAX)",
    )
    args = parser.parse_args(argv)
    for flag in ("coordinator", "num_processes", "process_id"):
        if getattr(args, flag) is not None and not args.distributed:
            parser.error(f"--{flag.replace('_', '-')} needs --distributed")
    if (
        args.num_processes is not None
        and args.process_id is not None
        and args.process_id >= args.num_processes
    ):
        parser.error(
            f"--process-id {args.process_id} must be less than --num-processes "
            f"{args.num_processes} (processes are numbered 0..N-1)"
        )
    if args.resume and args.out is None:
        parser.error("--resume needs --out (the run directory to continue)")
    if args.data_dir is not None:
        if args.dataset == "digits":
            parser.error("--data-dir applies to --dataset mnist and fashion-mnist, not digits")
        if not args.data_dir.is_dir():
            parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is not a directory")
    if args.epochs is None:
        args.epochs = defaults.epochs if args.dataset == "digits" else 3
    return args


class DistributedInitError(RuntimeError):
    """`jax.distributed.initialize` failed: no coordinator reached, or nothing detected."""


# Failures a user can meet and act on: one line each, no traceback. Anything else is a bug.
_EXPECTED = (
    ValueError,
    OSError,
    data.DownloadError,
    storage.RunDirBusyError,
    DistributedInitError,
)


def main(argv: list[str] | None = None, *, prog: str = PROG) -> dict[str, Any]:
    """Runs the demo; returns the metrics. Exits 2 on a bad flag, 1 on an expected failure
    or a missing demo extra (a message on stderr), 130 on Ctrl-C."""
    args = parse_args(argv, prog=prog)
    from jaxconv.demo import train  # importable: parse_args checked the demo extra

    try:
        return _run(args)
    except (*_EXPECTED, train.PeerError) as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; --resume continues from the last epoch", file=sys.stderr)
        sys.exit(130)


def console_main() -> None:
    """The `jaxconv-demo` console script (which would pass main's metrics to sys.exit)."""
    main()


def initialize_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Joins this process to a multi-process run; call it before anything touches a backend.

    Args:
      coordinator: HOST:PORT of process 0; None lets JAX detect it (Slurm, Open MPI, TPU
        pods, or the JAX_COORDINATOR_ADDRESS environment variable).
      num_processes: the number of processes; None: detected.
      process_id: this process's index; None: detected.

    Raises:
      DistributedInitError: JAX could not initialize (the message says why).
    """
    import jax

    # Cross-process collectives on CPU need an implementation (gloo is jax 0.10's default;
    # stated so that a CPU run across processes does not depend on it). GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    except (ValueError, RuntimeError, TypeError) as error:
        raise DistributedInitError(
            f"--distributed: jax.distributed.initialize() failed ({error}); give --coordinator, "
            "--num-processes and --process-id, or run under a cluster JAX detects."
        ) from error


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.distributed:  # before the first use of jax, which would start a backend
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax

    from jaxconv.demo import train

    # Process 0 speaks for the run; the others say one line at the end.
    quiet = jax.process_index() != 0
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{args.dataset}-{stamp}"
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
    train.validate_config(config)
    # Before loading (perhaps downloading) data: a wrong --out or --resume fails at once.
    train.check_run_dir(out, config, resume=args.resume)
    dataset = data.load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir)
    if not quiet:
        print(
            f"{dataset.name}: {len(dataset.train_labels)} train / {len(dataset.test_labels)} "
            f"test images of {dataset.train_images.shape[-2]}×{dataset.train_images.shape[-1]}"
        )
    _, metrics = train.train(
        config,
        dataset,
        out,
        resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(),
        figures=True,
    )
    if quiet:
        print(
            f"process {jax.process_index()} of {jax.process_count()}: done; process 0 wrote {out}/"
        )
        return metrics
    if metrics["grad_checks"]:
        worst = max(max(c["max_rel_diff"].values()) for c in metrics["grad_checks"])
        print(f"hand-derived vs automatic gradients: max relative difference {worst:.2e}")
    final = metrics["epochs"][-1]
    print(f"final test accuracy {final['test_accuracy']:.2%}; wrote {out}/")
    return metrics
