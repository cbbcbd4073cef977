"""The `>>>` examples in the package's docstrings run and print what they claim.

They run in a subprocess: this test process has float64 enabled (conftest.py), while the
examples show the default float32 a user sees.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docstring_examples():
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--doctest-modules",
            "--rootdir",
            str(ROOT),
            str(ROOT / "jaxconv"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
