"""mfn.environment: the wheel a package carries, the pinned requirements, the bundled environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from importlib import metadata

import pytest

from mfn import environment


def test_the_wheel_is_byte_identical_on_every_build(tmp_path):
    first = environment.build_wheel(tmp_path / "a").read_bytes()
    second = environment.build_wheel(tmp_path / "b").read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    names = zipfile.ZipFile(tmp_path / "a" / environment.wheel_name()).namelist()
    assert "mfn/__init__.py" in names and "mfn/kubernetes/chart/values.yaml" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert environment.wheel_name() == f"mfn_serve-{metadata.version('mfn-serve')}-py3-none-any.whl"


def test_the_wheel_installs_offline_and_runs_the_cli(tmp_path):
    wheel = environment.build_wheel(tmp_path / "wheel")
    target = tmp_path / "venv"
    venv.create(target, with_pip=True, system_site_packages=False)
    python = target / "bin" / "python"
    # No dependencies and no index: only the wheel's own files and metadata are checked here.
    # Away from the checkout: `python -m` puts the working directory on sys.path, and a checkout's egg-info with it.
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(wheel)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "show", "-f", "mfn-serve"], capture_output=True, text=True, cwd=tmp_path)
    assert "Name: mfn-serve" in listed.stdout and "mfn/environment.py" in listed.stdout
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, cwd=tmp_path)
    assert "mfn-serve" in check.stdout + check.stderr  # its dependencies are missing on purpose: pip sees them declared
    assert (target / "bin" / "mfn").is_file(), "the console script comes from the wheel's entry points"


def test_requirements_are_pinned_with_what_they_pull_in():
    lock = environment.locked_requirements(["torch>=2.1"])
    pins = {pin.split("==")[0].lower(): pin for pin in lock.pins}
    assert pins["torch"] == f"torch=={metadata.version('torch').split('+')[0]}"  # no local label: any build matches
    # mfn's own dependencies and the requirements' own, pinned, mfn itself excluded.
    assert pins["numpy"] == f"numpy=={metadata.version('numpy')}" and "pydantic" in pins and "filelock" in pins
    assert "mfn-serve" not in pins and all("==" in pin for pin in lock.pins)
    assert lock.warnings == ()


def test_requirements_not_installed_or_not_met_here_are_said_so():
    lock = environment.locked_requirements(["surely-not-installed-pkg>=1", "numpy>=99"])
    assert "surely-not-installed-pkg>=1" in lock.pins
    assert any("'surely-not-installed-pkg>=1' is not installed here" in warning for warning in lock.warnings)
    assert any("'numpy>=99' is not met here" in warning for warning in lock.warnings)


def test_a_malformed_requirement_names_itself():
    from mfn.errors import MfnError

    with pytest.raises(MfnError, match="requirements: 'torch >>= 2' is not a requirement"):
        environment.locked_requirements(["torch >>= 2"])


def test_the_environment_archive_holds_site_packages_and_its_interpreter(tmp_path):
    lock = environment.locked_requirements([])
    archive = environment.bundle_environment(lock, tmp_path / "a")
    again = environment.bundle_environment(lock, tmp_path / "b")
    assert archive.read_bytes() == again.read_bytes()
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile(environment.ENV_MANIFEST).read())
    assert {"site/mfn/__init__.py", "site/numpy/__init__.py", "site/pydantic/__init__.py"} <= names
    assert not [name for name in names if ".." in name.split("/") or name.startswith("/")]
    assert manifest["python"] == f"cpython{sys.version_info.major}.{sys.version_info.minor}"
    assert manifest["distributions"] == list(lock.pins)
    assert os.sep not in "".join(manifest["distributions"])
