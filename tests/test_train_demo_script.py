"""train_demo.py end to end, in-process and as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo", ROOT / "train_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("impl", ["jaxconv", "reference", "lax"])
def test_main_in_process(tmp_path, impl):
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
    for name in ("metrics.json", "curves.png", "filters.png", "checkpoint.npz"):
        assert (tmp_path / name).stat().st_size > 0


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
    ):
        assert flag in result.stdout


def test_resume_needs_out():
    result = subprocess.run(
        [sys.executable, "train_demo.py", "--resume"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--resume needs --out" in result.stderr
