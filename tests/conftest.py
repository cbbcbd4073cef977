"""Test configuration: float64 on, hypothesis profiles, the slow tests first, and `--sample`.

Float64 is enabled for the whole test process so the rules can be checked to 1e-10;
library and demo code therefore always states its dtypes explicitly.

`--sample FRACTION` runs a fixed part of the suite: the first test of every module and about
FRACTION of the others, chosen by a checksum of their ids (the same on every run and every
xdist worker). CI runs the whole suite on the oldest supported jax and this sample on the
newest (.ci/run).
"""

import zlib

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 120 examples a sweep: each compiles its own programs, and the suite has a 10-minute budget
# on 2 cores. `pytest --hypothesis-profile thorough` draws 3000.
settings.register_profile("ci", max_examples=120, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=3000, **_common)
settings.register_profile("dev", max_examples=30, **_common)
settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption(
        "--sample",
        type=float,
        default=None,
        metavar="FRACTION",
        help="run the first test of every module and a fixed FRACTION (0-1) of the others",
    )


def sampled(nodeids: list[str], fraction: float) -> list[bool]:
    """Which of the tests `--sample fraction` keeps, in collection order."""
    seen, keep = set(), []
    for nodeid in nodeids:
        module = nodeid.split("::")[0]
        drawn = zlib.crc32(nodeid.encode()) % 10_000 < fraction * 10_000
        keep.append(module not in seen or drawn)
        seen.add(module)
    return keep


def pytest_collection_modifyitems(config, items):
    fraction = config.getoption("sample")
    if fraction is not None:
        keep = sampled([item.nodeid for item in items], fraction)
        config.hook.pytest_deselected(items=[i for i, k in zip(items, keep) if not k])
        items[:] = [i for i, k in zip(items, keep) if k]
    # Longest first: pytest-xdist hands tests out in this order, and a long test handed out
    # last keeps one worker busy after the others have finished. `-m "not slow"` skips them.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
