"""Training loop of the demo: a jit-compiled, data-parallel optax step, evaluation,
checkpoints, live manual-vs-automatic gradient checks, metrics and figures.

A run directory holds checkpoint.npz, metrics.json, curves.png and filters.png. The
checkpoint is the run's whole state in one file, written atomically: parameters, optimizer
state, step, epoch, shuffling key, and the run's record (its configuration, its data's
digest, every epoch's metrics, every gradient check). metrics.json and the figures are
derived from that record, written after it, and rewritten from it on `--resume`; so a kill at
any moment loses at most the epoch in progress, never part of the record.

Several devices and processes: the mesh spans every device of every process (one axis,
"data", of Explicit type); the batch is sharded along it and everything else replicated.
Every process loads the same data, computes the same batches and holds the same replicated
state; each feeds only its own devices' rows. Process 0 alone takes the run directory's
lock and writes files; every process reads the checkpoint on `--resume`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import numbers
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv
from jaxconv.demo import model, plots, storage
from jaxconv.demo.data import IDX_DATASETS, Dataset

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.json"
FIGURES = ("curves.png", "filters.png")
RUN_FILES = (CHECKPOINT, METRICS, *FIGURES)
DATASETS = ("digits", *IDX_DATASETS)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved in the checkpoint and metrics.json.

    `max_steps` caps the steps per epoch (smoke tests); None trains on every full batch.
    """

    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    impl: str = "jaxconv"
    check_grads: int = 0
    eval_batch_size: int = 500
    max_steps: int | None = None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_config(config: TrainConfig) -> None:
    """Checks the type and range of every field, before anything is computed.

    Raises:
      TypeError: `config` is not a TrainConfig, or a field has the wrong type (an integer
        field given a float or a bool, `lr` given a string).
      ValueError: a value out of range: epochs, batch_size, eval_batch_size, max_steps < 1;
        check_grads < 0; seed outside 0..2**32 - 1; lr not finite and > 0; an unknown
        dataset or impl. The message names the field as its flag.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    for name, minimum in (
        ("epochs", 1),
        ("batch_size", 1),
        ("eval_batch_size", 1),
        ("check_grads", 0),
        ("seed", 0),
        ("max_steps", 1),
    ):
        value = getattr(config, name)
        if value is None and name == "max_steps":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"{_flag(name)} must be an integer, got {value!r} ({type(value).__name__})."
            )
        if value < minimum:
            raise ValueError(f"{_flag(name)} must be >= {minimum}, got {value}.")
    if config.seed > 2**32 - 1:  # the digits split's random_state is a uint32
        raise ValueError(f"--seed must be at most 2**32 - 1, got {config.seed}.")
    if isinstance(config.lr, bool) or not isinstance(config.lr, numbers.Real):
        raise TypeError(f"--lr must be a number, got {config.lr!r} ({type(config.lr).__name__}).")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {config.lr}.")
    for name, known in (("dataset", DATASETS), ("impl", tuple(model.CONV_IMPLS))):
        if getattr(config, name) not in known:
            raise ValueError(
                f"{_flag(name)} must be one of {', '.join(known)}; got {getattr(config, name)!r}."
            )


class TrainState(NamedTuple):
    """Parameters, optimizer state, steps taken, epochs finished, and the shuffling key."""

    params: model.Params
    opt_state: Any
    step: int
    epoch: int
    key: jax.Array


def init_state(config: TrainConfig, image_size: int, num_classes: int) -> TrainState:
    """Fresh parameters and optimizer state; the seed's key is split once, explicitly, into
    the initialisation key and the key that orders the training set."""
    params, opt_state, shuffle_key = _init_arrays(
        jax.random.key(config.seed), image_size, num_classes, config.lr
    )
    return TrainState(params, opt_state, 0, 0, shuffle_key)


# One compiled program, cached across calls: op by op, each operation would compile its own
# (seconds of a run's start on a CPU).
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_arrays(key: jax.Array, image_size: int, num_classes: int, lr: float):
    init_key, shuffle_key = jax.random.split(key)
    params = model.init_params(init_key, image_size, num_classes)
    return params, make_optimizer(lr).init(params), shuffle_key


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, axis "data"; one device gives a mesh
    of one.

    The axis is Explicit (jax 0.10's default for `jax.make_mesh`, stated here so that it
    stays so): shardings are part of the arrays' types, and code traced for the mesh runs
    under `jax.set_mesh(mesh)`, as JAX documents for explicit sharding.
    """
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Explicit,))


def is_writer() -> bool:
    """Whether this process writes the run's files and holds its lock: process 0 only."""
    return jax.process_index() == 0


def make_optimizer(lr: float) -> optax.GradientTransformation:
    """Adam with a fixed learning rate."""
    return optax.adam(lr)


def make_train_step(conv: model.ConvFn, optimizer: optax.GradientTransformation, mesh: Mesh):
    """One jit-compiled step: gradients of the loss, then the optax update.

    The batch is sharded along the mesh's "data" axis and the parameters replicated, so
    XLA inserts the gradient all-reduce; with one device it is a plain step. The
    parameters and optimizer state passed in are donated: their buffers become the new
    ones, and the arrays passed in are deleted, so nothing may read them after the call.

    Args:
      conv: the convolution the model runs.
      optimizer: the optax transformation.
      mesh: from `make_mesh`; trace and call the step under `jax.set_mesh(mesh)`.

    Returns:
      step(params, opt_state, images, labels) -> (params, opt_state, loss).
    """
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))

    def step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(model.loss_fn)(params, images, labels, conv)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(
        step,
        in_shardings=(replicated, replicated, batch, batch),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1),  # the old state is dead once the new one exists
    )


def make_eval_step(conv: model.ConvFn, mesh: Mesh):
    """Jit-compiled (number correct, summed loss) over a masked batch."""
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))

    def evaluate(params, images, labels, mask):
        logits = model.apply(params, images, conv)
        log_probs = jax.nn.log_softmax(logits)
        losses = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
        correct = (jnp.argmax(logits, axis=1) == labels).astype(jnp.float32)
        return jnp.sum(correct * mask), jnp.sum(losses * mask)

    return jax.jit(
        evaluate,
        in_shardings=(replicated, batch, batch, batch),
        out_shardings=(replicated, replicated),
    )


def make_grad_check(mesh: Mesh):
    """Jit-compiled comparison of jaxconv's hand-derived gradients with `jax.grad` through
    XLA's convolution, on the same parameters and batch.

    Returns:
      check(params, images, labels) -> {parameter path: max|manual − auto| / max|auto|}.
    """
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))

    def check(params, images, labels):
        manual = jax.grad(model.loss_fn)(params, images, labels, jaxconv.conv2d)
        auto = jax.grad(model.loss_fn)(params, images, labels, jaxconv.conv2d_xla)

        def rel(a, b):
            return jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30)

        return jax.tree_util.tree_map(rel, manual, auto)

    return jax.jit(check, in_shardings=(replicated, batch, batch), out_shardings=replicated)


def _global_array(sharding: NamedSharding, host: np.ndarray) -> jax.Array:
    # Every process holds the whole value; each hands its own devices their parts, whichever
    # rows the mesh gives them (not necessarily a contiguous block per process).
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> list[jax.Array]:
    """Global batch arrays as arrays sharded along "data".

    Every process passes the same global batch (the loop computes the same order on each);
    each transfers only the rows of its own devices.

    Args:
      mesh: from `make_mesh`.
      *arrays: numpy arrays whose first dimension is the batch, divisible by the devices.

    Returns:
      One global array per argument.
    """
    sharding = NamedSharding(mesh, P("data"))
    return [_global_array(sharding, a) for a in arrays]


def replicate(mesh: Mesh, tree: Any) -> Any:
    """A pytree of arrays as global arrays replicated over `mesh`: fresh buffers, so that
    donating them to the step leaves the arrays of `tree` intact.

    Every process must pass the same values (the same seed, or the same checkpoint).
    """
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda leaf: _global_array(sharding, np.asarray(leaf)), tree)


def to_host(tree: Any) -> Any:
    """A pytree of arrays as numpy arrays, the same on every process.

    Replicated and process-local arrays (everything the loop holds) are read from a local
    copy; any other global array is gathered with `process_allgather`, a collective, so
    call this on every process alike.
    """

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not (
            leaf.is_fully_addressable or leaf.is_fully_replicated
        ):
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(fetch, tree)


def epoch_order(key: jax.Array, epoch: int, n: int) -> np.ndarray:
    """The permutation of the training set for an epoch: a function of (key, epoch) only,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    return np.asarray(_permutation(key, epoch, n))


@functools.partial(jax.jit, static_argnums=2)  # compiled once, not op by op every epoch
def _permutation(key: jax.Array, epoch: int, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


# --- Checkpoints. ----------------------------------------------------------------------------

# 3: arrays named by tree path (params['conv1']['w'], opt_state[0].mu['conv1']['w']);
# 2 named them leaf_0, leaf_1, ... and matched them by position.
CHECKPOINT_FORMAT = 3
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz file is a zip archive
_SCALARS = ("step", "epoch", "key", "record")  # the entries that are not state arrays


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not one that this model and run can continue."""


def _json_bytes(payload: dict) -> bytes:
    return json.dumps(payload, indent=2).encode()


def state_entries(params: Any, opt_state: Any) -> dict[str, Any]:
    """The state's arrays by checkpoint entry name: "params" or "opt_state" followed by the
    leaf's `jax.tree_util.keystr` path, e.g. params['conv1']['w'] or
    opt_state[0].mu['conv1']['w'] (Adam's first moment of that kernel).

    Returns:
      {entry name: leaf}, in the trees' leaf order.
    """
    entries = {}
    for prefix, tree in (("params", params), ("opt_state", opt_state)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            entries[prefix + jax.tree_util.keystr(path)] = leaf
    return entries


def save_checkpoint(path: Path, state: TrainState, metrics: dict) -> None:
    """Writes the run's whole state, `state` and its record `metrics`, as one atomic file.

    Its arrays are named by tree path (see `state_entries`). With several processes,
    fetch the state with `to_host` on every process and call this on process 0 only.

    Args:
      path: the checkpoint; its directory must exist.
      state: parameters, optimizer state (jax or numpy arrays), step, epoch and key.
      metrics: the run's record (config, data, epochs, grad_checks), as in metrics.json.
    """
    # Any: numpy's stubs would match a dict of arrays to savez's allow_pickle keyword.
    arrays: dict[str, Any] = {
        name: np.asarray(leaf)
        for name, leaf in state_entries(state.params, state.opt_state).items()
    }
    record = _json_bytes({"format": CHECKPOINT_FORMAT, "metrics": metrics})
    buffer = io.BytesIO()
    np.savez(
        buffer,
        step=np.int64(state.step),
        epoch=np.int64(state.epoch),
        key=np.asarray(jax.random.key_data(state.key)),
        record=np.frombuffer(record, np.uint8),
        **arrays,
    )
    storage.atomic_write(path, buffer.getvalue())


class _Checkpoint:
    """An open checkpoint whose every read reports a damaged file as a CheckpointError."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise CheckpointError(f"{path} {what}: there is no checkpoint to resume here.")
        with open(path, "rb") as f:
            magic = f.read(4)
        if not magic:
            raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint.")
        if magic != _ZIP_MAGIC:
            raise CheckpointError(
                f"{path}: not a checkpoint (starts with {magic!r}; an .npz file starts with "
                f"{_ZIP_MAGIC!r})."
            )
        try:
            self.data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise self._corrupt(error) from error

    def _corrupt(self, error: BaseException) -> CheckpointError:
        return CheckpointError(
            f"{self.path}: truncated or corrupt checkpoint ({type(error).__name__}: {error})."
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.data.close()

    def get(self, name: str) -> np.ndarray:
        """The entry `name`, read in full (its CRC checked)."""
        if name not in self.data.files:
            raise CheckpointError(f"{self.path}: checkpoint lacks the entry {name!r}.")
        try:
            return self.data[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise self._corrupt(error) from error

    def counter(self, name: str) -> int:
        """A non-negative integer scalar entry (step, epoch)."""
        value = self.get(name)
        if value.shape != () or value.dtype.kind not in "iu" or value < 0:
            raise CheckpointError(
                f"{self.path}: entry {name!r} must be a non-negative integer scalar, got "
                f"shape {value.shape} of {value.dtype}."
            )
        return int(value)

    def check_format(self) -> None:
        """Refuses the format-2 checkpoints of earlier versions, whose arrays are leaf_<i>."""
        if any(name.startswith("leaf_") for name in self.data.files):
            raise CheckpointError(
                f"{self.path}: an older checkpoint format (format 2: arrays named leaf_0, "
                f"leaf_1, ... and matched by position); this version names them by tree path "
                f"(format {CHECKPOINT_FORMAT}) and cannot resume it. Start a new run in another "
                "--out, or resume it with the jaxconv version that wrote it."
            )

    def metrics(self) -> dict:
        """The run's record, checked against the epoch the checkpoint holds."""
        self.check_format()
        raw = self.get("record")
        try:
            record = json.loads(raw.astype(np.uint8).tobytes())
            metrics = record["metrics"]
            config, epochs = metrics["config"], metrics["epochs"]
            listed = [r["epoch"] for r in epochs]
            if record["format"] != CHECKPOINT_FORMAT or not isinstance(config, dict):
                raise ValueError(f"format {record['format']!r}, expected {CHECKPOINT_FORMAT}")
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{self.path}: unreadable run record ({type(error).__name__}: {error})."
            ) from error
        epoch = self.counter("epoch")
        if listed != list(range(1, epoch + 1)):
            raise CheckpointError(
                f"{self.path}: the record lists epochs {listed}, but the state is after "
                f"epoch {epoch}."
            )
        return metrics


def _describe(array) -> str:
    return f"{tuple(np.shape(array))} {np.asarray(array).dtype}"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:6])
    return shown + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def load_checkpoint(path: Path, like: TrainState) -> tuple[TrainState, dict]:
    """Reads a checkpoint into the structure of `like` (a freshly initialised state).

    Every entry is checked against `like` by name (see `state_entries`): each of its arrays
    present, with its shape and dtype, and no other entry; the key's data too; step and
    epoch must be non-negative integers, and the record must list epochs 1..epoch.

    Returns:
      The state, and the run's record (the metrics dictionary).

    Raises:
      CheckpointError (a ValueError): the file is missing, empty, truncated or corrupt, of
        the older leaf_<i> format, or does not match `like`; the message names the file and
        each missing, unexpected or mismatching entry.
    """
    path = Path(path)
    expected = state_entries(like.params, like.opt_state)
    treedef = jax.tree_util.tree_structure((like.params, like.opt_state))
    with _Checkpoint(path) as ckpt:
        metrics = ckpt.metrics()
        found = [name for name in ckpt.data.files if name not in _SCALARS]
        missing = [name for name in expected if name not in found]
        unexpected = sorted(name for name in found if name not in expected)
        if missing or unexpected:
            problems = [f"it lacks {_listing(missing)}"] if missing else []
            problems += [f"it has unexpected entries {_listing(unexpected)}"] if unexpected else []
            raise CheckpointError(
                f"{path}: does not match this model and optimizer: {'; '.join(problems)}."
            )
        leaves = []
        for name, like_leaf in expected.items():
            array = ckpt.get(name)
            if array.shape != np.shape(like_leaf) or array.dtype != like_leaf.dtype:
                raise CheckpointError(
                    f"{path}: does not match this model and optimizer: {name} is "
                    f"{_describe(array)}, expected {_describe(like_leaf)}."
                )
            leaves.append(jnp.asarray(array))
        key_data = ckpt.get("key")
        like_key = jax.random.key_data(like.key)
        if key_data.shape != like_key.shape or key_data.dtype != like_key.dtype:
            raise CheckpointError(
                f"{path}: key is {_describe(key_data)}, expected {_describe(like_key)}."
            )
        step, epoch = ckpt.counter("step"), ckpt.counter("epoch")
    params, opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
    key = jax.random.wrap_key_data(jnp.asarray(key_data))
    return TrainState(params, opt_state, step, epoch, key), metrics


def describe_data(data: Dataset) -> dict:
    """The dataset's name, sizes and a SHA-256 of its arrays: what a resumed run must see."""
    digest = hashlib.sha256()
    for array in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return {
        "name": data.name,
        "train": len(data.train_labels),
        "test": len(data.test_labels),
        "image_shape": [int(n) for n in data.train_images.shape[1:]],
        "num_classes": int(data.num_classes),
        "sha256": digest.hexdigest(),
    }


def check_run_dir(out_dir: Path, config: TrainConfig, *, resume: bool) -> dict | None:
    """Checks, before any data is loaded or file written, that `out_dir` can take this run.

    Fresh runs need a directory (or nothing yet) without a checkpoint. `resume` needs its
    checkpoint, readable, made with the same settings as `config` (only `epochs` may differ,
    and not be fewer than the epochs it has finished).

    Returns:
      The checkpoint's record with `resume`, else None.

    Raises:
      CheckpointError (a ValueError): the checkpoint is missing, unreadable, or its settings
        differ (the message names each differing setting).
      ValueError: `out_dir` is not a directory, or a fresh run would overwrite a run.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is not a directory.")
    path = out_dir / CHECKPOINT
    if not resume:
        if path.exists():
            raise ValueError(
                f"{out_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
                "or choose another --out."
            )
        return None
    if not out_dir.is_dir():
        raise CheckpointError(f"--resume: {out_dir} does not exist; there is nothing to resume.")
    with _Checkpoint(path) as ckpt:
        metrics = ckpt.metrics()
        epoch = ckpt.counter("epoch")
    saved, current = metrics["config"], dataclasses.asdict(config)
    differ = [
        f"{_flag(name)} {saved.get(name, '(unset)')!r} there, {value!r} here"
        for name, value in current.items()
        if name != "epochs" and saved.get(name, "(unset)") != value
    ]
    if differ:
        raise CheckpointError(
            f"--resume: {path} was made with other settings: {'; '.join(differ)} "
            "(only --epochs may change)."
        )
    if config.epochs < epoch:
        raise CheckpointError(
            f"--resume: --epochs {config.epochs} is fewer than the {epoch} epochs {path} has "
            "finished."
        )
    return metrics


# --- The loop. -------------------------------------------------------------------------------


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


class PeerError(RuntimeError):
    """Another process of a multi-process run could not start it."""


def _agree_to_start(error: Exception | None, data_sha256: str) -> None:
    """Every process learns whether all could start the run, and that all hold the same data.

    With one process it only raises `error`. With several it is a collective (one
    `process_allgather`), called on every process, the failed ones too: so a process that
    could not start (its lock taken, its checkpoint unreadable) stops the others at once
    instead of leaving them waiting in the first step.

    Raises:
      `error`, on the process where it occurred; PeerError on the others. ValueError on
        every process when some process's data differ from process 0's.
    """
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    mine = np.concatenate(
        [np.array([error is None], np.uint8), np.frombuffer(bytes.fromhex(data_sha256), np.uint8)]
    )
    rows = np.asarray(multihost_utils.process_allgather(mine))
    if error is not None:
        raise error
    failed = [str(i) for i in range(len(rows)) if not rows[i, 0]]
    if failed:
        raise PeerError(
            f"process {', '.join(failed)} could not start the run (its own error says why); "
            f"process {jax.process_index()} stops too."
        )
    other = [str(i) for i in range(len(rows)) if np.any(rows[i, 1:] != rows[0, 1:])]
    if other:
        raise ValueError(
            f"process {', '.join(other)} loaded other data than process 0 (another sha256); "
            "every process must load the same --dataset (and --data-dir contents)."
        )


def train(
    config: TrainConfig,
    data: Dataset,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    figures: bool = False,
) -> tuple[TrainState, dict]:
    """Trains the demo CNN into the run directory `out_dir`.

    Every argument is checked before anything is computed or written. `out_dir` is created
    (if missing) only then, and locked for the whole run; temporary files that killed runs
    left there are deleted. After each epoch the checkpoint (the whole state and record) is
    written atomically, then metrics.json from it.

    With several processes (after `jax.distributed.initialize`) every process calls this
    with the same arguments and data: only process 0 takes the lock and writes files, logs
    and shows progress; every process reads the checkpoint on `resume`. `out_dir` may be
    on a filesystem they share, or be each host's own copy.

    Args:
      config: the run's configuration.
      data: the dataset; its name must be `config.dataset`.
      out_dir: the run directory.
      resume: continue from out_dir/checkpoint.npz, which must exist and have been made with
        the same settings (only `epochs` may grow). metrics.json is first rewritten from the
        checkpoint, which repairs a run killed between the two writes.
      progress: show a tqdm bar per epoch.
      log: where the per-epoch summary lines go.
      figures: also write curves.png and filters.png (atomically, under the lock).

    Returns:
      The final state (replicated global arrays) and the metrics dictionary also written
      to metrics.json; the same on every process.

    Raises:
      TypeError, ValueError: a bad setting (see `validate_config`), a batch size the
        devices do not divide or larger than the training set, data of another dataset,
        or (several processes) data that differ between processes.
      CheckpointError (a ValueError): see `check_run_dir` and `load_checkpoint`; also the
        data differ from the checkpoint's.
      storage.RunDirBusyError: another run holds `out_dir`.
      PeerError: another process of this run could not start it.
    """
    validate_config(config)
    if data.name != config.dataset:
        raise ValueError(f"--dataset {config.dataset!r}, but the data given are {data.name!r}.")
    out_dir = Path(out_dir)
    mesh = make_mesh()
    devices = mesh.devices.size
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % devices:
            raise ValueError(
                f"{_flag(name)} ({getattr(config, name)}) must be divisible by the "
                f"number of devices ({devices})."
            )
    n_train = len(data.train_labels)
    if config.batch_size > n_train:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the {n_train} images.")
    data_record = describe_data(data)
    writer = is_writer()
    with contextlib.ExitStack() as stack:
        error: Exception | None = None
        state = metrics = None
        try:
            check_run_dir(out_dir, config, resume=resume)  # fails before creating the directory
            if writer:
                stack.enter_context(storage.locked_dir(out_dir, create=not resume))
                storage.remove_leftovers(out_dir, RUN_FILES)
                # Again under the lock: another run may have changed the directory meanwhile.
                check_run_dir(out_dir, config, resume=resume)
            state, metrics = _initial_state(config, data, data_record, out_dir, resume, devices)
        except Exception as caught:  # raised by _agree_to_start, once the others know
            error = caught
        _agree_to_start(error, data_record["sha256"])
        assert state is not None and metrics is not None  # no error was raised
        if not writer:
            log, progress = (lambda line: None), False
        if resume:
            _repair_metrics(out_dir, metrics, writer, log)
            checkpoint = out_dir / CHECKPOINT
            log(f"resumed from {checkpoint} after epoch {state.epoch} (step {state.step})")
        # Explicit mesh axes: tracing and running the steps under the mesh, as JAX documents.
        with jax.set_mesh(mesh):
            return _train_loop(config, data, out_dir, mesh, state, metrics, progress, log, figures)
    raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions


def _initial_state(config, data, data_record, out_dir, resume, devices):
    """A fresh state and record, or (`resume`) the checkpoint's, checked against `data`."""
    state = init_state(config, data.train_images.shape[-1], data.num_classes)
    if not resume:
        metrics = {
            "config": dataclasses.asdict(config),
            "data": data_record,
            "devices": devices,
            "processes": jax.process_count(),
            "epochs": [],
            "grad_checks": [],
        }
        return state, metrics
    checkpoint = out_dir / CHECKPOINT
    state, metrics = load_checkpoint(checkpoint, state)
    saved_data = metrics.get("data") or {}
    differ = [
        f"{key} {saved_data.get(key)!r} there, {value!r} here"
        for key, value in data_record.items()
        if saved_data.get(key) != value
    ]
    if differ:
        raise CheckpointError(
            f"--resume: {checkpoint} was trained on other data ({'; '.join(differ)}); "
            "give the same --dataset and --data-dir."
        )
    return state, metrics


def _repair_metrics(out_dir: Path, metrics: dict, writer: bool, log) -> None:
    """Rewrites metrics.json from the checkpoint's record where they differ (process 0)."""
    path, payload = out_dir / METRICS, _json_bytes(metrics)
    if writer and (not path.is_file() or path.read_bytes() != payload):
        storage.atomic_write(path, payload)
        log(f"rewrote {path} from the checkpoint")


def _train_loop(config, data, out_dir, mesh, state, metrics, progress, log, figures):
    writer = is_writer()
    devices = mesh.devices.size
    conv = model.CONV_IMPLS[config.impl]
    optimizer = make_optimizer(config.lr)
    checkpoint, metrics_path = out_dir / CHECKPOINT, out_dir / METRICS
    n_train = len(data.train_labels)
    steps_per_epoch = n_train // config.batch_size  # the ragged last batch is dropped
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    epochs = range(state.epoch + 1, config.epochs + 1)
    params, opt_state, step = state.params, state.opt_state, state.step
    if epochs:
        # Fresh replicated buffers for the step to donate; `state` keeps its own.
        params, opt_state = replicate(mesh, (params, opt_state))
        # Compile ahead of time, so compilation is timed apart from training.
        t0 = time.perf_counter()
        sample = shard_batch(
            mesh, data.train_images[: config.batch_size], data.train_labels[: config.batch_size]
        )
        train_step = make_train_step(conv, optimizer, mesh)
        train_step = train_step.lower(params, opt_state, *sample).compile()
        eval_step = make_eval_step(conv, mesh)
        eval_args = _eval_batches(data, config.eval_batch_size)[0]
        eval_step = eval_step.lower(params, *shard_batch(mesh, *eval_args)).compile()
        grad_check = None
        if config.check_grads:
            grad_check = make_grad_check(mesh).lower(params, *sample).compile()
        compile_seconds = time.perf_counter() - t0
        metrics["compile_seconds"] = compile_seconds
        processes = jax.process_count()
        log(
            f"devices: {devices} × {jax.devices()[0].platform}"
            + (f" in {processes} processes" if processes > 1 else "")
            + f"; compile {compile_seconds:.2f}s"
        )

    for epoch in epochs:
        order = epoch_order(state.key, epoch, n_train)
        losses = []
        start = time.perf_counter()
        bar = _progress(range(steps_per_epoch), f"epoch {epoch}/{config.epochs}", progress)
        for i in bar:
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            images, labels = shard_batch(mesh, data.train_images[idx], data.train_labels[idx])
            if grad_check is not None and step % config.check_grads == 0:
                # Before the step, which donates `params`.
                diffs = to_host(grad_check(params, images, labels))
                flat = {
                    jax.tree_util.keystr(path): float(value)
                    for path, value in jax.tree_util.tree_leaves_with_path(diffs)
                }
                metrics["grad_checks"].append({"step": step, "max_rel_diff": flat})
            params, opt_state, loss = train_step(params, opt_state, images, labels)
            losses.append(loss)
            step += 1
            if progress and i % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        jax.block_until_ready(params)
        seconds = time.perf_counter() - start
        train_loss = float(np.mean([float(v) for v in to_host(losses)]))
        accuracy, test_loss = evaluate(eval_step, params, data, config.eval_batch_size, mesh)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_accuracy": accuracy,
            "epoch_seconds": seconds,
            "images_per_second": steps_per_epoch * config.batch_size / seconds,
            "devices": devices,
        }
        if metrics["grad_checks"]:
            record["max_grad_rel_diff"] = max(
                max(c["max_rel_diff"].values()) for c in metrics["grad_checks"]
            )
        metrics["epochs"].append(record)
        metrics["config"] = dataclasses.asdict(config)  # --epochs may have grown on resume
        metrics["devices"] = devices
        metrics["processes"] = jax.process_count()
        log(
            f"epoch {epoch:3d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
            f"test acc {accuracy:.2%}  {record['images_per_second']:,.0f} img/s  "
            f"({seconds:.2f}s)"
        )
        state = TrainState(params, opt_state, step, epoch, state.key)
        # On every process (a collective, were any array not replicated); written by one.
        saved = state._replace(params=to_host(params), opt_state=to_host(opt_state))
        if writer:
            # The checkpoint first: it is the record; metrics.json is a copy that a resume
            # rewrites from it, so a kill between the two loses nothing.
            save_checkpoint(checkpoint, saved, metrics)
            storage.atomic_write(metrics_path, _json_bytes(metrics))
    if figures:
        kernels = to_host(state.params["conv1"]["w"])
        if writer:
            plots.plot_curves(metrics, out_dir / FIGURES[0])
            plots.plot_filters(kernels, out_dir / FIGURES[1])
    return state, metrics


def _eval_batches(data: Dataset, batch_size: int) -> list[tuple[np.ndarray, ...]]:
    """Every test image once, in fixed-size batches; the last is padded and masked."""
    n = len(data.test_labels)
    batches: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, batch_size):
        images = data.test_images[start : start + batch_size]
        labels = data.test_labels[start : start + batch_size]
        mask = np.ones(len(labels), np.float32)
        pad = batch_size - len(labels)
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
            mask = np.concatenate([mask, np.zeros(pad, np.float32)])
        batches.append((images, labels, mask))
    return batches


def evaluate(eval_step, params, data: Dataset, batch_size: int, mesh: Mesh) -> tuple[float, float]:
    """(accuracy, mean loss) over every test image."""
    correct = total_loss = 0.0
    for batch in _eval_batches(data, batch_size):
        c, loss = eval_step(params, *shard_batch(mesh, *batch))
        correct += float(c)
        total_loss += float(loss)
    n = len(data.test_labels)
    return correct / n, total_loss / n
