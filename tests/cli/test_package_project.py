"""A handler ships with its directory: what goes in (helpers, data files, a package), what never does (caches,
environments, ignored globs, links that leave it, mfn's own outputs), and the refusals that name the fix."""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.errors import SpecError
from mfn.manifest import MANIFEST
from mfn.runtime.bundle import load_bundle
from tests.conftest import ROOT

LABELER = f"{ROOT / 'tests' / 'projects' / 'labeler' / 'labeler.py'}:Labeler"
PACKAGED = ROOT / "tests" / "projects" / "packaged"
HANDLER = """
import numpy as np

import mfn
from helpers import double


class Project(mfn.Handler):
    name = "project"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1])]
{declarations}
    def predict(self, inputs):
        return {{"y": double(inputs["x"])}}
"""


def run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def make_project(directory: Path, declarations: str = "") -> str:
    """A handler importing a helper beside it, with files around it that must not ship; its reference."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(HANDLER.format(declarations=declarations))
    (directory / "helpers.py").write_text("def double(x):\n    return x * 2\n")
    for name, text in {"sub/keep.txt": "kept", "notes.tmp": "scratch", "data/big.bin": "data", ".env": "SECRET=1",
                       ".git/config": "[core]", "__pycache__/helpers.cpython-311.pyc": "bytecode", "stray.pyc": "bytecode",
                       "venv/pyvenv.cfg": "home = /usr", "venv/lib/site.py": "", "node_modules/x/index.js": ""}.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return f"{directory / 'handler.py'}:Project"


def shipped(model_dir: Path, version: int = 1) -> list[str]:
    handler = model_dir / str(version) / "handler"
    return sorted(path.relative_to(handler).as_posix() for path in handler.rglob("*") if path.is_file())


def tree(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_handler_directory_ships_without_caches_environments_hidden_files_or_its_output(tmp_path):
    ref = make_project(tmp_path / "project")
    result = run("package", ref, "-o", tmp_path / "project" / "repo")
    assert result.exit_code == 0, result.output
    # The second output sees the first one, a model repository, inside the directory: it does not ship.
    assert run("package", ref, "-o", tmp_path / "project" / "other").exit_code == 0
    expected = ["data/big.bin", "handler.py", "helpers.py", "notes.tmp", "sub/keep.txt"]
    assert shipped(tmp_path / "project" / "other" / "project") == expected


def test_mfnignore_exclude_and_include_choose_what_ships(tmp_path):
    ref = make_project(tmp_path / "project", '    exclude = ["sub/keep.txt"]\n')
    (tmp_path / "project" / ".mfnignore").write_text("# data the model does not serve\n*.tmp\n/data\n\n")
    assert run("package", ref, "-o", tmp_path / "repo").exit_code == 0
    assert shipped(tmp_path / "repo" / "project") == ["handler.py", "helpers.py"]
    ref = make_project(tmp_path / "narrow", '    include = ["helpers.py", "sub"]\n')
    assert run("package", ref, "-o", tmp_path / "narrow-repo").exit_code == 0
    # The handler file itself always ships.
    assert shipped(tmp_path / "narrow-repo" / "project") == ["handler.py", "helpers.py", "sub/keep.txt"]


def test_the_manifest_never_lists_bytecode_and_verify_reads_only(tmp_path):
    ref = make_project(tmp_path / "project")
    repo = tmp_path / "repo"
    assert run("package", ref, "-o", repo).exit_code == 0
    # What a server leaves behind: Triton's stub compiles model.py beside it.
    cache = repo / "project" / "1" / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"compiled")
    (repo / "project" / "1" / "handler" / "helpers.pyc").write_bytes(b"compiled")
    assert run("package", ref, "-o", repo, "--version", "2").exit_code == 0
    listed = json.loads((repo / "project" / MANIFEST).read_text())["files"]
    assert "1/handler/helpers.py" in listed and "2/handler/helpers.py" in listed
    assert not [name for name in listed if "__pycache__" in name or name.endswith(".pyc")]
    before = tree(tmp_path)
    result = run("verify", repo)
    assert result.exit_code == 0, result.output
    assert tree(tmp_path) == before


def test_a_manifest_that_recorded_bytecode_still_verifies(tmp_path):
    ref = make_project(tmp_path / "project")
    assert run("package", ref, "-o", tmp_path / "repo").exit_code == 0
    manifest = tmp_path / "repo" / "project" / MANIFEST
    document = json.loads(manifest.read_text())
    document["files"]["1/__pycache__/model.cpython-311.pyc"] = "0" * 64
    manifest.write_text(json.dumps(document))
    result = run("verify", tmp_path / "repo")
    assert result.exit_code == 0, result.output


def test_an_archive_carries_the_directory_and_no_bytecode(tmp_path):
    ref = make_project(tmp_path / "project")
    assert run("package", ref, "-o", tmp_path / "store", "--server", "torchserve").exit_code == 0
    with zipfile.ZipFile(tmp_path / "store" / "project.mar") as archive:
        names = archive.namelist()
        listed = json.loads(archive.read(MANIFEST))["files"]
    assert [name for name in names if name.startswith("handler/")] == [
        "handler/data/big.bin", "handler/handler.py", "handler/helpers.py", "handler/notes.tmp", "handler/sub/keep.txt"]
    assert not [name for name in listed if name.endswith(".pyc")]


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_a_link_out_of_the_directory_is_refused_unless_excluded(tmp_path, server):
    (tmp_path / "secret.txt").write_text("do not ship")
    ref = make_project(tmp_path / "project")
    os.symlink(tmp_path / "secret.txt", tmp_path / "project" / "sub" / "leak.txt")
    result = run("package", ref, "-o", tmp_path / "out", "--server", server)
    assert result.exit_code == 1
    assert "sub/leak.txt" in result.output and "secret.txt" in result.output
    assert "a copy, not a link to a file outside" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "project" / "sub" / "leak.txt").unlink()
    os.symlink(tmp_path, tmp_path / "project" / "up")
    result = run("package", ref, "-o", tmp_path / "out", "--server", server)
    assert result.exit_code == 1 and "up: " in result.output and "outside" in result.output
    (tmp_path / "project" / ".mfnignore").write_text("up\n")
    assert run("package", ref, "-o", tmp_path / "out", "--server", server).exit_code == 0


def test_a_link_inside_the_directory_ships_its_content(tmp_path):
    ref = make_project(tmp_path / "project")
    os.symlink(tmp_path / "project" / "sub" / "keep.txt", tmp_path / "project" / "alias.txt")
    assert run("package", ref, "-o", tmp_path / "repo").exit_code == 0
    assert (tmp_path / "repo" / "project" / "1" / "handler" / "alias.txt").read_text() == "kept"
    assert not (tmp_path / "repo" / "project" / "1" / "handler" / "alias.txt").is_symlink()


@pytest.mark.parametrize("declaration", ['exclude = ["../secret.txt"]', 'include = ["/etc/passwd"]', 'include = ["a/../../x"]'])
def test_globs_that_leave_the_directory_are_refused(tmp_path, declaration):
    ref = make_project(tmp_path / "project", f"    {declaration}\n")
    result = run("package", ref, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "must be relative to the handler's directory and stay inside it" in result.output
    assert not (tmp_path / "out").exists()


def test_a_directory_over_the_size_limit_is_refused_with_its_biggest_entries_and_the_fix(tmp_path):
    ref = make_project(tmp_path / "project", "    max_project_mb = 1\n")
    with open(tmp_path / "project" / "data" / "huge.bin", "wb") as sparse:
        sparse.truncate(3 << 20)
    result = run("package", ref, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "holds 3.0 MiB to ship with the handler, over max_project_mb=1; biggest: data/ (3.0 MiB)" in result.output
    assert "exclude=[...]" in result.output and ".mfnignore" in result.output and "raise max_project_mb" in result.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "project" / ".mfnignore").write_text("data/\n")
    assert run("package", ref, "-o", tmp_path / "out").exit_code == 0


def test_the_default_limit_is_a_gibibyte_and_an_override_raises_it(tmp_path):
    ref = make_project(tmp_path / "project")
    with open(tmp_path / "project" / "data" / "huge.bin", "wb") as sparse:
        sparse.truncate((1 << 30) + 1)
    with pytest.raises(SpecError, match=r"holds 1\.0 GiB .* over max_project_mb=1024"):
        mfn.package(ref, tmp_path / "out")
    with pytest.raises(SpecError, match="over max_project_mb=2"):
        mfn.package(ref, tmp_path / "out", max_project_mb=2)


@pytest.mark.parametrize(("first", "second", "found"), [("torchserve", "triton", "project.mar"),
                                                        ("triton", "torchserve", "project")])
def test_a_directory_of_the_other_server_is_refused_at_package_time(tmp_path, first, second, found):
    ref = make_project(tmp_path / "project")
    assert run("package", ref, "-o", tmp_path / "out", "--server", first).exit_code == 0
    before = tree(tmp_path / "out")
    result = run("package", ref, "-o", tmp_path / "out", "--server", second)
    assert result.exit_code == 1
    kind = "a TorchServe model store" if first == "torchserve" else "a Triton model repository"
    assert f"{tmp_path / 'out'} is {kind} (it holds {found})" in result.output
    assert f"package with --server {first}, or give another --output" in result.output
    assert tree(tmp_path / "out") == before


def test_a_failing_setup_shows_the_handlers_frames_first(tmp_path):
    ref = make_project(tmp_path / "project", "    def setup(self, ctx):\n        raise RuntimeError('weights are corrupt')\n")
    result = run("package", ref, "-o", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    first_frame = next(line for line in lines if line.strip().startswith("File "))
    assert str(tmp_path / "project" / "handler.py") in first_frame and "in setup" in first_frame
    assert lines[-1] == "RuntimeError: weights are corrupt"
    assert "mfn/packaging.py" not in result.output and "mfn/runtime" not in result.output


def test_a_helper_that_is_neither_beside_the_handler_nor_installed_is_named(tmp_path):
    ref = make_project(tmp_path / "project")
    handler = tmp_path / "project" / "handler.py"
    handler.write_text(handler.read_text().replace("from helpers import", "from helpers_left_behind import"))
    result = run("package", ref, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "No module named 'helpers_left_behind'" in result.output and "put it in the handler's directory" in result.output


def test_a_package_reference_ships_its_package_and_loads_from_the_bundle(tmp_path):
    with contextlib.chdir(PACKAGED):
        result = run("package", "textpkg.mod:Tripler", "-o", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    assert shipped(tmp_path / "repo" / "tripler") == [
        "textpkg/__init__.py", "textpkg/data/offset.txt", "textpkg/mod.py", "textpkg/util.py"]
    spec = json.loads((tmp_path / "repo" / "tripler" / "1" / "mfn.json").read_text())
    assert spec["entrypoint"] == {"attribute": "Tripler", "file": "mod.py", "package": "textpkg"}
    loaded = load_bundle(tmp_path / "repo" / "tripler" / "1")
    (outputs,) = loaded.loop.run([{"x": np.array([[2.0]], dtype=np.float32)}])
    np.testing.assert_allclose(outputs["y"], [[6.5]])


def test_a_bundle_imports_its_own_helpers_over_same_named_modules_loaded_before(tmp_path):
    assert run("package", LABELER, "-o", tmp_path / "repo").exit_code == 0
    mfn.package(make_project(tmp_path / "other"), tmp_path / "other-repo")
    assert Path(sys.modules["helpers"].__file__).parent == tmp_path / "other"
    loaded = load_bundle(tmp_path / "repo" / "labeler" / "1")
    assert Path(sys.modules["helpers"].__file__).parent == tmp_path / "repo" / "labeler" / "1" / "handler"
    (outputs,) = loaded.loop.run([{"x": np.array([[1.0]], dtype=np.float32)}])
    np.testing.assert_allclose(outputs["y"], [[102.0]])
    assert outputs["label"].tolist() == [[b"dog"]]


def test_the_pods_check_refuses_a_bytecode_cache_it_cannot_delete(tmp_path):
    mfn.package(make_project(tmp_path / "project"), tmp_path / "repo")
    digest = hashlib.sha256((tmp_path / "repo" / "project" / MANIFEST).read_bytes()).hexdigest()
    # As the chart's verify-models container runs it: the script alone, standard library only.
    command = [sys.executable, "-S", str(ROOT / "mfn" / "manifest.py"), str(tmp_path / "repo"), f"project={digest}"]
    passed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert passed.returncode == 0, passed.stderr
    cache = tmp_path / "repo" / "project" / "1" / "__pycache__" / "model.cpython-311.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"planted")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "project/1/__pycache__ is a bytecode cache, which could run in place of its source" in refused.stderr


def test_bytecode_added_to_an_archive_is_compared(tmp_path):
    mfn.package(make_project(tmp_path / "project"), tmp_path / "store", server="torchserve")
    with zipfile.ZipFile(tmp_path / "store" / "project.mar", "a") as archive:
        archive.writestr("handler/__pycache__/helpers.cpython-311.pyc", b"planted")
    result = run("verify", tmp_path / "store")
    assert result.exit_code == 1
    assert "project.mar/handler/__pycache__/helpers.cpython-311.pyc was added after packaging" in result.output
