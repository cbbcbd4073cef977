"""The API reference: `mkdocs build --strict` makes the site offline, and its API page documents
every public name from that name's own docstring.

Needs the `docs` extra (mkdocs, mkdocstrings), which `.ci/run` installs; without it the test
is skipped, not passed.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconv
from jaxconv import check

ROOT = Path(__file__).resolve().parents[1]
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason='needs the docs extra (pip install -e ".[docs]")',
)


def test_api_page_names_every_public_name():
    documented = re.findall(r"^::: ([\w.]+)$", API, re.M)
    assert sorted(documented) == sorted(
        [*(f"jaxconv.{name}" for name in jaxconv.__all__), "jaxconv.check"]
    )


def test_every_docs_page_is_in_the_site_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^  - [^:]+: ([\w-]+\.md)$", config, re.M))
    assert nav == {p.name for p in (ROOT / "docs").glob("*.md")}


def _text(page: str) -> str:
    """The page's text without markup or whitespace (tags split words at random places)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return "".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


def _summary(obj) -> str:
    """A docstring's first line as `_text` reads it rendered (code spans unquoted)."""
    first = inspect.getdoc(obj).split("\n\n")[0].splitlines()[0]
    return "".join(first.replace("`", "").split())


@needs_mkdocs
def test_site_builds_strict_and_documents_every_public_name(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not re.search(r"^(WARNING|ERROR)", result.stderr, re.M), result.stderr
    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    text = _text(page)
    for name in jaxconv.__all__:
        # A heading anchored at the name, and its docstring's summary: generated, not typed.
        assert f'id="jaxconv.{name}"' in page, name
        assert _summary(getattr(jaxconv, name)) in text, name
    assert 'id="jaxconv.check"' in page
    for name in ("compare", "run", "main", "AuditConfig", "ComparisonResult"):
        assert f'id="jaxconv.check.{name}"' in page, name
        assert _summary(getattr(check, name)) in text, name
    # The signature is rendered, with the keyword-only configuration.
    assert re.search(r"conv2d\(x:ArrayLike,w:ArrayLike,b:ArrayLike\|None=None,\*,stride", text)
    for other in ("usage", "demo", "derivation", "performance"):
        assert (site / other / "index.html").is_file(), other
