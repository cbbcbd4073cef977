"""Packaging: one version, the metadata, the library without its optional dependencies, the
demo after a plain install, and the sdist and wheel exactly as `python -m build` makes them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import jax
import pytest
from packaging.requirements import Requirement

import jaxconv

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
BIN = Path(sys.executable).parent  # where pip put this environment's console scripts

# Blocks imports of the optional dependencies in a child interpreter: sitecustomize runs
# before any entry point (`python -c`, `python -m`, `python script.py`, a console script).
_BLOCKER = """
import importlib.abc, os, sys

BLOCKED = set(os.environ["JAXCONV_TEST_BLOCK"].split(","))


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)


sys.meta_path.insert(0, _Block())
"""
OPTIONAL = ("optax", "sklearn", "matplotlib", "tqdm", "torch", "hypothesis", "flax", "equinox")


def _run_blocked(args, blocked, tmp_path, **kwargs):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "JAXCONV_TEST_BLOCK": ",".join(blocked),
        "JAX_ENABLE_X64": "0",
    }
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxconv.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", jaxconv.__version__)
    written = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "jaxconv").rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(encoding="utf-8"), re.M)
    ]
    assert written == ["jaxconv/__init__.py"]
    # The installed metadata was built from it (a stale install shows up here).
    assert importlib.metadata.version("jaxconv") == jaxconv.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(
        rf"^## \[{re.escape(jaxconv.__version__)}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M
    )
    assert "## [Unreleased]" in changelog


def test_license_and_metadata():
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: an SPDX expression replaces the License :: classifiers (setuptools rejects both).
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])
    assert "Typing :: Typed" in PROJECT["classifiers"] and (ROOT / "jaxconv" / "py.typed").exists()
    assert importlib.metadata.metadata("jaxconv")["License-Expression"] == "Apache-2.0"


def test_dependencies_floor_jax_at_the_oldest_release_tested_and_leave_optax_to_the_demo():
    required = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
    assert "optax" not in required
    demo = {Requirement(r).name for r in PROJECT["optional-dependencies"]["demo"]}
    assert {"optax", "scikit-learn", "matplotlib", "tqdm"} <= demo
    for name in ("jax", "jaxlib"):
        spec = required[name].specifier
        # A floor at the oldest release CI tests (.ci/run's first environment) and no upper
        # bound, as Flax, Equinox and optax declare theirs: CI tests the newest release.
        assert {str(s) for s in spec} == {">=0.10.2"}, spec
        assert not spec.contains("0.10.1") and spec.contains("0.12.1") and spec.contains("1.0")
        # The environment the suite runs in is inside the bound, so the bound was tested.
        assert spec.contains(importlib.metadata.version(name)), name
    assert required["jax"].specifier.contains(jax.__version__)
    # The installed metadata agrees: optax only with the demo extra.
    optax = [r for r in importlib.metadata.requires("jaxconv") if Requirement(r).name == "optax"]
    assert optax and all(Requirement(r).marker.evaluate({"extra": "demo"}) for r in optax)
    assert not any(Requirement(r).marker.evaluate({"extra": ""}) for r in optax)


def test_library_works_without_any_optional_dependency(tmp_path):
    code = """
import importlib, sys
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} imported: the block did not work")
import jax, jax.numpy as jnp
import jaxconv, jaxconv.check
x, w = jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3))
dw = jax.grad(lambda w: jnp.sum(jaxconv.conv2d(x, w, padding="SAME") ** 2))(w)
z = jaxconv.conv_transpose2d(jnp.ones((2, 4, 6, 6)), jnp.ones((4, 3, 3, 3)), stride=2)
print(dw.shape, z.shape)
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(","))))
"""
    blocked = ",".join(OPTIONAL)
    result = _run_blocked([sys.executable, "-c", code, blocked], OPTIONAL, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["(4, 3, 3, 3) (2, 3, 13, 13)", "[]"]


@pytest.mark.parametrize(
    "entry, blocked, distribution",
    [
        ("train_demo.py", "optax", "optax"),
        ("python -m jaxconv.demo", "sklearn", "scikit-learn"),
        ("jaxconv-demo", "matplotlib", "matplotlib"),
    ],
)
def test_demo_without_its_extra_stops_in_one_line(entry, blocked, distribution, tmp_path):
    command = {
        "train_demo.py": [sys.executable, str(ROOT / "train_demo.py")],
        "python -m jaxconv.demo": [sys.executable, "-m", "jaxconv.demo"],
        "jaxconv-demo": [str(BIN / "jaxconv-demo")],
    }[entry]
    out = tmp_path / "run"
    result = _run_blocked([*command, "--out", str(out)], [blocked], tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    # Only the blocked one is named: the check looks for each package, not for the extra.
    assert result.stderr == (
        f"{entry}: error: the demo needs {distribution}, not installed here: "
        'pip install "jaxconv[demo]" (or, in a checkout, pip install -e ".[demo]")\n'
    )
    assert not out.exists()


@pytest.mark.slow
def test_demo_runs_after_install_outside_a_checkout(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--max-steps", "2", "--out", str(out), "--no-progress"]
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "jaxconv.demo", *flags],
        cwd=tmp_path,  # not the checkout: the installed package alone
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch   1  train loss" in result.stdout and "final test accuracy" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz",
        "curves.png",
        "filters.png",
        "metrics.json",
    ]
    script = subprocess.run(
        [str(BIN / "jaxconv-demo"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert script.returncode == 0 and script.stdout.startswith("usage: jaxconv-demo ")


# What the sdist must carry for its own tests to run, beyond the package itself.
_SDIST_NEEDS = (
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "pyproject.toml",
    "train_demo.py",
    "mkdocs.yml",
    ".ci/run",  # tests/test_readme.py checks the README's commands against it
    "jaxconv/py.typed",
)
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "site", "runs", "tmp", "__pycache__",
    ".*_cache", ".hypothesis",
)  # fmt: skip


def _tracked_like(root: Path, folder: str, pattern: str = "*") -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in (root / folder).rglob(pattern)
        if p.is_file()
        and "__pycache__" not in p.parts
        # hidden files and tool caches (.mypy_cache) a checkout may hold
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("build") is None or importlib.util.find_spec("twine") is None,
    reason='needs build and twine (pip install -e ".[test]")',
)
def test_build_sdist_and_wheel_pass_twine_and_the_sdist_tests_run(tmp_path):
    # A copy of the sources: the build writes jaxconv.egg-info beside them, and other tests
    # read the checkout meanwhile.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES)
    dist = tmp_path / "dist"
    # No isolation: the backend is this environment's setuptools (the test extra pins it), so
    # nothing is downloaded. Without --sdist/--wheel, build makes the sdist and then the wheel
    # *from the unpacked sdist*, so a file missing from the sdist breaks the wheel too.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = jaxconv.__version__
    sdist, wheel = dist / f"jaxconv-{version}.tar.gz", dist / f"jaxconv-{version}-py3-none-any.whl"
    assert sorted(dist.iterdir()) == sorted([sdist, wheel])
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    assert twine.stdout.count("PASSED") == 2

    with tarfile.open(sdist) as tar:
        prefix = f"jaxconv-{version}/"
        in_sdist = {m.name.removeprefix(prefix) for m in tar.getmembers() if m.isfile()}
        tar.extractall(tmp_path / "unpacked", filter="data")
    wanted = {
        *_SDIST_NEEDS,
        *_tracked_like(ROOT, "jaxconv", "*.py"),
        *_tracked_like(ROOT, "tests", "*.py"),  # conftest.py, helpers.py, every module
        *_tracked_like(ROOT, "docs"),
        *_tracked_like(ROOT, "benchmarks"),
    }
    assert {"tests/conftest.py", "tests/helpers.py", "tests/test_packaging.py"} <= wanted
    assert wanted - in_sdist == set()
    assert not [n for n in in_sdist if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in in_sdist if n.split("/")[0] in {".venv", ".git", "runs", "site"}]

    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        info = f"jaxconv-{version}.dist-info"
        metadata = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert "jaxconv/py.typed" in in_wheel
    assert _tracked_like(ROOT, "jaxconv", "*.py") <= in_wheel
    assert {n.split("/")[0] for n in in_wheel} == {"jaxconv", info}  # no tests, no scripts
    assert f"{info}/licenses/LICENSE" in in_wheel
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert 'Requires-Dist: optax>=0.2; extra == "demo"' in metadata.splitlines()
    assert "jaxconv-demo = jaxconv.demo.cli:console_main" in entry_points

    # The unpacked sdist's tests run against its own sources: every module collects (their
    # imports, conftest and helpers are there), and a few that read the files around the
    # package pass.
    unpacked = tmp_path / "unpacked" / f"jaxconv-{version}"
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    env.pop("PYTHONPATH", None)
    pytest_args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    collected = subprocess.run(
        [*pytest_args, "--collect-only", "tests"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert re.search(r"^\d{3,} tests collected", collected.stdout, re.M), collected.stdout[-500:]
    selected = [
        "tests/test_packaging.py::test_version_is_written_once",
        "tests/test_packaging.py::test_license_and_metadata",
        "tests/test_readme.py::test_readme_has_the_blocks_this_file_runs",
        "tests/test_readme.py::test_install_steps_match_ci_and_pyproject",
        "tests/test_docs.py::test_relative_links_resolve",
        "tests/test_docs.py::test_worked_example_numbers",
    ]
    ran = subprocess.run(
        [*pytest_args, *selected],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"{len(selected)} passed" in ran.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import jaxconv; print(jaxconv.__file__)"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(unpacked)
