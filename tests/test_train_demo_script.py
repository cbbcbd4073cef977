"""train_demo.py end to end, in-process and as a user runs it: flags, one-line errors, file
modes, and a run killed at every write that resumes to the uninterrupted run's bits."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxconv.demo import data, storage

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["checkpoint.npz", "curves.png", "filters.png", "metrics.json"]


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo", ROOT / "train_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def umask_027():
    """Runs the test under umask 027, restoring the previous one after."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


@pytest.mark.parametrize("impl", ["jaxconv", "reference", "lax"])
def test_main_in_process(tmp_path, impl, umask_027):
    metrics = _load_script().main(
        [
            "--epochs",
            "2",
            "--max-steps",
            "4",
            "--out",
            str(tmp_path),
            "--impl",
            impl,
            "--no-progress",
        ]
    )
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    assert 0.0 <= metrics["epochs"][-1]["test_accuracy"] <= 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == RUN_FILES
    for name in RUN_FILES:
        path = tmp_path / name
        assert path.stat().st_size > 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, name  # 0o666 less the umask, all


@pytest.mark.slow
def test_script_as_a_user_runs_it(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "train_demo.py",
            "--epochs",
            "1",
            "--max-steps",
            "3",
            "--check-grads",
            "2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "epoch   1  train loss" in result.stdout
    assert "hand-derived vs automatic gradients: max relative difference" in result.stdout
    assert "final test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["check_grads"] == 2 and len(metrics["grad_checks"]) == 2
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_documents_every_flag():
    result = subprocess.run(
        [sys.executable, "train_demo.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    for flag in (
        "--dataset",
        "--data-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--out",
        "--impl",
        "--check-grads",
        "--resume",
        "--distributed",
        "--coordinator",
        "--num-processes",
        "--process-id",
    ):
        assert flag in result.stdout


def test_resume_needs_out():
    result = subprocess.run(
        [sys.executable, "train_demo.py", "--resume"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--resume needs --out" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
        (["--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
        (["--batch-size", "2.5"], "argument --batch-size: must be an integer, got '2.5'"),
        (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
        (["--lr", "-1"], "argument --lr: must be a finite number > 0, got -1"),
        (["--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
        (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
        (["--epochs", "-1"], "argument --epochs: must be an integer >= 1, got -1"),
        (["--seed", "-1"], "argument --seed: must be an integer in 0..4294967295, got -1"),
        (["--max-steps", "0"], "argument --max-steps: must be an integer >= 1, got 0"),
        (["--check-grads", "-2"], "argument --check-grads: must be an integer >= 0, got -2"),
        (
            ["--data-dir", "."],
            "--data-dir applies to --dataset mnist and fashion-mnist, not digits",
        ),
        (["--dataset", "mnist", "--data-dir", "nowhere"], "--data-dir nowhere is not a directory"),
        (["--out", "README.md"], "--out README.md is not a directory"),
        (["--coordinator", "10.0.0.1:1234"], "--coordinator needs --distributed"),
        (["--num-processes", "2"], "--num-processes needs --distributed"),
        (["--process-id", "1"], "--process-id needs --distributed"),
        (
            ["--distributed", "--coordinator", "10.0.0.1"],
            "argument --coordinator: must be HOST:PORT with a port in 1..65535 (the address of "
            "process 0), got '10.0.0.1'",
        ),
        (
            ["--distributed", "--coordinator", "host:70000"],
            "argument --coordinator: must be HOST:PORT with a port in 1..65535 (the address of "
            "process 0), got 'host:70000'",
        ),
        (
            ["--distributed", "--num-processes", "0"],
            "argument --num-processes: must be an integer >= 1, got 0",
        ),
        (
            ["--distributed", "--process-id", "-1"],
            "argument --process-id: must be an integer >= 0, got -1",
        ),
        (
            ["--distributed", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 must be less than --num-processes 2 (processes are numbered 0..N-1)",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        _load_script().parse_args(flags)
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0].startswith("usage: train_demo.py") and err[-1] == f"train_demo.py: error: {message}"
    )


def _main_fails(argv, capsys) -> str:
    """Runs main, which must exit 1 with one line on stderr; returns that line."""
    with pytest.raises(SystemExit) as info:
        _load_script().main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("train_demo.py: error: "), err
    return err[0]


_SMALL = ["--epochs", "1", "--max-steps", "2", "--impl", "lax", "--no-progress"]


def test_resume_without_a_checkpoint_fails_and_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "rnus" / "digits"
    line = _main_fails([*_SMALL, "--resume", "--out", str(typo)], capsys)
    assert f"--resume: {typo} does not exist; there is nothing to resume" in line
    assert not (tmp_path / "rnus").exists()


def test_resume_with_other_flags_and_damaged_checkpoints_fail_readably(tmp_path, capsys):
    out = tmp_path / "run"
    _load_script().main([*_SMALL, "--out", str(out)])
    capsys.readouterr()
    line = _main_fails(
        [*_SMALL, "--resume", "--out", str(out), "--lr", "0.1", "--seed", "3"], capsys
    )
    assert "--lr 0.003 there, 0.1 here; --seed 0 there, 3 here (only --epochs may change)" in line
    line = _main_fails([*_SMALL, "--out", str(out)], capsys)  # a fresh run over it
    assert f"{out} already holds a run (checkpoint.npz); pass --resume" in line
    with storage.locked_dir(out, create=False):
        line = _main_fails([*_SMALL, "--resume", "--out", str(out)], capsys)
    assert f"{out} is in use by another run" in line
    checkpoint = out / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    line = _main_fails([*_SMALL, "--resume", "--out", str(out)], capsys)
    assert f"{checkpoint}: truncated or corrupt checkpoint" in line


def test_an_incomplete_data_dir_names_the_missing_file_and_creates_no_run(tmp_path, capsys):
    data_dir = tmp_path / "idx"
    data_dir.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (data_dir / (name + ".gz")).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\0"))
    out = tmp_path / "run"
    argv = ["--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(out), "--no-progress"]
    line = _main_fails(argv, capsys)
    assert line == (
        f"train_demo.py: error: data_dir {data_dir} lacks t10k-labels-idx1-ubyte.gz "
        "(or t10k-labels-idx1-ubyte); it must hold all four mnist files."
    )
    assert not out.exists()  # the run directory comes after the data


def test_distributed_without_a_coordinator_fails_in_one_line(tmp_path):
    # Nothing to detect (no cluster environment, no JAX_COORDINATOR_ADDRESS): JAX's own error,
    # with what to give instead; before any file is made.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_"))}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train_demo.py", "--distributed", "--out", str(out)],
        cwd=ROOT,
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "train_demo.py: error: --distributed: jax.distributed.initialize() failed "
        "(coordinator_address should be defined.); give --coordinator, --num-processes and "
        "--process-id, or run under a cluster JAX detects.\n"
    )
    assert not out.exists()


def test_an_expected_failure_is_one_line_without_traceback(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "train_demo.py", "--resume", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"train_demo.py: error: {out / 'checkpoint.npz'}: empty file (0 bytes), not a checkpoint.\n"
    )


# --- Killed at every write, then resumed. ----------------------------------------------------

# The demo as a user runs it, SIGKILLed at one write: every file of a run is committed by
# os.replace, so the child wraps it and kills itself just before the first commit of NAME
# holding TAG (epochs recorded; "-" for a figure): the temporary file written, the old file
# still in place. sklearn's digits come from an .npz, to spare each child the sklearn import.
_KILLABLE_DEMO = r"""
import json, os, runpy, signal, sys
from pathlib import Path
import numpy as np
digits_npz, name, tag, *argv = sys.argv[1:]
real_replace = os.replace

def tag_of(tmp):
    if name == "metrics.json":
        return str(len(json.loads(Path(tmp).read_text())["epochs"]))
    if name == "checkpoint.npz":
        with np.load(tmp) as f:
            return str(int(f["epoch"]))
    return "-"

def replace(src, dst, *args, **kwargs):
    if Path(dst).name == name and tag_of(src) == tag:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)

os.replace = replace
from jaxconv.demo import data
with np.load(digits_npz) as f:
    digits = data.Dataset(**{k: f[k] for k in f.files}, num_classes=10, name="digits")
data.load_digits_dataset = lambda seed=0, test_fraction=0.2: digits
sys.argv = ["train_demo.py", *argv]
runpy.run_path("train_demo.py", run_name="__main__")
"""

# Every write of a 2-epoch run, in the order an uninterrupted run makes them. A kill just
# after one write leaves the files a kill just before the next leaves (less its temporary
# file), and one after the last leaves a finished run: these six reach every state.
_WRITES = [
    ("checkpoint.npz", "1"),
    ("metrics.json", "1"),
    ("checkpoint.npz", "2"),
    ("metrics.json", "2"),
    ("curves.png", "-"),
    ("filters.png", "-"),
]
_TIMINGS = ("epoch_seconds", "images_per_second")


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def _record(path: Path) -> dict:
    return json.loads(_npz(path)["record"].tobytes())["metrics"]


@pytest.mark.slow
def test_killed_at_every_write_resume_ends_bit_identical(tmp_path):
    digits = data.load_digits_dataset(seed=0)
    arrays = ("train_images", "train_labels", "test_images", "test_labels")
    np.savez(tmp_path / "digits.npz", **{name: getattr(digits, name) for name in arrays})
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # Children share compiled programs (the same executables, so the same bits).
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    flags = ["--epochs", "2", "--max-steps", "2", "--impl", "lax", "--no-progress"]

    def demo(out, kill=("none", "-"), resume=False):
        argv = [*flags, "--out", str(out), *(["--resume"] if resume else [])]
        return subprocess.run(
            [sys.executable, "-c", _KILLABLE_DEMO, str(tmp_path / "digits.npz"), *kill, *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    reference = tmp_path / "reference"
    result = demo(reference)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "run"
    for write in _WRITES:
        # As a user would: --resume once a checkpoint exists, else start again.
        result = demo(out, write, resume=(out / "checkpoint.npz").exists())
        assert result.returncode == -signal.SIGKILL, (write, result.stdout, result.stderr)
        assert list(out.glob(f".{write[0]}.*")), write  # killed with a temporary written
    result = demo(out, resume=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # no leftovers

    want, got = _npz(reference / "checkpoint.npz"), _npz(out / "checkpoint.npz")
    assert sorted(got) == sorted(want)
    for name in want.keys() - {"record"}:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    metrics, expected = _record(out / "checkpoint.npz"), _record(reference / "checkpoint.npz")
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    for record, other in zip(metrics["epochs"], expected["epochs"]):
        assert {k: v for k, v in record.items() if k not in _TIMINGS} == {
            k: v for k, v in other.items() if k not in _TIMINGS
        }
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for figure in ("curves.png", "filters.png"):  # drawn from the same record and parameters
        assert (out / figure).read_bytes() == (reference / figure).read_bytes(), figure
