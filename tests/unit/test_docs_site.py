"""The documentation site: it builds strictly, its generated pages are deterministic and complete, and every code
block a reader might run says whether a test runs it (tests/docs_blocks.py lists the markers)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from mfn.cli.main import cli
from tests.docs_blocks import KINDS, ROOT, RUNNABLE_LANGUAGES, blocks


def docs_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as `make docs` builds it; a warning (broken link or anchor, a page outside the nav) fails."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], check=False, cwd=ROOT,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    assert not re.search(r"^WARNING", result.stderr, re.MULTILINE), result.stderr[-5000:]
    return out


def test_the_site_builds_strictly_with_every_page(site):
    pages = {path.relative_to(ROOT / "docs").with_suffix("") for path in (ROOT / "docs").rglob("*.md")}
    for page in pages:
        built = site / page / "index.html" if page.name != "index" else site / page.parent / "index.html"
        assert built.exists(), f"docs/{page}.md was not built"
    for generated in ("reference/spec", "reference/cli", "benchmarks", "benchmarks/soak", "kubernetes-chart"):
        assert (site / generated / "index.html").exists(), generated


def test_the_cli_reference_has_every_command(site):
    html = (site / "reference" / "cli" / "index.html").read_text()
    for name, command in cli.commands.items():
        assert f"mfn {name}" in html, name
        for sub in getattr(command, "commands", {}):
            assert f"mfn {name} {sub}" in html, f"{name} {sub}"
    assert "--prometheus" in html


def test_the_spec_reference_is_deterministic_and_names_every_field():
    hooks = docs_hooks()
    page = hooks.render_spec_reference()
    assert page == hooks.render_spec_reference()
    schema = json.loads((ROOT / "schema" / "modelspec.schema.json").read_text())
    for model in [schema, *schema["$defs"].values()]:
        for field in model["properties"]:
            assert f"| `{field}` |" in page, field
    for name in schema["$defs"]:
        assert f"### {name}\n" in page, name
    for method in hooks.HANDLER_METHODS:
        assert f"#### `{method}(" in page, method


def test_every_runnable_block_is_run_or_says_why_not():
    found = [block for block in blocks() if block.language in RUNNABLE_LANGUAGES]
    assert len(found) > 10, "the code blocks were not found"
    unmarked = [block.where for block in found if block.kind is None]
    assert not unmarked, f"add <!-- test: KIND --> before these blocks (tests/docs_blocks.py lists the kinds): {unmarked}"
    unknown = [f"{block.where}: {block.kind}" for block in found
               if block.kind not in KINDS and not (block.kind.startswith("no: ") and block.kind[4:].strip())]
    assert not unknown, f"unknown test kinds (or `no:` without a reason): {unknown}"
    assert {block.kind for block in found} >= KINDS, "a kind of block is no longer run by any test"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250
