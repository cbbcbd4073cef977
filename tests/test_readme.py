"""Every code block in README.md runs, and the README stays a short guide.

Python blocks run as written, each in a fresh interpreter (default float32). Shell blocks: the
install lines name extras pyproject.toml defines; the virtual-environment and install steps of
the two fresh-machine commands are what `.ci/run` itself executes on a fresh machine, so here
they are checked against it; the command each block ends with is run (the demo and the audit
shortened by extra flags), except the test command, which is this suite.
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


def _is_frameworks_block(code: str) -> bool:
    """The "Use with Flax and Equinox" block: it imports both."""
    return "from flax import nnx" in code and "import jaxconv.equinox" in code


def test_readme_has_the_blocks_this_file_runs():
    assert len(PYTHON) == 3 and len(SHELL) == 4
    assert sum(map(_is_frameworks_block, PYTHON)) == 1
    install, demo, tests, audit = SHELL
    assert install.startswith("pip install .") and "train_demo.py" in demo
    assert "pytest" in tests and "jaxconv.check" in audit


def test_readme_is_short_and_links_the_docs():
    assert len(README.splitlines()) <= 175
    for page in ("docs/usage.md", "docs/api.md", "docs/demo.md", "docs/derivation.md"):
        assert f"]({page})" in README, page
    assert "](docs/performance.md)" in README and "](LICENSE)" in README


def test_install_block_names_real_extras():
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    lines = [shlex.split(line, comments=True) for line in SHELL[0].splitlines()]
    assert lines[0] == ["pip", "install", "."]  # not on PyPI: from the checkout
    for line in lines:
        assert line[:2] == ["pip", "install"] and len(line) == 3, line
        found = re.fullmatch(r"\.(?:\[([\w,]+)\])?", line[2])
        assert found, line
        assert set((found.group(1) or "").split(",")) - {""} <= extras


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
    # Each block prints what its comments say: shapes, plans, and error bounds (against XLA's
    # autodiff, and against the stock Flax/Equinox layers).
    _check_commented_prints(PYTHON[index], result.stdout)


def _final_command(block: str) -> list[str]:
    return shlex.split(block.split("&&")[-1])


def test_install_steps_match_ci_and_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(extras["optional-dependencies"])
    ci = (ROOT / ".ci" / "run").read_text()
    for block in SHELL[1:3]:
        assert block.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e")
        wanted = re.search(r'pip install -e "\.\[([\w,]+)\]"', block).group(1).split(",")
        assert set(wanted) <= extras
    demo, tests = SHELL[1], SHELL[2]
    assert 'pip install -e ".[demo]"' in demo
    assert 'pip install -e ".[test,demo,torch]"' in tests
    # CI installs the README's extras and the docs extra (tests/test_api_docs.py builds the
    # API reference; without it that test is skipped), and runs exactly the README's test
    # command, last.
    assert 'install --quiet -e ".[test,demo,torch,docs]"' in ci
    lines = ci.strip().splitlines()
    command = tests.split("&&")[-1].strip()
    # The floor environment runs exactly the README's test command, after the linters and the
    # type checker (a finding fails CI before the suite); the newest runs its sample last.
    at = lines.index(command)
    assert lines[at - 3 : at] == ["ruff check .", "ruff format --check .", "mypy"]
    assert lines[-1] == f"{command} --sample 0.3"
    assert ci.count("pip install --quiet -e") == 2 and ci.count("-m venv") == 2


def test_the_sample_ci_runs_on_the_newest_jax_keeps_every_module():
    # Collected as CI's second environment collects, without running anything.
    fraction = float(
        (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].split("--sample")[1]
    )
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--sample", str(fraction)]
    out = _run([*collect, "tests"]).stdout.splitlines()
    kept, total = map(int, re.search(r"(\d+)/(\d+) tests collected", out[-1]).groups())
    sample = [line for line in out if "::" in line]
    modules = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    assert len(modules) > 30 and {line.split("::")[0] for line in sample} == modules
    assert len(sample) == kept < total
    assert 0.8 * fraction < kept / total < 1.2 * fraction + 0.05


def test_demo_command_is_the_plain_script():
    # tests/test_train_demo_script.py runs `python train_demo.py` as a user would.
    assert _final_command(SHELL[1]) == ["python", "train_demo.py"]


def test_audit_command_runs(tmp_path):
    command = _final_command(SHELL[3])
    assert command[:3] == ["python", "-m", "jaxconv.check"]
    command[command.index("--n") + 1] = "2"  # the README's 500 takes minutes
    command[command.index("--plot") + 1] = str(tmp_path / "audit.png")
    result = _run([sys.executable, *command[1:]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"
    assert (tmp_path / "audit.png").exists()
