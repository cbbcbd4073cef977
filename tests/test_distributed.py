"""The demo on several devices and processes, as a user runs it: `--distributed` processes on
127.0.0.1, and one process with 4 forced host devices, each end where a 1-device, 1-process run
of the same global batches with XLA's convolution ends; process 1 writes nothing (not even the
lock), and reads the checkpoint on --resume.

Every run is `python -m jaxconv.demo` on sklearn's digits (offline; the IDX loaders insist on
MNIST's full 60,000 + 10,000 images), 2 epochs of 3 steps of 32 images: each launch costs
seconds of imports and compilation (at XLA's FAST_BACKEND_XLA_FLAG), so the runs are few.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FAST_BACKEND_XLA_FLAG

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["checkpoint.npz", "curves.png", "filters.png", "metrics.json"]
FLAGS = ["--epochs", "2", "--max-steps", "3", "--batch-size", "32", "--no-progress"]
TIMEOUT = 240

# Imported at startup by every child (PYTHONPATH): records, through Python's audit hooks,
# every file the process opens (for writing or reading), renames, removes or creates, and
# every flock, as "event<TAB>absolute path" lines in $FILE_LOG: the test's own account of
# what each process did to the run directory, independent of the demo's code.
_SITECUSTOMIZE = r"""
import os, sys

_path = os.environ.get("FILE_LOG")
if _path:
    _log = open(_path, "a", buffering=1)
    _WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def _record(event, path):
        if isinstance(path, (str, bytes, os.PathLike)):
            _log.write(f"{event}\t{os.path.abspath(os.fsdecode(path))}\n")

    def _hook(event, args):
        if event == "open":
            _record("write" if args[2] & _WRITES else "read", args[0])
        elif event == "os.rename":
            _record("rename", args[0])
            _record("rename", args[1])
        elif event in ("os.remove", "os.mkdir", "os.rmdir"):
            _record(event, args[0])
        elif event == "fcntl.flock":
            _record("flock", os.readlink(f"/proc/self/fd/{args[0]}"))

    sys.addaudithook(_hook)
"""


@pytest.fixture(scope="session")
def hooks(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hooks")
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return directory


def _env(hooks: Path, devices: int, file_log: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_BACKEND_XLA_FLAG}",
        "PYTHONPATH": path,
        "FILE_LOG": str(file_log),
    }


def _demo(argv, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxconv.demo", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Waits for every process (killing all if one outlives TIMEOUT); (status, out, err)."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def _succeeded(result, what: str) -> str:
    status, out, err = result
    assert status == 0, f"{what} exited {status}:\n{out}\n{err[-4000:]}"
    return out


def _events(log: Path, under: Path) -> list[tuple[str, str]]:
    """The events of `log` on `under` or anything in it, in order."""
    events = [line.split("\t", 1) for line in log.read_text().splitlines()]
    root = str(under.resolve())
    return [(e, p) for e, p in events if p == root or p.startswith(root + os.sep)]


def _changes(log: Path, under: Path) -> list[tuple[str, str]]:
    """The events of `log` on `under` that are not reads."""
    return [(e, p) for e, p in _events(log, under) if e != "read"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def _assert_same_run(got_dir: Path, want_dir: Path, devices: int) -> None:
    """The two runs' checkpoints hold the same entries, floats within 1e-5 relative (the
    gradient's all-reduce sums in another order), integers exactly; the same losses."""
    got, want = _npz(got_dir / "checkpoint.npz"), _npz(want_dir / "checkpoint.npz")
    assert sorted(got) == sorted(want)
    for name in want.keys() - {"record"}:
        a, b = got[name], want[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if b.dtype.kind == "f":
            scale = max(float(np.max(np.abs(b))), np.finfo(b.dtype).tiny)
            assert float(np.max(np.abs(a - b))) / scale <= 1e-5, name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    record = json.loads(got["record"].tobytes())["metrics"]
    reference = json.loads(want["record"].tobytes())["metrics"]
    assert record["devices"] == devices and reference["devices"] == 1
    assert [r["epoch"] for r in record["epochs"]] == [1, 2]
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose(
            [r[key] for r in record["epochs"]],
            [r[key] for r in reference["epochs"]],
            rtol=1e-5,
            err_msg=key,
        )


def _reference_run(out: Path, hooks: Path) -> None:
    env = _env(hooks, 1, out.parent / "files.log")
    result = _finish([_demo([*FLAGS, "--impl", "lax", "--out", str(out)], env)])[0]
    _succeeded(result, "the 1-device run")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, worker_id, hooks) -> Path:
    """A 1-device, 1-process run with XLA's convolution: what every other run must reproduce
    (jaxconv's convolution agrees with it to ~1e-6 after these steps). Made once per session,
    shared by pytest-xdist's workers through their common temporary directory."""
    if worker_id == "master":
        out = tmp_path_factory.mktemp("reference") / "run"
        _reference_run(out, hooks)
        return out
    shared = tmp_path_factory.getbasetemp().parent
    out = shared / "demo-reference" / "run"
    with open(shared / "demo-reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker runs it, the others wait for it
        if not (out / "checkpoint.npz").exists():
            out.parent.mkdir(exist_ok=True)
            _reference_run(out, hooks)
    return out


def _distributed(out: Path, impl: str, devices: int, logs: list[Path], hooks, *extra):
    """Runs 2 --distributed processes of `devices` devices each; their stdout."""
    port = _free_port()
    flags = [*FLAGS, "--impl", impl, "--out", str(out), *extra, "--distributed"]
    flags += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    processes = [
        _demo([*flags, "--process-id", str(i)], _env(hooks, devices, logs[i])) for i in range(2)
    ]
    results = _finish(processes)
    return [_succeeded(r, f"process {i}") for i, r in enumerate(results)]


@pytest.mark.parametrize(
    "impl, devices, resume",
    [("lax", 1, True), ("jaxconv", 2, False)],
    ids=["lax-1-device-each-then-resumed", "jaxconv-2-devices-each"],
)
def test_two_processes_end_where_one_does_and_process_1_writes_nothing(
    tmp_path, hooks, reference, impl, devices, resume
):
    out = tmp_path / "run"  # both processes are given it, as on a shared filesystem
    logs = [tmp_path / f"files-{i}.log" for i in range(2)]
    if resume:  # epoch 1, then epoch 2 by --resume: every process reads the checkpoint
        _distributed(out, impl, devices, logs, hooks, "--epochs", "1")
        first = [len(log.read_text().splitlines()) for log in logs]
        stdout = _distributed(out, impl, devices, logs, hooks, "--resume")
        resumed = [log.read_text().splitlines()[n:] for log, n in zip(logs, first)]
        for lines in resumed:
            assert f"read\t{(out / 'checkpoint.npz').resolve()}" in lines
        assert "resumed from" in stdout[0]
    else:
        stdout = _distributed(out, impl, devices, logs, hooks)
    assert f"devices: {2 * devices} × cpu in 2 processes" in stdout[0]
    assert "epoch   2" in stdout[0] and "epoch" not in stdout[1]
    assert stdout[1].strip().splitlines()[-1] == f"process 1 of 2: done; process 0 wrote {out}/"
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    _assert_same_run(out, reference, devices=2 * devices)
    # Process 0 locked --out and wrote every file (the hook sees them) ...
    changes = _changes(logs[0], out)
    assert ("flock", str(out.resolve())) in changes
    for name in RUN_FILES:
        assert ("rename", str((out / name).resolve())) in changes, name
    # ... process 1 neither locked, created, wrote, renamed nor removed anything there.
    assert _changes(logs[1], out) == []


# jaxconv on several devices of one process: the 2-devices-each case above.
def test_four_host_devices_end_where_one_does(tmp_path, hooks, reference):
    out = tmp_path / "run"
    env = _env(hooks, 4, tmp_path / "files.log")
    result = _finish([_demo([*FLAGS, "--impl", "lax", "--out", str(out)], env)])[0]
    assert "devices: 4 × cpu; compile" in _succeeded(result, "the 4-device run")
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    _assert_same_run(out, reference, devices=4)
