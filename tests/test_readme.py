"""Every code block in README.md runs.

Python blocks run as written, each in a fresh interpreter (default float32). Shell blocks: the
virtual-environment and install steps are what `.ci/run` itself executes on a fresh machine,
so here they are checked against it; the command each block ends with is run (the demo and
the audit shortened by extra flags), except the test command, which is this suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code.strip() for lang, code in BLOCKS if lang == "bash"]
ENV = {**os.environ, "JAX_ENABLE_X64": "0"}


def _run(args, **kwargs):
    return subprocess.run(
        args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, **kwargs
    )


# The "Use with Flax and Equinox" blocks, told apart by what they import.
FRAMEWORKS = {"flax": "from flax import nnx", "equinox": "import jaxconv.equinox"}


def _framework(code: str) -> str | None:
    return next((name for name, line in FRAMEWORKS.items() if line in code), None)


def test_readme_has_the_blocks_this_file_runs():
    assert len(PYTHON) == 5 and len(SHELL) == 3
    assert sorted(filter(None, map(_framework, PYTHON))) == ["equinox", "flax"]


def _check_commented_prints(code: str, stdout: str) -> None:
    """Each print's output is its comment, or a number below the bound a `< x` comment gives."""
    comments = re.findall(r"print\(.*\)  # (.*)", code)
    lines = stdout.strip().splitlines()
    assert len(lines) == len(comments), stdout
    for line, comment in zip(lines, comments):
        if comment.startswith("< "):
            assert 0 <= float(line) < float(comment[2:]), (line, comment)
        else:
            assert line == comment


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_blocks_run(index):
    result = _run([sys.executable, "-c", PYTHON[index]])
    assert result.returncode == 0, result.stderr
    if _framework(PYTHON[index]):  # shapes, and errors against the stock layers
        _check_commented_prints(PYTHON[index], result.stdout)
    elif index == 0:
        assert result.stdout.strip() == "(16, 3, 3, 3)"
    elif index == 1:
        assert float(result.stdout.strip()) < 1e-4
    else:  # the plans block prints what its comments say
        comments = re.findall(r"print\(.*\)  # (.*)", PYTHON[index])
        assert result.stdout.strip().splitlines() == comments


def _final_command(block: str) -> list[str]:
    return shlex.split(block.split("&&")[-1])


def test_install_steps_match_ci_and_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(extras["optional-dependencies"])
    ci = (ROOT / ".ci" / "run").read_text()
    for block in SHELL[:2]:
        assert block.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e")
        wanted = re.search(r'pip install -e "\.\[([\w,]+)\]"', block).group(1).split(",")
        assert set(wanted) <= extras
    demo, tests = SHELL[0], SHELL[1]
    assert 'pip install -e ".[demo]"' in demo
    # CI installs the same extras and runs exactly the README's test command.
    assert 'install --quiet -e ".[test,demo,torch]"' in ci
    assert 'pip install -e ".[test,demo,torch]"' in tests
    assert ci.strip().splitlines()[-1] == tests.split("&&")[-1].strip()


def test_demo_command_is_the_plain_script():
    # tests/test_train_demo_script.py runs `python train_demo.py` as a user would.
    assert _final_command(SHELL[0]) == ["python", "train_demo.py"]


def test_audit_command_runs(tmp_path):
    command = _final_command(SHELL[2])
    assert command[:3] == ["python", "-m", "jaxconv.check"]
    command[command.index("--n") + 1] = "2"  # the README's 500 takes minutes
    command[command.index("--plot") + 1] = str(tmp_path / "audit.png")
    result = _run([sys.executable, *command[1:]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"
    assert (tmp_path / "audit.png").exists()
