"""Test configuration: float64 on, hypothesis profiles, the slow tests first.

Float64 is enabled for the whole test process so the rules can be checked to 1e-10;
library and demo code therefore always states its dtypes explicitly.
"""

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


def pytest_collection_modifyitems(items):
    # Longest first: pytest-xdist hands tests out in this order, and a long test handed out
    # last keeps one worker busy after the others have finished. `-m "not slow"` skips them.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
