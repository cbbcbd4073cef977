"""Smoke tests of the benchmark scripts: they run, check correctness, and report targets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_bench_conv_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "conv.json"
    result = _load("bench_conv").main(
        [
            "--workloads",
            "A",
            "--layouts",
            "NHWC",
            "--passes",
            "fwd+bwd",
            "--repeats",
            "2",
            "--gemm-size",
            "256",
            "--json",
            str(out),
        ]
    )
    impls = {row["impl"] for row in result["rows"]}
    assert {"jaxconv", "lax"} <= impls
    assert all(row["median_ms"] > 0 and row["gflops"] > 0 for row in result["rows"])
    assert json.loads(out.read_text())["meta"]["gemm_ceiling_gflops"] > 0
    text = capsys.readouterr().out
    assert "×lax" in text and "Targets:" in text and "WRONG" not in text
    assert any(t["target"].startswith("A NHWC fwd+bwd ≤ 1.0× lax") for t in result["targets"])


def test_bench_train_runs(tmp_path):
    result = _load("bench_train").main(["--steps", "2", "--batch-size", "8", "--no-torch"])
    assert set(result["impls"]) == {"jaxconv", "lax"}
    assert result["jaxconv_over_lax"] > 0
