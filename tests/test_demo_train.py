"""The demo's training loop: determinism, exact resume, the run's record and its checks,
gradient checks, the donating step. Several devices and processes: tests/test_distributed.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from jaxconv.demo import data, model, storage, train


@pytest.fixture(scope="module")
def digits():
    return data.load_digits_dataset(seed=0)


def _run(digits, out, epochs, resume=False, **kwargs):
    config = train.TrainConfig(**{"epochs": epochs, "batch_size": 64, "max_steps": 6, **kwargs})
    return train.train(config, digits, out, resume=resume, progress=False, log=lambda s: None)


def _leaves(state):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves((state.params, state.opt_state))]


@pytest.mark.slow
def test_resume_is_bit_identical(digits, tmp_path):
    full, full_metrics = _run(digits, tmp_path / "full", epochs=3)
    _run(digits, tmp_path / "split", epochs=1)
    resumed, metrics = _run(digits, tmp_path / "split", epochs=3, resume=True)
    assert resumed.step == full.step == 18 and resumed.epoch == 3
    for a, b in zip(_leaves(resumed), _leaves(full)):
        np.testing.assert_array_equal(a, b)
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]
    assert [r["train_loss"] for r in metrics["epochs"]] == [
        r["train_loss"] for r in full_metrics["epochs"]
    ]
    # metrics.json states the settings of the run it records, --epochs grown included.
    saved = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert saved["config"]["epochs"] == 3 and saved["epochs"] == metrics["epochs"]


@pytest.mark.slow
def test_same_seed_same_result_other_seed_differs(digits, tmp_path):
    a, _ = _run(digits, tmp_path / "a", epochs=1)
    b, _ = _run(digits, tmp_path / "b", epochs=1)
    c, _ = _run(digits, tmp_path / "c", epochs=1, seed=1)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_leaves(a)[0], _leaves(c)[0])


def test_checkpoint_is_written_atomically_and_validated(digits, tmp_path):
    state, metrics = _run(digits, tmp_path, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.json"]
    loaded, record = train.load_checkpoint(tmp_path / "checkpoint.npz", state)
    for x, y in zip(_leaves(loaded), _leaves(state)):
        np.testing.assert_array_equal(x, y)
    # The checkpoint carries the whole record; metrics.json is a copy of it.
    assert record == metrics == json.loads((tmp_path / "metrics.json").read_text())
    other = train.init_state(train.TrainConfig(), 28, 10)
    # The 28×28 model has a hidden layer, and Adam two moments of each of its arrays.
    hidden = [
        f"{tree}['hidden']['{p}']"
        for tree in ("params", "opt_state[0].mu", "opt_state[0].nu")
        for p in "bw"
    ]
    with pytest.raises(train.CheckpointError) as info:
        train.load_checkpoint(tmp_path / "checkpoint.npz", other)
    assert str(info.value) == (
        f"{tmp_path / 'checkpoint.npz'}: does not match this model and optimizer: it lacks "
        f"{', '.join(hidden)}."
    )


# Written out, not derived from the code under test: the names a reader of the file sees.
_ENTRIES_8X8 = [
    *(f"params['{layer}']['{p}']" for layer in ("conv1", "conv2", "out") for p in "bw"),
    "opt_state[0].count",
    *(
        f"opt_state[0].{moment}['{layer}']['{p}']"
        for moment in ("mu", "nu")
        for layer in ("conv1", "conv2", "out")
        for p in "bw"
    ),
]


def test_checkpoint_names_its_entries_by_tree_path(digits, tmp_path):
    state, _ = _run(digits, tmp_path, epochs=1, impl="lax")
    entries = _entries(tmp_path / "checkpoint.npz")
    assert sorted(entries) == sorted([*_ENTRIES_8X8, "epoch", "key", "record", "step"])
    adam = state.opt_state[0]
    for name, leaf in [
        ("params['conv1']['w']", state.params["conv1"]["w"]),
        ("params['out']['b']", state.params["out"]["b"]),
        ("opt_state[0].mu['conv2']['w']", adam.mu["conv2"]["w"]),
        ("opt_state[0].nu['out']['w']", adam.nu["out"]["w"]),
        ("opt_state[0].count", adam.count),
    ]:
        assert entries[name].dtype == leaf.dtype, name
        np.testing.assert_array_equal(entries[name], np.asarray(leaf), err_msg=name)
    assert int(entries["opt_state[0].count"]) == int(entries["step"]) == 6


def test_the_step_donates_params_and_opt_state(digits):
    mesh = train.make_mesh()
    optimizer = train.make_optimizer(3e-3)
    state = train.init_state(train.TrainConfig(), 8, 10)
    images, labels = digits.train_images[:64], digits.train_labels[:64]
    # Reference: the same update, unjitted, on the state's own arrays.
    grads = jax.grad(model.loss_fn)(state.params, images, labels, model.CONV_IMPLS["lax"])
    updates, _ = optimizer.update(grads, state.opt_state, state.params)
    want = optax.apply_updates(state.params, updates)
    params, opt_state = train.replicate(mesh, (state.params, state.opt_state))
    step = train.make_train_step(model.CONV_IMPLS["lax"], optimizer, mesh)
    with jax.set_mesh(mesh):
        new_params, _, _ = step(params, opt_state, *train.shard_batch(mesh, images, labels))
    donated = jax.tree_util.tree_leaves((params, opt_state))
    assert donated and all(leaf.is_deleted() for leaf in donated)
    # replicate() made fresh buffers: the state it was given is intact.
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state.params))
    for got, ref in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-7)


def test_live_gradient_check_is_small(digits, tmp_path):
    _, metrics = _run(digits, tmp_path, epochs=1, check_grads=2)
    assert [c["step"] for c in metrics["grad_checks"]] == [0, 2, 4]
    worst = max(max(c["max_rel_diff"].values()) for c in metrics["grad_checks"])
    assert 0.0 <= worst < 1e-4  # float32
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["grad_checks"] == metrics["grad_checks"]


def test_evaluation_counts_every_test_image(digits):
    batches = train._eval_batches(digits, 100)
    assert [len(b[0]) for b in batches] == [100] * 4
    assert sum(float(b[2].sum()) for b in batches) == len(digits.test_labels) == 360


def test_batch_size_must_divide_over_devices(digits, tmp_path, monkeypatch):
    config = train.TrainConfig(epochs=1, batch_size=63, eval_batch_size=500)
    monkeypatch.setattr(train, "make_mesh", lambda: _FakeMesh(4))
    with pytest.raises(ValueError, match=r"--batch-size \(63\) must be divisible .* \(4\)"):
        train.train(config, digits, tmp_path, progress=False)


class _FakeMesh:
    def __init__(self, n):
        self.devices = np.zeros(n)


# --- The run's record: settings, resume, one atomic state, damaged checkpoints. ---------------

_SMALL = dict(batch_size=64, max_steps=2, impl="lax")


@pytest.fixture(scope="module")
def finished_run(digits, tmp_path_factory):
    """A finished 2-epoch run; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    state, metrics = _run(digits, out, epochs=2, **_SMALL)
    return out, state, metrics


def _copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run[0], tmp_path / "run"))


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("batch_size", 0, ValueError, r"--batch-size must be >= 1, got 0"),
        ("batch_size", -1, ValueError, r"--batch-size must be >= 1, got -1"),
        ("batch_size", 1.5, TypeError, r"--batch-size must be an integer, got 1.5 \(float\)"),
        ("batch_size", 2000, ValueError, r"--batch-size 2000 exceeds the 1437 images"),
        ("epochs", 0, ValueError, r"--epochs must be >= 1, got 0"),
        ("epochs", -1, ValueError, r"--epochs must be >= 1"),
        ("epochs", True, TypeError, r"--epochs must be an integer, got True \(bool\)"),
        ("lr", float("nan"), ValueError, r"--lr must be a finite number > 0, got nan"),
        ("lr", float("inf"), ValueError, r"--lr must be a finite number > 0, got inf"),
        ("lr", -1.0, ValueError, r"--lr must be a finite number > 0, got -1.0"),
        ("lr", 0.0, ValueError, r"--lr must be a finite number > 0"),
        ("lr", "0.1", TypeError, r"--lr must be a number, got '0.1' \(str\)"),
        ("seed", -1, ValueError, r"--seed must be >= 0, got -1"),
        ("seed", 2**32, ValueError, r"--seed must be at most 2\*\*32 - 1"),
        ("check_grads", -1, ValueError, r"--check-grads must be >= 0"),
        ("max_steps", 0, ValueError, r"--max-steps must be >= 1, got 0"),
        ("eval_batch_size", 0, ValueError, r"--eval-batch-size must be >= 1"),
        ("impl", "xla", ValueError, r"--impl must be one of jaxconv, reference, lax; got 'xla'"),
        ("dataset", "mnist", ValueError, r"--dataset 'mnist', but the data given are 'digits'"),
    ],
)
def test_settings_are_checked_before_anything_runs(digits, tmp_path, field, value, error, message):
    config = dataclasses.replace(train.TrainConfig(epochs=1, **_SMALL), **{field: value})
    with pytest.raises(error, match=message):
        train.train(config, digits, tmp_path / "run", progress=False, log=lambda s: None)
    assert not (tmp_path / "run").exists()  # nothing created


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(batch_size=32), r"--batch-size 64 there, 32 here"),
        (dict(lr=0.01), r"--lr 0.003 there, 0.01 here"),
        (dict(seed=1), r"--seed 0 there, 1 here"),
        (dict(impl="jaxconv"), r"--impl 'lax' there, 'jaxconv' here"),
        (dict(max_steps=3), r"--max-steps 2 there, 3 here"),
        (dict(check_grads=2, seed=5), r"--seed 0 there, 5 here; --check-grads 0 there, 2 here"),
        (dict(epochs=1), r"--epochs 1 is fewer than the 2 epochs .*checkpoint.npz has finished"),
    ],
)
def test_resume_refuses_other_settings(digits, finished_run, tmp_path, changes, message):
    out = _copy(finished_run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    config = train.TrainConfig(**{"epochs": 3, **_SMALL, **changes})
    with pytest.raises(ValueError, match=message) as info:
        train.train(config, digits, out, resume=True, progress=False, log=lambda s: None)
    assert type(info.value).__name__ == "CheckpointError"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_refuses_other_data(digits, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    other = digits._replace(train_labels=np.roll(digits.train_labels, 1))
    config = train.TrainConfig(epochs=3, **_SMALL)
    with pytest.raises(ValueError, match=r"trained on other data \(sha256 '"):
        train.train(config, other, out, resume=True, progress=False, log=lambda s: None)


def test_resume_needs_a_checkpoint_and_a_fresh_run_needs_none(digits, finished_run, tmp_path):
    config = train.TrainConfig(epochs=2, **_SMALL)
    typo = tmp_path / "typo"
    with pytest.raises(ValueError, match=rf"{typo} does not exist; there is nothing"):
        train.train(config, digits, typo, resume=True, progress=False)
    assert not typo.exists()
    typo.mkdir()
    with pytest.raises(ValueError, match=r"checkpoint.npz does not exist: there is no"):
        train.train(config, digits, typo, resume=True, progress=False)
    out = _copy(finished_run, tmp_path)
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoint.npz\); pass --resume"):
        train.train(config, digits, out, progress=False)


@pytest.mark.parametrize("damage", ["missing", "stale"])
def test_resume_rebuilds_metrics_lost_between_the_two_writes(
    digits, finished_run, tmp_path, damage
):
    # The state a kill leaves after the checkpoint's write and before metrics.json's.
    out = _copy(finished_run, tmp_path)
    if damage == "missing":
        (out / "metrics.json").unlink()
    else:
        stale = json.loads((out / "metrics.json").read_text())
        stale["epochs"] = stale["epochs"][:1]
        (out / "metrics.json").write_text(json.dumps(stale))
    # A finished run's record is repaired without training...
    state, metrics = _run(digits, out, epochs=2, resume=True, **_SMALL)
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    assert json.loads((out / "metrics.json").read_text()) == finished_run[2]
    for x, y in zip(_leaves(state), _leaves(finished_run[1])):
        np.testing.assert_array_equal(x, y)
    # ...and a continued one records every epoch once.
    _, metrics = _run(digits, out, epochs=3, resume=True, **_SMALL)
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == metrics["epochs"]


def test_a_second_run_on_the_same_out_fails_fast(digits, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    config = train.TrainConfig(epochs=3, **_SMALL)
    busy = pytest.raises(storage.RunDirBusyError, match=rf"{out} is in use by another run")
    # The lock held as a run in another process holds it: flock excludes other open files.
    with storage.locked_dir(out, create=False), busy:
        train.train(config, digits, out, resume=True, progress=False)
    assert json.loads((out / "metrics.json").read_text()) == finished_run[2]


def test_leftovers_of_killed_writes_are_removed(digits, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    leftovers = [".checkpoint.npz.k2j4h1", ".metrics.json.0a1b2c3d.tmp", ".curves.png.ff.tmp"]
    for name in leftovers:
        (out / name).write_bytes(b"half a file")
    (out / "notes.txt").write_text("the user's")
    _run(digits, out, epochs=2, resume=True, **_SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "metrics.json", "notes.txt"]


def _entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def _flip_a_byte_of(path: Path, entry: str) -> bytes:
    """The file with one byte of `entry`'s stored data changed (npz entries are stored)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(entry + ".npy")
    header = 30 + len(info.filename) + len(info.extra)
    raw[info.header_offset + header + info.compress_size - 1] ^= 0xFF
    return bytes(raw)


def _damaged(path: Path, damage: str) -> None:
    """Rewrites the valid checkpoint at `path` with `damage`."""
    good = path.read_bytes()
    entries = _entries(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not-a-checkpoint":
        path.write_bytes(b"<html>Not Found</html>")
    elif damage == "flipped-byte":
        path.write_bytes(_flip_a_byte_of(path, "params['conv2']['w']"))
    else:
        if damage == "no-record":
            del entries["record"]
        elif damage == "wrong-dtype":
            entries["params['conv1']['w']"] = entries["params['conv1']['w']"].astype(np.float64)
        elif damage == "wrong-shape":
            entries["params['conv2']['b']"] = entries["params['conv2']['b']"][:1]
        elif damage == "extra-array":
            entries["params['extra']['w']"] = np.zeros(1, np.float32)
        elif damage == "missing-array":
            del entries["opt_state[0].nu['out']['w']"]
        elif damage == "missing-and-extra":
            entries["params['dense']['w']"] = entries.pop("params['out']['w']")
        elif damage == "old-format":
            # What format 2 wrote: the arrays as leaf_<i> in leaf order, format 2 in the record.
            arrays = [entries.pop(name) for name in _ENTRIES_8X8]
            entries.update({f"leaf_{i}": array for i, array in enumerate(arrays)})
            record = json.loads(entries["record"].tobytes())
            entries["record"] = np.frombuffer(
                json.dumps({**record, "format": 2}).encode(), np.uint8
            )
        elif damage == "epoch-not-recorded":
            entries["epoch"] = np.int64(3)
        elif damage == "bad-record":
            entries["record"] = np.frombuffer(b"{not json", np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **entries)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("empty", r"empty file \(0 bytes\), not a checkpoint"),
        ("truncated", r"truncated or corrupt checkpoint \(BadZipFile"),
        ("not-a-checkpoint", r"not a checkpoint \(starts with b'<htm'"),
        ("flipped-byte", r"truncated or corrupt checkpoint \(BadZipFile: Bad CRC-32"),
        ("no-record", r"checkpoint lacks the entry 'record'"),
        ("wrong-dtype", r"params\['conv1'\]\['w'\] is \(16, 1, 3, 3\) float64, expected "),
        ("wrong-shape", r"params\['conv2'\]\['b'\] is \(1,\) float32, expected \(32,\)"),
        (
            "extra-array",
            r"does not match this model and optimizer: it has unexpected entries "
            r"params\['extra'\]\['w'\]\.$",
        ),
        (
            "missing-array",
            r"does not match this model and optimizer: it lacks "
            r"opt_state\[0\]\.nu\['out'\]\['w'\]\.$",
        ),
        (
            "missing-and-extra",
            r"it lacks params\['out'\]\['w'\]; "
            r"it has unexpected entries params\['dense'\]\['w'\]\.$",
        ),
        ("old-format", r"an older checkpoint format \(format 2: arrays named leaf_0, leaf_1, "),
        ("epoch-not-recorded", r"the record lists epochs \[\], but the state is after epoch 3"),
        ("bad-record", r"unreadable run record \(JSONDecodeError"),
    ],
)
def test_a_damaged_checkpoint_is_named_and_explained(tmp_path, damage, message):
    config = train.TrainConfig(**_SMALL)
    state = train.init_state(config, 8, 10)
    path = tmp_path / "checkpoint.npz"
    metrics = {"config": dataclasses.asdict(config), "epochs": [], "grad_checks": []}
    train.save_checkpoint(path, state, metrics)
    _damaged(path, damage)
    with pytest.raises(train.CheckpointError, match=message) as info:
        train.load_checkpoint(path, state)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


# --- Several processes agreeing to start (the processes faked; tests/test_distributed.py runs
# real ones). ---------------------------------------------------------------------------------

_SHA = "ab" * 32


def _agree(monkeypatch, index: int, rows: list[tuple[bool, str]], error=None):
    """Runs _agree_to_start as process `index` of len(rows), whose allgather yields `rows`."""
    sent = []

    def allgather(mine):
        sent.append(np.asarray(mine))
        return np.stack(
            [
                np.concatenate([[ok], np.frombuffer(bytes.fromhex(sha), np.uint8)])
                for ok, sha in rows
            ]
        ).astype(np.uint8)

    monkeypatch.setattr(jax, "process_count", lambda: len(rows))
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(train.multihost_utils, "process_allgather", allgather)
    try:
        train._agree_to_start(error, rows[index][1])
    finally:
        # Every process takes part in the gather, the failed one too: its flag and digest.
        assert len(sent) == 1 and sent[0][0] == (error is None)
        assert sent[0][1:].tobytes().hex() == rows[index][1]


def test_processes_agree_to_start(monkeypatch):
    _agree(monkeypatch, 1, [(True, _SHA), (True, _SHA)])  # all well: returns


def test_a_process_that_cannot_start_stops_the_others(monkeypatch):
    busy = storage.RunDirBusyError("runs/x is in use by another run")
    with pytest.raises(storage.RunDirBusyError, match="in use by another run"):
        _agree(monkeypatch, 0, [(False, _SHA), (True, _SHA), (True, _SHA)], error=busy)
    with pytest.raises(
        train.PeerError,
        match=r"^process 0 could not start the run \(its own error says why\); process 2 stops",
    ):
        _agree(monkeypatch, 2, [(False, _SHA), (True, _SHA), (True, _SHA)])


def test_processes_with_other_data_refuse_to_start(monkeypatch):
    with pytest.raises(ValueError, match=r"^process 1, 3 loaded other data than process 0"):
        _agree(monkeypatch, 0, [(True, _SHA), (True, "cd" * 32), (True, _SHA), (True, "00" * 32)])
