"""Smoke tests of the benchmark scripts: they run, check correctness, and report targets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    if str(ROOT / "benchmarks") not in sys.path:  # as when run: bench_gemms imports bench_conv
        sys.path.insert(0, str(ROOT / "benchmarks"))
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


def test_compare_programs_builds_the_old_versions_gradient_programs():
    # The old version's ∂L/∂X and ∂L/∂W programs must call its own gradient functions, also
    # when they are first traced after the comparison has swapped the new version back in.
    import types

    import jax.numpy as jnp

    import jaxconv

    compare = _load("compare_programs")
    calls = []

    def recorded(name, fn):
        def call(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return call

    old = types.SimpleNamespace(
        conv2d=jaxconv.conv2d,
        conv2d_grad_input=recorded("dX", jaxconv.conv2d_grad_input),
        conv2d_grad_kernel=recorded("dW", jaxconv.conv2d_grad_kernel),
    )
    x, w = jnp.ones((2, 3, 6, 6)), jnp.ones((4, 3, 3, 3))
    programs = compare._old_programs(old, x, w, dict(layout="NCHW"))
    for name in ("dX", "dW"):
        fn, args = programs[name]
        fn(*args)
    assert calls == ["dX", "dW"]


def test_program_dots_counts_each_dot_by_its_loops_trip_count():
    import jax
    import jax.numpy as jnp

    dots = _load("bench_gemms").program_dots

    def f(a, b):
        inner = lambda c, _: (c @ b, None)  # noqa: E731  a (3, 4)·(4, 4) product per step
        return jax.lax.scan(lambda c, _: jax.lax.scan(inner, c, None, 5), a, None, 2)[0] @ b.T

    found = list(dots(jax.make_jaxpr(jax.jit(f))(jnp.ones((3, 4)), jnp.ones((4, 4))).jaxpr))
    assert sorted(d.times for d in found) == [1, 10]
    assert sum(d.flops for d in found) == 10 * 2 * 3 * 4 * 4 + 2 * 3 * 4 * 4


def test_bench_gemms_finds_the_winograd_gemms_and_times_them(monkeypatch, capsys):
    gemms = _load("bench_gemms")
    # 4 images 10×10, 16 -> 8 channels: one chunk, 4·4·4 = 64 tiles of 2×2 outputs.
    workloads = sys.modules["bench_conv"].WORKLOADS  # the module bench_gemms imported
    monkeypatch.setitem(workloads, "T", ((4, 16, 10, 10), (8, 16, 3, 3), dict()))
    args = ["--workloads", "T", "--layouts", "NHWC", "--passes", "fwd", "--repeats", "2"]
    result = gemms.main([*args, "--gemm-size", "128", "--no-torch"])
    rows = {r["impl"]: r for r in result["rows"]}
    assert set(rows) == {"jaxconv", "GEMMs alone", "lax"}
    assert all(r["median_ms"] > 0 for r in rows.values())
    # The 16 products (tiles, C)·(C, O) of F(2×2, 3×3), found in jaxconv's own program.
    import jax
    import jax.numpy as jnp

    x, w = jnp.ones((4, 10, 10, 16)), jnp.ones((3, 3, 16, 8))
    jaxpr = jax.make_jaxpr(lambda x, w: gemms.jaxconv.conv2d(x, w, layout="NHWC"))(x, w)
    shapes = [tuple(v.aval.shape for v in d.eqn.invars) for d in gemms.program_dots(jaxpr.jaxpr)]
    assert shapes.count(((64, 16), (16, 8))) == 16
    assert "GEMMs alone" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_networks_quick_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "networks.json"
    # No PyTorch here: its eager backward, run inside a test worker beside JAX, once hung in
    # an OpenMP barrier and once segfaulted (torch 2.13 CPU). Standalone runs time it.
    argv = ["--quick", "--no-torch", "--json", str(out)]
    result = _load("bench_networks").main(argv)
    assert set(result["networks"]) == {"resnet18", "mobilenetv2"}
    for r in result["networks"].values():
        assert all(r["check"]["ok"].values()) and r["check"]["grad_rel_err"] <= 1e-9
        assert set(r["check"]["loss"]) == {"jaxconv", "lax"}  # --no-torch: no PyTorch at all
        assert {"jaxconv", "lax"} <= set(r["steps"]) and all(
            s["min"] <= s["median"] <= s["max"] for s in r["steps"].values()
        )
        # The first step's float32 loss, at the same parameters and batch, agrees.
        assert all(e <= 1e-5 for e in r["first_step"]["rel_err"].values())
        for c in r["compile"].values():
            assert len(c["total_s"]) == 1 and c["total_s"][0] >= c["compile_s"][0] > 0
            assert c["temp_bytes"] > 0 and c["hlo_ops"] >= c["fusions"] > 0
            # The counts by layer kind add up to the program's; every layer has its scope.
            layers = c["layers"]
            assert sum(v["instructions"] for v in layers.values()) == c["hlo_ops"]
            assert sum(v["fusions"] for v in layers.values()) == c["fusions"]
            assert any(k.startswith("3x3_") for k in layers) and any("_s2_" in k for k in layers)
        forms = r["compile"]["jaxconv"]["forms"]
        assert sum(v["instructions"] for v in forms.values()) == r["compile"]["jaxconv"]["hlo_ops"]
        assert {k.split()[0] for k in forms} >= {"forward", "grad_input", "grad_kernel"}
        assert set(r["compile"]["lax"]["forms"]) == {"outside any scope"}  # no jaxconv there
    assert set(result["demo"]) == {"jaxconv", "lax"}
    assert any(k.startswith("forward ") for k in result["demo"]["jaxconv"]["forms"])
    names = {t["target"] for t in result["targets"]}
    assert {"resnet18 steps/s ≥ 1.0× lax", "demo step compile time ≤ 1.5× lax"} <= names
    assert "mobilenetv2 temporary memory ≤ 1.0× lax" in names
    saved = json.loads(out.read_text())
    assert saved["meta"]["jax"] and saved["meta"]["date"] and saved["meta"]["batch_size"] == 8
    text = capsys.readouterr().out
    assert "Targets:" in text and "steps/s ×lax" in text and "WRONG" not in text
    assert "by layer kind" in text and "by pass and form" in text


@pytest.mark.slow
def test_bench_layers_quick_runs_and_reports(tmp_path, capsys):
    import jax
    import numpy as np

    layers = _load("bench_layers")
    # No PyTorch here: on an AMD EPYC, torch 2.13 CPU's channels-last ∂L/∂W of the quick
    # networks' 1×1 stride-2 layer came out wrong (relative error 0.8), hung, or segfaulted.
    # test_bench_layers_times_pytorch_after_checking_it runs its path on a 3×3 layer.
    out = tmp_path / "layers.json"
    result = layers.main(["--quick", "--no-torch", "--json", str(out)])
    impls = {"jaxconv", "lax"}
    text = capsys.readouterr().out
    assert set(result["networks"]) == {"resnet18", "mobilenetv2"}
    for name, r in result["networks"].items():
        # Independently of the recorder: every convolution has a kernel of its own, used once.
        net = layers.bench_networks.build_network(name, quick=True)
        kernels = [a.shape for a in jax.tree_util.tree_leaves(net.params) if np.ndim(a) == 4]
        assert r["conv_calls"] == len(kernels) == sum(k["count"] for k in r["kinds"])
        found = [tuple(k["w_shape"]) for k in r["kinds"] for _ in range(k["count"])]
        assert sorted(found) == sorted(kernels)
        assert len({k["kind"] for k in r["kinds"]}) == len(r["kinds"])
        for k in r["kinds"]:
            assert set(k["ms"]) == impls and all(k["ok"].values())
            assert all(e <= 1e-4 for e in k["rel_err"].values())
            assert all(0 < s["min"] <= s["median"] <= s["max"] for s in k["ms"].values())
            for impl, s in k["ms"].items():
                assert k["ms_per_step"][impl] == pytest.approx(k["count"] * s["median"])
            assert f"  {k['kind']} " in text
        per_step = [k["ms_per_step"]["jaxconv"] for k in r["kinds"]]
        assert per_step == sorted(per_step, reverse=True)
        for impl in impls:
            total = sum(k["ms_per_step"][impl] for k in r["kinds"])
            assert r["total_ms_per_step"][impl] == pytest.approx(total)
        assert set(r["steps_ms"]) == {"jaxconv", "lax"}
        for impl, s in r["steps_ms"].items():
            rest = s["median"] - r["total_ms_per_step"][impl]
            assert r["rest_ms"][impl] == pytest.approx(rest)
    kinds = {k["kind"] for r in result["networks"].values() for k in r["kinds"]}
    assert "3x3_4to8_s2_g1_32px" in kinds and "3x3_8to8_s2_g8_32px" in kinds  # depthwise
    assert json.loads(out.read_text())["meta"]["batch_size"] == 8
    assert "total (Σ over kinds)" in text and "rest of the step (not convolutions)" in text
    assert "WRONG" not in text


def test_bench_layers_times_pytorch_after_checking_it():
    pytest.importorskip("torch")
    layers = _load("bench_layers")
    args = layers.parse_args(["--quick", "--repeats", "2", "--warm", "0"])
    measured = layers.measure_kind(((2, 8, 8, 3), (3, 3, 3, 4), 1, 1), "3x3_3to4", args)
    assert set(measured["ms"]) == {"jaxconv", "lax", "torch"} and all(measured["ok"].values())
    assert measured["rel_err"]["torch"] <= layers.CHECK_RTOL


def test_network_models_with_jaxconv_and_xla_agree_on_one_step():
    # The same ResNet, float64, at the same parameters and batch: jaxconv's convolutions
    # against XLA's (lax.conv_general_dilated with autodiff), loss and every gradient.
    import jax
    import jax.numpy as jnp
    import numpy as np

    bench = _load("bench_networks")
    net = bench.build_network("resnet18", quick=True)
    images, labels = bench.batch(4, 32, seed=2)
    with jax.enable_x64(True):
        x, y = jnp.asarray(images, jnp.float64), jnp.asarray(labels)
        loss, grads = bench.one_step_gradients(net, bench.jaxconv_conv, x, y)
        ref_loss, ref_grads = bench.one_step_gradients(net, bench.xla_conv, x, y)
        got = jax.tree_util.tree_leaves(grads)
        expected = jax.tree_util.tree_leaves(ref_grads)
        assert got and all(g.dtype == jnp.float64 for g in got)
        scale = max(float(jnp.max(jnp.abs(e))) for e in expected)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-12)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-9, atol=1e-12 * scale)


def test_bench_conv_runs_every_rank_transposed_and_complex(monkeypatch, capsys):
    conv = _load("bench_conv")
    # Small stand-ins for K–P: a 1-D depthwise causal conv, a 3-D transposed conv (with its
    # compile time), a complex 2-D conv.
    monkeypatch.setitem(
        conv.WORKLOADS, "T", ((2, 4, 32), (4, 1, 4), dict(groups=4, padding=((3, 0),)))
    )
    monkeypatch.setitem(
        conv.WORKLOADS, "U", ((1, 4, 4, 4, 4), (4, 2, 3, 3, 3), dict(stride=2), "transpose")
    )
    monkeypatch.setitem(
        conv.WORKLOADS, "V", ((2, 3, 8, 8), (4, 3, 3, 3), dict(padding="SAME"), "conv", "complex64")
    )
    args = ["--workloads", "TUV", "--compile-workloads", "U", "--passes", "fwd,fwd+bwd"]
    args += ["--repeats", "2", "--gemm-size", "128"]
    result = conv.main(args)
    layouts = {(r["workload"], r["layout"]) for r in result["rows"]}
    assert layouts == {
        ("T", "NCW"),
        ("T", "NWC"),
        ("U", "NCDHW"),
        ("U", "NDHWC"),
        ("V", "NCHW"),
        ("V", "NHWC"),
    }
    impls = {(r["workload"], r["impl"]) for r in result["rows"]}
    torch_present = importlib.util.find_spec("torch") is not None
    assert ("T", "torch") in impls if torch_present else ("T", "torch") not in impls
    assert ("V", "torch") not in impls  # complex: XLA's complex convolution only
    assert set(result["compile"]) == {"U NCDHW", "U NDHWC"}
    for stats in result["compile"].values():
        assert stats["jaxconv"]["total_s"][0] > 0 and stats["lax"]["hlo_ops"] > 0
    names = {t["target"] for t in result["targets"]}
    assert "U NDHWC fwd+bwd compile ≤ 2.0× lax" in names and "V NCHW fwd+bwd ≤ 1.0× lax" in names
    assert "WRONG" not in capsys.readouterr().out
