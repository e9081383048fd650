"""Handlers that ship with their directory, on real servers: a handler importing a module and reading a label file
beside it, one inside a Python package; and the version workflow on a directory a server is serving: a new
version packaged into it, `mfn verify` reading it without changing a byte, and a redeploy that verifies it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments
from mfn.manifest import MANIFEST
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
LABELER = f"{ROOT / 'tests' / 'projects' / 'labeler' / 'labeler.py'}:Labeler"
PACKAGED = ROOT / "tests" / "projects" / "packaged"
X = np.array([[1.0], [5.0]], dtype=np.float32)


def package_both(path: Path, server: str) -> None:
    mfn.package(LABELER, path, server=server)
    with contextlib.chdir(PACKAGED):  # as a user runs `mfn package textpkg.mod:Tripler` there
        mfn.package("textpkg.mod:Tripler", path, server=server)


@pytest.fixture(scope="module", params=["triton", "torchserve"])
def served(request, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    server = request.param
    path = tmp_path_factory.mktemp(f"projects-{server}")
    package_both(path, server)
    name = f"projects-{server}"
    deployments.deploy(path, name=name, drain_timeout_s=0)
    yield name, path
    deployments.undeploy(name)


def tree(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def manifest_names(path: Path) -> list[str]:
    names = []
    for unit in sorted(path.iterdir()):
        if unit.is_dir():
            names += json.loads((unit / MANIFEST).read_text())["files"]
        else:
            with zipfile.ZipFile(unit) as archive:
                names += json.loads(archive.read(MANIFEST))["files"]
    return names


def test_a_handler_imports_and_reads_files_beside_it_and_inside_its_package(served):
    name, _ = served
    with mfn.Client(name) as client:
        labeled = client.infer("labeler", {"x": X})
        tripled = client.infer("tripler", {"x": X})
    np.testing.assert_allclose(labeled["y"], X * 2 + 100)
    assert labeled["label"].tolist() == [[b"dog"], [b"bird"]]
    np.testing.assert_allclose(tripled["y"], X * 3 + 0.5)


def test_a_new_version_packaged_into_the_served_directory_verifies_untouched_and_redeploys(served):
    name, path = served
    if "triton" in name:
        # What Triton's Python stub left in the repository it serves: the adapter compiled beside it.
        assert list(path.glob("labeler/1/__pycache__/model.cpython-*.pyc"))
    mfn.package(LABELER, path, server="torchserve" if "torchserve" in name else "triton", version=2)
    assert not [entry for entry in manifest_names(path) if "__pycache__" in entry or entry.endswith(".pyc")]
    before = tree(path)
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert tree(path) == before
    deployments.undeploy(name)
    deployments.deploy(path, name=name, drain_timeout_s=0)  # verifies every package first
    with mfn.Client(name) as client:
        np.testing.assert_allclose(client.infer("labeler", {"x": X})["y"], X * 2 + 200)
        np.testing.assert_allclose(client.infer("tripler", {"x": X})["y"], X * 3 + 0.5)
