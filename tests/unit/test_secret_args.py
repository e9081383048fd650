"""The preload library that hands tritonserver its keys without putting them on its command line."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mfn.errors import DeployError
from mfn.servers import secret_args


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return secret_args.preload_library(tmp_path_factory.mktemp("lib"))


def run(library: Path, tmp_path: Path, program: list[str], args: list[str]) -> subprocess.CompletedProcess:
    env = secret_args.hide(dict(os.environ), args, tmp_path / "server.args", library)
    return subprocess.run(program, env=env, capture_output=True, text=True)


def test_the_arguments_reach_the_program_but_not_its_command_line(library, tmp_path):
    shown = run(library, tmp_path, ["/bin/sh", "-c", 'echo "$@"; tr "\\0" " " < /proc/$$/cmdline', "sh", "visible"],
                ["--key=Bearer s3cret", "two words"])
    arguments, command_line = shown.stdout.splitlines()
    assert arguments == "visible --key=Bearer s3cret two words"
    assert "visible" in command_line and "s3cret" not in command_line
    assert not (tmp_path / "server.args").exists()  # read once, then deleted


def test_children_neither_load_the_library_nor_see_the_file(library, tmp_path):
    env = run(library, tmp_path, ["/bin/sh", "-c", "env"], ["--key=x"]).stdout
    assert secret_args.ARGS_FILE_VARIABLE not in env and secret_args.LIBRARY_MARK not in env
    assert "HOME=" in env  # the rest of the environment is kept


def test_the_file_is_private_and_a_readable_one_stops_the_program(library, tmp_path):
    args_file = tmp_path / "server.args"
    env = secret_args.hide(dict(os.environ), ["--key=x"], args_file, library)
    assert stat.S_IMODE(args_file.stat().st_mode) == 0o600
    args_file.chmod(0o644)
    result = subprocess.run(["/bin/true"], env=env, capture_output=True, text=True)
    assert result.returncode == 70 and "mode 0600" in result.stderr


def test_the_library_is_built_once_per_source(library):
    assert secret_args.preload_library(library.parent) == library
    assert library.name.startswith(secret_args.LIBRARY_MARK)


def test_without_a_compiler_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeployError, match="C compiler"):
        secret_args.preload_library(tmp_path / "fresh")
