"""The demo's training loop: determinism, exact resume, gradient checks, data parallelism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxconv.demo import data, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return data.load_digits_dataset(seed=0)


def _run(digits, out, epochs, resume=False, **kwargs):
    config = train.TrainConfig(epochs=epochs, batch_size=64, **kwargs)
    return train.train(
        config,
        digits,
        out,
        resume=resume,
        max_steps_per_epoch=6,
        progress=False,
        log=lambda s: None,
    )


def _leaves(state):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves((state.params, state.opt_state))]


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


def test_same_seed_same_result_other_seed_differs(digits, tmp_path):
    a, _ = _run(digits, tmp_path / "a", epochs=1)
    b, _ = _run(digits, tmp_path / "b", epochs=1)
    c, _ = _run(digits, tmp_path / "c", epochs=1, seed=1)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_leaves(a)[0], _leaves(c)[0])


def test_checkpoint_is_written_atomically_and_validated(digits, tmp_path):
    state, _ = _run(digits, tmp_path, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.json"]
    loaded = train.load_checkpoint(tmp_path / "checkpoint.npz", state)
    for x, y in zip(_leaves(loaded), _leaves(state)):
        np.testing.assert_array_equal(x, y)
    other = train.init_state(train.TrainConfig(), 28, 10)
    with pytest.raises(ValueError, match="does not match this model"):
        train.load_checkpoint(tmp_path / "checkpoint.npz", other)


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


_PARALLEL_SCRIPT = """
import json, sys
import jax
from jaxconv.demo import data, train
digits = data.load_digits_dataset(seed=0)
config = train.TrainConfig(epochs=2, batch_size=64, eval_batch_size=360)
_, metrics = train.train(config, digits, __import__("pathlib").Path(sys.argv[1]),
                         max_steps_per_epoch=5, progress=False, log=lambda s: None)
print(json.dumps({"devices": len(jax.devices()),
                  "losses": [r["train_loss"] for r in metrics["epochs"]]}))
"""


def test_data_parallel_matches_single_device(tmp_path):
    results = {}
    for devices in (1, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        env["JAX_PLATFORMS"] = "cpu"
        out = subprocess.run(
            [sys.executable, "-c", _PARALLEL_SCRIPT, str(tmp_path / str(devices))],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        results[devices] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results[4]["devices"] == 4 and results[1]["devices"] == 1
    np.testing.assert_allclose(results[4]["losses"], results[1]["losses"], rtol=0, atol=1e-5)
