"""The version rule of local deployments, end to end on both real servers: versions packaged into a served directory,
`mfn load`, the default without a version, `mfn unload --version`, refused versions (with the versions there are and
the command that loads one, never retried), `mfn set-default`, `mfn reload` of a changed version policy, and a
redeploy. Each server is started twice (the redeploy is part of the rule)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.local.supervision import read_status
from mfn.errors import InvokeError
from tests.conftest import HANDLERS, wait_for

pytestmark = pytest.mark.integration
SERVERS = ["triton", "torchserve"]
VERSIONED = f"{HANDLERS / 'versioned.py'}:Versioned"


def cli_ok(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def cli_refused(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0, result.output
    return result.output


def served_by(name: str, version: int | None = None, protocol: str = "http") -> int:
    with mfn.Client(name, protocol=protocol) as client:
        return int(client.infer("versioned", {"x": [[0]]}, version=version)["served_by"].item())


def serving(name: str) -> tuple[list[int], int]:
    described = cli_ok("describe", "versioned", "--deployment", name)
    return described["versions"], described["default_version"]


@pytest.fixture(params=SERVERS)
def server(request) -> str:
    return request.param


@pytest.fixture
def workflow(server: str, tmp_path: Path):
    """v1 packaged (policy: all) and deployed; undeployed afterwards whatever happened."""
    name = f"versions-{server}"
    mfn.package(VERSIONED, tmp_path, server=server, version=1)
    deployments.deploy(tmp_path, name=name, drain_timeout_s=0)
    try:
        yield name, tmp_path
    finally:
        if state.load(name) is not None:
            deployments.undeploy(name)


def test_the_version_rule_holds_on_both_servers_through_load_unload_set_default_reload_and_redeploy(workflow, server):
    name, store = workflow
    assert serving(name) == ([1], 1)

    # A newer version packaged into the served directory: `mfn load` serves it, and it answers requests without one.
    mfn.package(VERSIONED, store, server=server, version=2)
    assert cli_ok("load", "versioned", "--deployment", name) == {
        "model": "versioned", "action": "loaded", "versions": [1, 2], "default_version": 2}
    assert (served_by(name), served_by(name, 1), served_by(name, protocol="grpc")) == (2, 1, 2)

    # An unloaded version is refused at once, on HTTP and gRPC, naming what exists and the command that loads it.
    assert cli_ok("unload", "versioned", "--version", "1", "--deployment", name)["versions"] == [2]
    for protocol in ("http", "grpc"):
        with pytest.raises(InvokeError) as refused:
            served_by(name, 1, protocol)
        message = str(refused.value)
        assert f"versioned v1 is packaged but not loaded in {name} (it serves v2" in message, message
        assert "`mfn load versioned --version 1` loads it" in message
        assert "attempts" not in message, f"a refused version was retried: {message}"
    invoked = CliRunner().invoke(cli, ["invoke", "versioned", "--data", '{"x": [0]}', "--version", "1",
                                       "--deployment", name])
    assert invoked.exit_code != 0 and "`mfn load versioned --version 1` loads it" in invoked.output, invoked.output
    with pytest.raises(InvokeError, match=r"versioned has no v7 in .*package it into"):
        served_by(name, 7)

    # Versions that do not exist are refused by every command that takes one, with the versions there are.
    assert "cannot unload versioned v3: that version does not exist (it serves v2; packaged, not loaded: v1" in \
        cli_refused("unload", "versioned", "--version", "3", "--deployment", name)
    assert "that version is packaged but not loaded" in cli_refused("set-default", "versioned", "1", "--deployment", name)
    assert "versioned has no version 5" in cli_refused("load", "versioned", "--version", "5", "--deployment", name)
    if server == "torchserve":  # Triton refuses any --version: its instance count is the model's
        assert "it serves v2" in cli_refused("scale", "versioned", "2", "--version", "3", "--deployment", name)

    # set-default works on both servers and holds when a newer version is loaded.
    cli_ok("load", "versioned", "--version", "1", "--deployment", name)
    cli_ok("set-default", "versioned", "1", "--deployment", name)
    assert (serving(name), served_by(name), served_by(name, protocol="grpc")) == (([1, 2], 1), 1, 1)
    if server == "triton":  # other clients that name no version get Triton's own answer, the newest: said so
        described = CliRunner().invoke(cli, ["describe", "versioned", "--deployment", name]).output
        assert "v1, v2 (default v1 for mfn.Client and `mfn invoke`; v2 for other clients that name no version)" in described

    # A server restart (here after it was killed) serves the same versions with the same default.
    deployment = state.get(name)
    os.killpg(wait_for(lambda: read_status(deployment).server_pid, 30, "the server pid"), signal.SIGKILL)
    wait_for(lambda: (status := read_status(deployment)).restarts == 1 and status.state == "running", 60, "a restart")
    assert (serving(name), served_by(name)) == (([1, 2], 1), 1)

    mfn.package(VERSIONED, store, server=server, version=3)
    assert cli_ok("load", "versioned", "--deployment", name)["versions"] == [1, 2, 3]
    assert (served_by(name), served_by(name, 3)) == (1, 3)

    # reload reads the package again, a new version policy included, and keeps the operator's choices (v1, loaded
    # by name, and the default).
    mfn.package(VERSIONED, store, server=server, version=3, version_policy=mfn.VersionPolicy(latest=1))
    assert cli_ok("reload", "versioned", "--deployment", name)["versions"] == [1, 3]
    assert (serving(name), served_by(name)) == (([1, 3], 1), 1)

    # A redeploy serves what the package says; the chosen default applies again once it is served.
    deployments.undeploy(name)
    deployments.deploy(store, name=name, drain_timeout_s=0)
    assert (serving(name), served_by(name)) == (([3], 3), 3)
    cli_ok("load", "versioned", "--version", "1", "--deployment", name)
    assert (serving(name), served_by(name)) == (([1, 3], 1), 1)
    cli_ok("set-default", "versioned", "--newest", "--deployment", name)
    assert (serving(name), served_by(name)) == (([1, 3], 3), 3)

    # Unloading the last served version unloads the model.
    cli_ok("unload", "versioned", "--version", "1", "--deployment", name)
    assert cli_ok("unload", "versioned", "--version", "3", "--deployment", name)["versions"] == []
    assert "versioned" not in state.get(name).models

