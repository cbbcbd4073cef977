"""evaluation/sharded.py and mesh.py: conv2d under jit with Auto and Explicit mesh axes,
shard_map and pmap on 4 forced host devices: the results of one device, and per-device work
that shrinks with the devices (HLO of the compiled programs, beside XLA's convolution).

Each test runs tests/sharding_probe.py once in a process of its own, since the device count
is fixed when JAX starts; it compiles with FAST_BACKEND_XLA_FLAG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FAST_BACKEND_XLA_FLAG

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("sharding_probe.py")
DEVICES = 4


def probe(group: str) -> dict:
    flags = f"--xla_force_host_platform_device_count={DEVICES} {FAST_BACKEND_XLA_FLAG}"
    env = dict(os.environ, XLA_FLAGS=flags)
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, str(PROBE), group], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_data_parallel_programs_split_the_work_and_gather_nothing():
    found = probe("data")
    assert found["devices"] == DEVICES
    cases = ("conv NCHW", "demo step")
    for case in cases:
        ours, xla = found[f"{case} jaxconv"], found[f"{case} xla"]
        assert ours["per_device_batch"]["trip_counts"], f"{case}: no chunk loops to check"
        for kind in ("auto", "explicit"):
            if "error" in ours[kind]:
                pytest.fail(f"{case} {kind}: {ours[kind]['error']}")
            where = f"{case}, {kind} axes"
            got = ours[kind]
            assert got["all_gathers"] == 0, f"{where}: {got}"
            assert got["collective_count"] <= xla[kind]["collective_count"], where
            # The chunk loops run as a program on the per-device batch alone runs them.
            assert got["trip_counts"] == ours["per_device_batch"]["trip_counts"], where
            assert got["trip_counts"] != ours["single"]["trip_counts"], where
            single = ours["single"]["contraction_flops"]
            assert got["contraction_flops"] <= 0.3 * single, f"{where}: {got}"
            assert xla[kind]["contraction_flops"] <= 0.3 * xla["single"]["contraction_flops"]


def test_tensor_parallel_kernels_need_no_more_collectives_than_xla():
    found = probe("tensor")
    for case, figures in found.items():
        ours, xla = figures["jaxconv"], figures["xla"]
        assert figures["max_rel_vs_xla"] <= 1e-5, case
        assert ours["all_gathers"] == 0, f"{case}: {ours}"
        assert ours["collective_count"] <= xla["collective_count"], case
        if case.endswith("explicit"):
            assert ours["collective_bytes"] <= xla["collective_bytes"], case
            assert ours["out_spec"] == xla["out_spec"], case
            assert ours["asked_replicated_spec"] == xla["asked_replicated_spec"], case
            assert "model" not in ours["asked_replicated_spec"], case


def test_every_placement_gives_the_one_device_result():
    found = probe("values")
    for case, differences in found.items():
        if isinstance(differences, float):
            assert differences <= 1e-5, case
            continue
        assert set(differences) == {
            "shard_map auto",
            "shard_map explicit",
            "jit auto",
            "jit explicit",
            "pmap",
        }
        for placement, difference in differences.items():
            assert difference <= 1e-5, f"{case} under {placement}: {difference}"
