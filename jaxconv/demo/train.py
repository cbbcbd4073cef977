"""Training loop of the demo: a jit-compiled, data-parallel optax step, evaluation,
checkpoints, live manual-vs-automatic gradient checks, metrics and figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv
from jaxconv.demo import model
from jaxconv.demo.data import Dataset


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved in metrics.json."""

    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    impl: str = "jaxconv"
    check_grads: int = 0
    eval_batch_size: int = 500


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
    init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
    params = model.init_params(init_key, image_size, num_classes)
    return TrainState(params, make_optimizer(config.lr).init(params), 0, 0, shuffle_key)


def make_mesh() -> Mesh:
    """A 1-D mesh over every device, axis "data"; one device gives a mesh of one."""
    return Mesh(np.array(jax.devices()), ("data",))


def make_optimizer(lr: float) -> optax.GradientTransformation:
    """Adam with a fixed learning rate."""
    return optax.adam(lr)


def make_train_step(conv: model.ConvFn, optimizer: optax.GradientTransformation, mesh: Mesh):
    """One jit-compiled step: gradients of the loss, then the optax update.

    The batch is sharded along the mesh's "data" axis and the parameters replicated, so
    XLA inserts the gradient all-reduce; with one device it is a plain step.

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


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> list[jax.Array]:
    """Global batch arrays as arrays sharded along "data"; each process feeds its slice."""
    sharding = NamedSharding(mesh, P("data"))
    count, index = jax.process_count(), jax.process_index()
    out = []
    for a in arrays:
        local = a.shape[0] // count
        out.append(
            jax.make_array_from_process_local_data(sharding, a[index * local : (index + 1) * local])
        )
    return out


def epoch_order(key: jax.Array, epoch: int, n: int) -> np.ndarray:
    """The permutation of the training set for an epoch: a function of (key, epoch) only,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


# --- Checkpoints. ----------------------------------------------------------------------------


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Writes params, optimizer state, step and epoch atomically (temp file + rename)."""
    leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            key = np.asarray(jax.random.key_data(state.key))
            np.savez(f, step=state.step, epoch=state.epoch, key=key, **arrays)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path, like: TrainState) -> TrainState:
    """Reads a checkpoint into the structure of `like` (a freshly initialised state).

    Raises:
      ValueError: the checkpoint does not match the structure or shapes of `like`.
    """
    treedef = jax.tree_util.tree_structure((like.params, like.opt_state))
    like_leaves = jax.tree_util.tree_leaves((like.params, like.opt_state))
    with np.load(path) as data:
        leaves = [data[f"leaf_{i}"] for i in range(treedef.num_leaves) if f"leaf_{i}" in data]
        if len(leaves) != len(like_leaves) or any(
            a.shape != np.shape(b) for a, b in zip(leaves, like_leaves)
        ):
            raise ValueError(f"{path}: checkpoint does not match this model and optimizer.")
        params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves])
        key = jax.random.wrap_key_data(jnp.asarray(data["key"]))
        return TrainState(params, opt_state, int(data["step"]), int(data["epoch"]), key)


# --- The loop. -------------------------------------------------------------------------------


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def train(
    config: TrainConfig,
    data: Dataset,
    out_dir: Path,
    *,
    resume: bool = False,
    max_steps_per_epoch: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[TrainState, dict]:
    """Trains the demo CNN and writes metrics.json, checkpoint.npz (and figures via `plots`).

    Args:
      config: the run's configuration.
      data: the dataset.
      out_dir: output directory.
      resume: continue from out_dir/checkpoint.npz if it exists.
      max_steps_per_epoch: cap on steps per epoch (smoke tests).
      progress: show a tqdm bar per epoch.
      log: where the per-epoch summary lines go.

    Returns:
      The final state and the metrics dictionary also written to metrics.json.
    """
    mesh = make_mesh()
    devices = mesh.devices.size
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % devices:
            raise ValueError(
                f"--{name.replace('_', '-')} ({getattr(config, name)}) must be divisible by the "
                f"number of devices ({devices})."
            )
    conv = model.CONV_IMPLS[config.impl]
    optimizer = make_optimizer(config.lr)
    state = init_state(config, data.train_images.shape[-1], data.num_classes)

    checkpoint = out_dir / "checkpoint.npz"
    metrics_path = out_dir / "metrics.json"
    metrics = {"config": dataclasses.asdict(config), "devices": devices, "epochs": []}
    metrics["grad_checks"] = []
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, state)
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
        log(f"resumed from {checkpoint} after epoch {state.epoch} (step {state.step})")

    n_train = len(data.train_labels)
    steps_per_epoch = n_train // config.batch_size  # the ragged last batch is dropped
    if max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the {n_train} images.")

    # Compile ahead of time, so compilation is timed apart from training.
    t0 = time.perf_counter()
    sample = shard_batch(
        mesh, data.train_images[: config.batch_size], data.train_labels[: config.batch_size]
    )
    train_step = make_train_step(conv, optimizer, mesh)
    train_step = train_step.lower(state.params, state.opt_state, *sample).compile()
    eval_step = make_eval_step(conv, mesh)
    eval_args = _eval_batches(data, config.eval_batch_size)[0]
    eval_step = eval_step.lower(state.params, *shard_batch(mesh, *eval_args)).compile()
    grad_check = None
    if config.check_grads:
        grad_check = make_grad_check(mesh).lower(state.params, *sample).compile()
    compile_seconds = time.perf_counter() - t0
    metrics["compile_seconds"] = compile_seconds
    log(f"devices: {devices} × {jax.devices()[0].platform}; compile {compile_seconds:.2f}s")

    params, opt_state, step = state.params, state.opt_state, state.step
    for epoch in range(state.epoch + 1, config.epochs + 1):
        order = epoch_order(state.key, epoch, n_train)
        losses = []
        start = time.perf_counter()
        bar = _progress(range(steps_per_epoch), f"epoch {epoch}/{config.epochs}", progress)
        for i in bar:
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            images, labels = shard_batch(mesh, data.train_images[idx], data.train_labels[idx])
            if grad_check is not None and step % config.check_grads == 0:
                diffs = jax.tree_util.tree_map(float, grad_check(params, images, labels))
                flat = {
                    jax.tree_util.keystr(path): value
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
        train_loss = float(np.mean([float(v) for v in losses]))
        accuracy, test_loss = evaluate(eval_step, params, data, config.eval_batch_size, mesh)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_accuracy": accuracy,
            "epoch_seconds": seconds,
            "images_per_second": steps_per_epoch * config.batch_size / seconds,
        }
        if metrics["grad_checks"]:
            record["max_grad_rel_diff"] = max(
                max(c["max_rel_diff"].values()) for c in metrics["grad_checks"]
            )
        metrics["epochs"].append(record)
        log(
            f"epoch {epoch:3d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
            f"test acc {accuracy:.2%}  {record['images_per_second']:,.0f} img/s  "
            f"({seconds:.2f}s)"
        )
        state = TrainState(params, opt_state, step, epoch, state.key)
        save_checkpoint(checkpoint, state)
        _write_json(metrics_path, metrics)
    return state, metrics


def _eval_batches(data: Dataset, batch_size: int) -> list[tuple[np.ndarray, ...]]:
    """Every test image once, in fixed-size batches; the last is padded and masked."""
    n = len(data.test_labels)
    batches = []
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


def _write_json(path: Path, payload: dict) -> None:
    """Atomic JSON write."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
