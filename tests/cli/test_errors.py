"""mfn's errors reach the terminal in one place: one line and exit status 1, a traceback only with --debug."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.errors import MfnError
from tests.conftest import HANDLERS


def test_every_command_takes_debug():
    for name in cli.commands:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert "--debug" in result.output, name


def test_an_mfn_error_is_one_line_and_debug_shows_where_it_came_from(tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [f"Error: {tmp_path} holds no models (no <name>/config.pbtxt, no .mar "
                                                  f"archives); run `mfn package ... --output {tmp_path}` first"]
    result = CliRunner().invoke(cli, ["verify", str(tmp_path), "--debug"])
    assert isinstance(result.exception, MfnError)


def test_the_clients_errors_are_one_line_too():
    result = CliRunner().invoke(cli, ["invoke", "m", "--url", "ftp://host:1", "--data", '{"x": [1]}'])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "URL scheme 'ftp'" in result.output


def test_deploy_refuses_options_of_the_other_target(tmp_path):
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path), "--release", "r", "--dry-run"])
    assert result.exit_code == 2 and "--release, --dry-run apply to --target kubernetes, not --target local" in result.output
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path), "--target", "kubernetes", "--name", "x", "--foreground"])
    assert result.exit_code == 2 and "--name, --foreground apply to --target local, not --target kubernetes" in result.output


def test_deploy_help_lists_each_targets_options_under_its_heading():
    output = CliRunner().invoke(cli, ["deploy", "--help"]).output
    local, kubernetes = output.index("Local deploy options"), output.index("Kubernetes options")
    assert output.index("--no-verify") < local < output.index("--max-request-mb") < kubernetes < output.index("--model-uri")


def unusable_home(tmp_path: Path) -> tuple[Path, str]:
    """An MFN_HOME mfn cannot write and the reason the system gives: a read-only directory, or, for root (whom
    permissions do not stop), a path under a file."""
    if os.geteuid() == 0:
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "home", "Not a directory"
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    return home, "Permission denied"


@pytest.mark.parametrize("command", [["deploy", "PACKAGE"], ["undeploy", "x"]])
def test_an_unusable_mfn_home_is_one_line_naming_it_and_the_fix(tmp_path, monkeypatch, command):
    repository = tmp_path / "repository"
    if "PACKAGE" in command:  # deploy checks its packages before it touches MFN_HOME
        mfn.package(f"{HANDLERS / 'mixed.py'}:Mixed", repository)
    home, reason = unusable_home(tmp_path)
    monkeypatch.setenv("MFN_HOME", str(home))
    arguments = [str(repository) if argument == "PACKAGE" else argument for argument in command]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: mfn cannot use MFN_HOME {home} ({reason}: {home}/")
    assert line.endswith("make it a directory this user can read and write, or set MFN_HOME to one")
    assert isinstance(CliRunner().invoke(cli, [*arguments, "--debug"]).exception, OSError)
