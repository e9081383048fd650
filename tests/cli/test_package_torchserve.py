"""`mfn package --server torchserve`: archive contents, manifest golden file, reproducible bytes."""

import hashlib
import json
from importlib import metadata
import tarfile
import zipfile

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.environment import build_wheel_bytes, wheel_name
from tests.cli.test_package import BAD, MLP, TEXT_STATS, tree_digest
from tests.conftest import GOLDEN, HANDLERS, assert_matches_golden

EXPECTED_ENTRIES = [
    # The handler's directory ships with it (make_weights.py); the declared artifact ships once, under artifacts/.
    "MAR-INF/MANIFEST.json", "artifacts/weights/weights.pt", "handler/handler.py", "handler/make_weights.py",
    f"mfn-wheel/{wheel_name()}", "mfn.json",
    "mfn_torchserve_adapter.py", "model-config.yaml", "requirements.txt", "mfn-manifest.json",
]


def package(*args):
    return CliRunner().invoke(cli, ["package", *map(str, args), "--server", "torchserve"], catch_exceptions=False)


def test_mar_holds_adapter_handler_artifacts_requirements_and_config(tmp_path):
    result = package(MLP, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "mlp.mar") as archive:
        assert archive.namelist() == EXPECTED_ENTRIES
        manifest = archive.read("MAR-INF/MANIFEST.json").decode()
        pins = archive.read("requirements.txt").decode().splitlines()
        assert f"torch=={metadata.version('torch').split('+')[0]}" in pins and all("==" in pin for pin in pins)
        assert archive.read(f"mfn-wheel/{wheel_name()}") == build_wheel_bytes()
        assert b"batchSize: 32" in archive.read("model-config.yaml")
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert_matches_golden(manifest, GOLDEN / "torchserve" / "mlp.MANIFEST.json")
    assert json.loads(manifest)["model"]["handler"] == "mfn_torchserve_adapter.py"


@pytest.mark.parametrize("archive_format", ["default", "tgz", "no-archive"])
def test_two_builds_of_the_same_input_are_byte_identical(tmp_path, archive_format):
    for out in ("a", "b"):
        assert package(MLP, "-o", tmp_path / out, "--archive-format", archive_format).exit_code == 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a")  # something was written


def test_tgz_and_directory_formats_hold_the_same_files(tmp_path):
    package(TEXT_STATS, "-o", tmp_path, "--archive-format", "tgz")
    package(TEXT_STATS, "-o", tmp_path, "--archive-format", "no-archive")
    with tarfile.open(tmp_path / "text_stats.tar.gz") as archive:
        in_tgz = {m.name.removeprefix("text_stats/"): hashlib.sha256(archive.extractfile(m).read()).hexdigest() for m in archive}
    assert in_tgz == tree_digest(tmp_path / "text_stats")


def test_later_versions_get_their_own_archive_name(tmp_path):
    versioned = f"{HANDLERS / 'versioned.py'}:Versioned"
    for version in ("1", "2"):
        assert package(versioned, "-o", tmp_path, "--version", version).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["versioned.mar", "versioned.v2.mar"]


@pytest.mark.parametrize("attribute", ["WrongDtype", "SetupFails", "BadSpec"])
def test_a_broken_handler_is_refused_and_nothing_is_written(tmp_path, attribute):
    assert package(TEXT_STATS, "-o", tmp_path).exit_code == 0
    before = tree_digest(tmp_path)
    result = package(f"{BAD}:{attribute}", "-o", tmp_path)
    assert result.exit_code == 1 and "Error:" in result.output
    assert tree_digest(tmp_path) == before
